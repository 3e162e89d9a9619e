"""The compress stage of a trial: prune, export to TFLite (LiteRT), and measure what it bought.

After training, (1) when `sparsity` > 0 the smallest-magnitude weights of every Conv/Dense kernel
are set to zero and a few epochs of fine-tuning recover accuracy with those zeros held; (2) two
TFLite files are written: a float32 one of the model as trained, and the compressed one of the
pruned model, full-integer int8 (int8 inputs and outputs) or float32 when `quantize` is "none";
(3) sizes and latencies of both are measured, and F1 of the Keras model and of the compressed
file, each by running it.

Design rules:
- A figure is of the file it names: F1 of a .tflite model comes from running that file in the
  LiteRT interpreter, never from the Keras model it was made from; sizes are the files' lengths.
- int8 is TensorFlow's TFLite converter, post-training and full-integer, calibrated on training
  rows. Its integer route covers every layer of our CNN and MLP: Conv2D, Dense,
  BatchNormalization (folded into the layer before it), pooling, activations and softmax. Keras
  3's own `Model.quantize("int8")` covers only Dense, EinsumDense and Embedding, leaving the
  convolutions float, so it is not used.
- The export traces the model with training=False, so the random augmentation layers of
  build_cnn (identity at inference) leave nothing in the file; tests check the float file
  predicts what the Keras model does.
- The interpreter is ai-edge-litert's (LiteRT, tf.lite.Interpreter's successor) when installed,
  else tf.lite.Interpreter with its deprecation warning silenced; both run the converter's files
  alike. It runs on one thread: figures stay comparable across machines, and workers share CPUs.
- Latency is a median in milliseconds after warm-up, of a call whose inputs are already in the
  runtime's format (int8 quantised, or a tensor on the Keras model's device), so it is the
  model's cost, not the conversion's.
- compress() changes the model's float weights only by pruning and fine-tuning; fine-tuning
  leaves it compiled with its own optimizer (see fine_tune).
- The converter needs Keras's TensorFlow backend.
"""

from __future__ import annotations

import gzip
import time
import warnings
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from sweeper import keys
from sweeper.pipeline.evaluate import f1, predict_classes
from sweeper.pipeline.stopwatch import Stopwatch
from sweeper.pipeline.train import StopCheck, TrialInterrupted, build_optimizer, training_input
from sweeper.space.schema import QUANTIZE_CHOICES

# Layers whose kernel is pruned (separable and depthwise convolutions have no `kernel`).
PRUNED_LAYERS = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Conv1D,
                 keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Conv1DTranspose,
                 keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
# Rows per interpreter call when predicting: an invoke costs microseconds, so small batches cost
# nothing and bound the interpreter's activation memory on large inputs.
LITE_BATCH = 64
WARMUP = 3  # calls before timing: the first traces (Keras) or packs weights (XNNPACK)
RUNS = 20
TIMING_BUDGET_S = 0.3  # past it, a latency stops at 3 timed calls: large models stay cheap
# Fine-tuning runs a fresh optimizer of the trained one's kind (no stale moments, no schedule
# decayed to ~0) at a tenth of the rate training started at, constant: pruned networks are
# retrained at lowered rates (Han et al. 2015). Measured on the digits CNN, sparsity 0.5, 2
# epochs, int8 validation F1 after training with Adam 5e-3 / Adam 3e-3 cosine / SGD 0.05 cosine:
# 0.1x 0.962 / 0.902 / 0.912, 1x 0.962 / 0.892 / 0.861; Adam(1e-4) 0.883 where 0.1x gave 0.913.
# At sparsity 0.8 higher rates recover more (after Adam: 1x 0.90, 0.1x 0.79): give more epochs.
FINE_TUNE_RATE = 0.1


@dataclass
class CompressSpec:
    """The space's `compress:` section."""

    quantize: str = "int8"  # "int8" (full-integer, int8 inputs and outputs) or "none" (float32)
    sparsity: float = 0.0  # fraction of each pruned kernel's weights set to zero, 0 <= s < 1
    finetune_epochs: int = 2  # epochs of fine-tuning after pruning (0: none); only when sparsity > 0
    calibration_samples: int = 200  # training rows given to the int8 converter as its representative set


@dataclass
class Compressed:
    attrs: dict  # keyed as in sweeper.keys
    val_f1: float  # of the compressed model on the validation split (== attrs[COMPRESSED_VAL_F1])
    test_pred: np.ndarray  # the compressed model's class predictions on the test split
    float_file: bytes  # the float32 .tflite file of the model as trained
    compressed_file: bytes
    seconds: dict  # prune, fine_tune, convert, measure


def compress(model, data, spec: CompressSpec, *, average: str, batch_size: int, seed: int,
             should_stop=None) -> Compressed:
    """Export `model` (trained) as float and compressed TFLite files and measure both.

    Raises ValueError for an unknown spec.quantize, train.TrialInterrupted when `should_stop()`
    turns true (checked between stages and after each fine-tuning batch)."""
    # measured on the digits CNN (filters 32, 2 conv blocks, dense 64; 2-core CPU, 10 epochs):
    # both conversions 0.17-0.19 s, measuring 0.12-0.17 s, pruning 2 ms, 2 fine-tuning epochs
    # 0.93-1.04 s (compiling and tracing included): 0.3 s a trial, 1.3 s with pruning. Float
    # 97,856 bytes, int8 32,048 (0.33); gzipped 26,164, at sparsity 0.5 19,458. Val F1 0.9516
    # float, 0.9516 int8, 0.9511 int8 at sparsity 0.5. int8 5-7 us a sample, 0.21 ms a batch of
    # 64; the Keras model 0.64 ms and 1.2-1.4 ms (predict_on_batch's own cost dominates).
    if spec.quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"compress.quantize must be one of {', '.join(QUANTIZE_CHOICES)}, "
                         f"not {spec.quantize!r}")
    clock = Stopwatch("prune", "fine_tune", "convert", "measure")
    # Per-batch latency at the training batch size, or at what the validation split holds.
    batch = min(batch_size, len(data.x_val))
    with clock.stage("convert"):
        float_file = _to_tflite(model, data.input_shape)
    with clock.stage("measure"):
        attrs = _float_figures(model, data, float_file, average, batch)
    if spec.sparsity > 0:
        _check(should_stop)
        with clock.stage("prune"):
            masks = prune_weights(model, spec.sparsity)
        with clock.stage("fine_tune"):
            fine_tune(model, masks, data, epochs=spec.finetune_epochs, batch_size=batch_size,
                      seed=seed, should_stop=should_stop)
    _check(should_stop)
    with clock.stage("convert"):
        compressed_file = _compressed_file(model, data, spec, seed, float_file)
    with clock.stage("measure"):
        lite = LiteModel(compressed_file)
        val_f1 = f1(data.y_val, lite.predict_classes(data.x_val), average)
        test_pred = lite.predict_classes(data.x_test)
        attrs.update(_compressed_figures(model, lite, compressed_file, data, batch))
        attrs.update({keys.COMPRESSED_VAL_F1: val_f1,
                      keys.COMPRESSED_TEST_F1: f1(data.y_test, test_pred, average)})
    return Compressed(attrs=attrs, val_f1=val_f1, test_pred=test_pred, float_file=float_file,
                      compressed_file=compressed_file, seconds=clock.seconds)


def _float_figures(model, data, float_file: bytes, average: str, batch: int) -> dict:
    """The float model's size, validation F1 and latency, before anything is compressed."""
    return {
        keys.PARAMS: weight_counts(model)[0],
        keys.FLOAT_BYTES: len(float_file),
        keys.FLOAT_VAL_F1: f1(data.y_val, predict_classes(model, data.x_val), average),
        keys.FLOAT_LATENCY_MS: _rounded(_keras_latency_ms(model, data.x_val, 1)),
        keys.FLOAT_LATENCY_BATCH_MS: _rounded(_keras_latency_ms(model, data.x_val, batch)),
    }


def _compressed_file(model, data, spec: CompressSpec, seed: int, float_file: bytes) -> bytes:
    if spec.quantize == "int8":
        return _to_tflite(model, data.input_shape, _calibration_rows(data, spec, seed))
    if spec.sparsity > 0:
        return _to_tflite(model, data.input_shape)
    return float_file  # nothing to compress: the float file is the compressed one


def _compressed_figures(model, lite, compressed_file: bytes, data, batch: int) -> dict:
    """The compressed model's weights kept, sparsity, file sizes and latency."""
    kernels = [kernel.numpy() for kernel in _kernels(model)]
    kernel_weights = sum(k.size for k in kernels)
    zeros = kernel_weights - sum(int(np.count_nonzero(k)) for k in kernels)
    return {
        keys.NONZERO_PARAMS: weight_counts(model)[1],
        keys.SPARSITY: round(zeros / kernel_weights, 6) if kernel_weights else 0.0,
        keys.COMPRESSED_BYTES: len(compressed_file),
        # Level 9 and no timestamp: the same file always gzips to the same size.
        keys.COMPRESSED_GZIP_BYTES: len(gzip.compress(compressed_file, 9, mtime=0)),
        keys.LATENCY_MS: _rounded(lite.latency_ms(data.x_val, 1)),
        keys.LATENCY_BATCH_MS: _rounded(lite.latency_ms(data.x_val, batch)),
    }


def _check(should_stop) -> None:
    if should_stop is not None and should_stop():
        raise TrialInterrupted()


# -- pruning -------------------------------------------------------------------------------------


def prune_weights(model, sparsity: float) -> list:
    """Zero the round(sparsity * n) smallest-|w| of the n weights of every Conv/Dense kernel,
    each layer on its own (biases and batch-norm weights are left alone).

    Returns (kernel variable, mask) pairs, the mask a bool array of the kernel's shape, True
    where the weight is kept."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), not {sparsity}")
    masks = []
    for kernel in _kernels(model):
        weights = kernel.numpy()
        flat = np.abs(weights).ravel()
        mask = np.ones(flat.size, dtype=bool)
        k = round(sparsity * flat.size)
        if k:  # argpartition: linear time, exactly k indices even among equal magnitudes
            mask[np.argpartition(flat, k - 1)[:k]] = False
        mask = mask.reshape(weights.shape)
        kernel.assign(np.where(mask, weights, 0).astype(weights.dtype))
        masks.append((kernel, mask))
    return masks


def fine_tune(model, masks, data, *, epochs: int, batch_size: int, seed: int,
              should_stop=None) -> None:
    """Train `epochs` more epochs holding every masked weight at exactly 0.

    Keras 3 optimizers apply each variable's `constraint` after every update, inside the
    compiled train step, so each pruned kernel gets a constraint that puts its zeros back, and
    the model is compiled again (with a fresh optimizer of its own kind at FINE_TUNE_RATE times
    the rate training started at) so that the train step is traced with it. The constraints are
    removed afterwards; the model stays compiled with that optimizer."""
    if epochs <= 0 or not masks:
        return
    originals = [kernel.constraint for kernel, _ in masks]
    for kernel, mask in masks:
        kernel.constraint = _KeepZeros(mask, kernel.constraint)
    model.compile(optimizer=_fine_tune_optimizer(getattr(model, "optimizer", None)),
                  loss=model.loss or "sparse_categorical_crossentropy")
    callbacks = [] if should_stop is None else [StopCheck(should_stop)]
    build_optimizer(model)
    try:
        model.fit(**training_input(data, batch_size, seed, epochs), epochs=epochs, callbacks=callbacks,
                  verbose=0)
    finally:
        for (kernel, _), original in zip(masks, originals):
            kernel.constraint = original
        model.make_train_function(force=True)  # a later fit traces without the masks


class _KeepZeros(keras.constraints.Constraint):
    """Sets the pruned weights back to 0 (after the kernel's own constraint, if it has one)."""

    def __init__(self, mask: np.ndarray, inner=None):
        self.mask = keras.ops.convert_to_tensor(mask)
        self.inner = inner

    def __call__(self, w):
        w = w if self.inner is None else self.inner(w)
        return keras.ops.where(self.mask, w, keras.ops.zeros_like(w))


def _fine_tune_optimizer(trained) -> keras.optimizers.Optimizer:
    """An optimizer like `trained` (Adam when the model has none) at a constant FINE_TUNE_RATE
    times the rate training started at."""
    if trained is None:
        return keras.optimizers.Adam(1e-4)
    # The schedule itself is only here: `learning_rate` is its value at the last step.
    rate = trained._learning_rate
    start = rate(0) if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule) else rate.value
    config = trained.get_config()
    config["learning_rate"] = FINE_TUNE_RATE * float(keras.ops.convert_to_tensor(start))
    return type(trained).from_config(config)


def weight_counts(model) -> tuple[int, int]:
    """(weights, non-zero weights) of the model: every variable in `model.weights`, trainable
    and not (batch-norm statistics included: folded into the exported layers, they still are
    numbers of the model); optimizer state and random layers' seeds are not model weights."""
    values = [weight.numpy() for weight in model.weights]
    return sum(v.size for v in values), sum(int(np.count_nonzero(v)) for v in values)


def _kernels(model) -> list:
    """The kernel variables of the model's Conv/Dense layers, nested models' included."""
    found: dict[int, object] = {}
    stack = list(model.layers)
    while stack:
        layer = stack.pop(0)
        stack.extend(getattr(layer, "layers", []))
        if isinstance(layer, PRUNED_LAYERS):
            kernel = layer.kernel
            # A LoRA or quantised layer's kernel is computed, not a variable: left alone.
            if isinstance(kernel, keras.Variable):
                found.setdefault(id(kernel), kernel)  # a shared layer once
    return list(found.values())


# -- export --------------------------------------------------------------------------------------


def _to_tflite(model, input_shape: tuple, calibration: np.ndarray | None = None) -> bytes:
    """The model as a .tflite file: float32, or full-integer int8 calibrated on `calibration`.

    The inference call is traced and its variables frozen into constants. Not through a
    SavedModel (from_keras_model, or from_concrete_functions given the model): that costs 5x
    (measured on the digits CNN: 0.1 s vs 0.35-0.6 s a file) and, given the model, leaves its
    variables unfrozen (READ_VARIABLE nodes that fail calibration). Given the tf.function itself
    as its `trackable_obj`, the converter takes the frozen route without a deprecation notice."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, *input_shape), tf.float32)
    function = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], function)
    if calibration is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([row[None]] for row in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        # "Statistics for quantized inputs were expected": the representative set gives them.
        warnings.simplefilter("ignore", UserWarning)
        return converter.convert()


def _calibration_rows(data, spec: CompressSpec, seed: int) -> np.ndarray:
    """A seeded sample of training rows, read in order (the split may be memory-mapped)."""
    count = min(spec.calibration_samples, len(data.x_train))
    rows = np.sort(np.random.default_rng(seed).choice(len(data.x_train), count, replace=False))
    return np.asarray(data.x_train[rows], dtype=np.float32)


# -- running the files ---------------------------------------------------------------------------


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter


class LiteModel:
    """A .tflite model in the LiteRT interpreter, one interpreter per batch size (resizing and
    allocating costs more than a small model's call)."""

    def __init__(self, content: bytes, threads: int = 1):
        self.content, self.threads = content, threads
        self._interpreters: dict[int, Any] = {}
        first = self._interpreter(1)
        self.input = first.get_input_details()[0]
        self.output = first.get_output_details()[0]

    def _interpreter(self, batch: int):
        interpreter = self._interpreters.get(batch)
        if interpreter is None:
            with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice
                warnings.simplefilter("ignore")
                interpreter = _interpreter_class()(model_content=self.content,
                                                   num_threads=self.threads)
            detail = interpreter.get_input_details()[0]
            if batch != detail["shape"][0]:
                interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
            interpreter.allocate_tensors()
            self._interpreters[batch] = interpreter
        return interpreter

    def _as_input(self, x: np.ndarray) -> np.ndarray:
        """x in the model's input type: integer inputs quantised with its scale and zero point."""
        dtype = np.dtype(self.input["dtype"])
        if dtype.kind not in "iu":
            return np.ascontiguousarray(x, dtype=dtype)
        scale, zero_point = self.input["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(np.asarray(x, dtype=np.float32) / scale + zero_point),
                       info.min, info.max).astype(dtype)

    def _call(self, rows: np.ndarray) -> np.ndarray:
        interpreter = self._interpreter(len(rows))
        interpreter.set_tensor(self.input["index"], rows)
        interpreter.invoke()
        return interpreter.get_tensor(self.output["index"])

    def predict_classes(self, x: np.ndarray) -> np.ndarray:
        """Class indices for x. The argmax of the raw (quantised) outputs: dequantising is
        increasing (scale > 0), so it picks the same class."""
        if len(x) == 0:
            return np.zeros(0, dtype=np.int64)
        batch = min(LITE_BATCH, len(x))
        parts = []
        for start in range(0, len(x), batch):
            rows = self._as_input(x[start:start + batch])
            kept = len(rows)
            if kept < batch:  # padded: the last chunk uses the same interpreter
                rows = np.concatenate([rows, np.zeros((batch - kept, *rows.shape[1:]), rows.dtype)])
            parts.append(self._call(rows)[:kept].argmax(axis=-1))
        return np.concatenate(parts)

    def latency_ms(self, x: np.ndarray, batch: int, runs: int = RUNS) -> float:
        """Median milliseconds of one call on the first `batch` rows of x (fewer if x is
        shorter), after warm-up."""
        rows = self._as_input(x[:batch])
        return _median_ms(lambda: self._call(rows), runs)


def _keras_latency_ms(model, x: np.ndarray, batch: int) -> float:
    rows = keras.ops.convert_to_tensor(x[:batch])  # on the model's device before timing
    return _median_ms(lambda: model.predict_on_batch(rows), RUNS)


def _rounded(ms: float) -> float:
    return float(f"{ms:.4g}")  # 4 significant digits: an int8 call can take 3 microseconds


def _median_ms(call, runs: int) -> float:
    for _ in range(WARMUP):
        call()
    times: list[float] = []
    deadline = time.perf_counter() + TIMING_BUDGET_S
    while len(times) < runs and (len(times) < 3 or time.perf_counter() < deadline):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1e3
