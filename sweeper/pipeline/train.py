"""One `model.fit` per trial; after each epoch, validation F1 goes to Optuna, which may prune.

A NaN/inf loss stops training with the reason kept; it never propagates as an exception.
"""

from __future__ import annotations

import math
import time

import keras
import numpy as np
import optuna

from sweeper.pipeline import multi_objective
from sweeper.pipeline.checkpoint import Checkpoint, Saved, model_arrays
from sweeper.pipeline.evaluate import f1, predict_classes
from sweeper.space.schema import CHECKPOINT_EVERY_S


class TrialInterrupted(KeyboardInterrupt):
    """The worker was asked to stop; the trial is failed (and queued again by the worker)."""


# A stop request finishes an epoch this short (the last one took at most this) instead of
# cutting it: the retry redoes nothing, and the state at each epoch's end need not be kept in
# memory for a stop. Well inside the 8 s a sweep's stop allows (sweeper.sweep.pool).
STOP_WAIT_S = 2.0


class StopCheck(keras.callbacks.Callback):
    """Checks after every batch whether the worker was asked to stop, so a signal ends a trial
    from ordinary Python code (not inside whatever the signal interrupted): within a batch, or,
    given the trial's `reporter` and when its last epoch took at most STOP_WAIT_S, at the end of
    the epoch in progress (after its F1 is reported, so its checkpoint holds it). Put it after
    the trial's other callbacks: its epoch end comes last."""

    def __init__(self, should_stop, reporter: EpochReporter | None = None):
        super().__init__()
        self.should_stop, self.reporter = should_stop, reporter
        self.finishing_epoch = False  # asked to stop; the epoch in progress goes on to its end

    def on_train_batch_end(self, batch, logs=None):
        if self.finishing_epoch or not self.should_stop():
            return
        last = None if self.reporter is None else self.reporter.last_epoch_s
        if last is not None and last <= STOP_WAIT_S:
            self.finishing_epoch = True
            return
        raise TrialInterrupted()

    def on_epoch_end(self, epoch, logs=None):
        # A trial pruned (or whose loss blew up) at this epoch ends as such, and the worker leaves.
        if self.finishing_epoch and not self.model.stop_training:
            raise TrialInterrupted()

    on_predict_batch_end = on_test_batch_end = on_train_batch_end


class EpochReporter(keras.callbacks.Callback):
    """Reports validation F1 at step = epochs done; stops fit when pruned or the loss blows up."""

    def __init__(self, trial, x_val: np.ndarray, y_val: np.ndarray, average: str,
                 resumed: Saved | None = None, after_first_step=None):
        super().__init__()
        self.after_first_step = after_first_step  # called once, when the first step has run
        # Converted once, not at every epoch's prediction.
        self.trial, self.x_val = trial, keras.ops.convert_to_tensor(x_val)
        self.y_val, self.average = y_val, average
        # Asking a pruner that never prunes would still read the trial back from the store.
        self.may_prune = not isinstance(trial.study.pruner, optuna.pruners.NopPruner)
        # Those of the epochs a checkpoint holds, then this run's.
        self.losses: list[float] = list(resumed.losses) if resumed else []
        self.scores: list[float] = list(resumed.scores) if resumed else []
        self.first_epoch = resumed.epoch if resumed else 0
        self.resumed_seconds = resumed.seconds if resumed else 0.0
        self.stop_reason: str | None = None  # set when training was cut short
        self.saver: Checkpointing | None = None  # set by fit when the trial checkpoints
        self.pruned = False
        # Seconds spent training epochs, computing validation F1, and reporting it to the store;
        # first_epoch (one of the epochs) includes tracing and compiling the new model's step.
        self.seconds = {"epochs": 0.0, "first_epoch": 0.0, "f1": 0.0, "report": 0.0}
        self._epoch_started = 0.0
        self.last_epoch_s: float | None = None  # how long this run's last epoch took
        # The epochs done when the model stands at an epoch's end, its F1 reported and the
        # pruner's answer no (the state a checkpoint may hold); None while an epoch trains.
        self.at_epoch_end: int | None = None
        # Wall-clock times (time.time()) of fit's call, its first batch, and the end of the last
        # epoch trained: where a slot waits between two trials (benchmarks, row 4).
        self.timeline: dict[str, float] = {}
        self.last_f1_s = 0.0  # the last epoch's validation prediction and F1, after training

    def on_train_batch_begin(self, batch, logs=None):
        if "first_batch" not in self.timeline:
            self.timeline["first_batch"] = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if self.after_first_step is not None:
            call, self.after_first_step = self.after_first_step, None
            call()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()
        self.at_epoch_end = None

    def on_epoch_end(self, epoch, logs=None):
        started = time.perf_counter()
        self.timeline["trained"] = time.time()
        self.last_epoch_s = started - self._epoch_started
        self.seconds["epochs"] += self.last_epoch_s
        if epoch == self.first_epoch:
            self.seconds["first_epoch"] = self.last_epoch_s
        loss = float((logs or {}).get("loss", float("nan")))
        self.losses.append(loss)
        if not math.isfinite(loss):
            self.stop_reason = f"loss became {loss} at epoch {epoch + 1}"
            self.model.stop_training = True
            return
        score = f1(self.y_val, predict_classes(self.model, self.x_val), self.average)
        self.scores.append(score)
        reported = time.perf_counter()
        self.last_f1_s = reported - started
        self.seconds["f1"] += self.last_f1_s
        multi_objective.report(self.trial, score, epoch + 1)
        # A trial that has trained all its epochs is not pruned: stopping it saves nothing.
        last = epoch + 1 >= self.params.get("epochs", float("inf"))
        should_prune = self.may_prune and not last and multi_objective.should_prune(self.trial)
        self.seconds["report"] += time.perf_counter() - reported
        if should_prune:
            self.pruned = True
            self.stop_reason = (f"pruned after epoch {epoch + 1}: validation F1 {score:.4f} "
                                "fell behind other trials at this epoch")
            self.model.stop_training = True
            return
        self.at_epoch_end = epoch + 1


class Checkpointing(keras.callbacks.Callback):
    """Writes the trial's checkpoint at an epoch's end every `every_s` seconds of training at most,
    and at least WRITE_SHARE times its own writing time apart (so writing costs at most 2% of
    training), and when training is cut short (`flush_cut`).

    A cut writes the state of the last epoch's end. Where the model stands there (a stop that
    finished its epoch, the store gone while reporting), that is the state now. Mid-epoch it is
    a copy kept at that epoch's end, and one is kept only after an epoch longer than STOP_WAIT_S:
    after a shorter one, a stop finishes the next epoch (StopCheck), and copying every variable
    to host memory at every epoch (~5 ms for the digits CNN) would cost more than the writes."""

    WRITE_SHARE = 50

    def __init__(self, checkpoint: Checkpoint, reporter: EpochReporter, trial_number: int,
                 every_s: float, say=print):
        super().__init__()
        self.checkpoint, self.reporter, self.trial_number = checkpoint, reporter, trial_number
        self.every_s, self.say = every_s, say
        self.last: tuple[list, Saved] | None = None  # the state kept at an epoch's end
        self.written_epoch = reporter.first_epoch
        self.next_write = time.monotonic() + every_s
        self.seconds = 0.0  # spent keeping and writing
        self.failed = False  # a write failed: said once, not at every try
        self.seconds_before = reporter.resumed_seconds  # of training, by the runs before this

    def on_epoch_end(self, epoch, logs=None):
        if self.reporter.at_epoch_end is None:
            return  # pruned, or the loss blew up: nothing to resume
        due = time.monotonic() >= self.next_write
        if due or (self.reporter.last_epoch_s or 0.0) > STOP_WAIT_S:
            self._keep(self.reporter.at_epoch_end)
        if due:
            self.flush()

    def _keep(self, epoch: int) -> None:
        """Keeps a copy of the state at the end of `epoch` (epochs done), where the model
        stands."""
        started = time.perf_counter()
        r = self.reporter
        self.last = (model_arrays(self.model),
                     Saved(self.trial_number, epoch, list(r.scores), list(r.losses),
                           self.seconds_before + r.seconds["epochs"]))
        self.seconds += time.perf_counter() - started

    def keep_at_epoch_end(self) -> None:
        """Keeps the state now, where the model stands at an epoch's end and it is not kept."""
        at = self.reporter.at_epoch_end
        if at is not None and (self.last is None or self.last[1].epoch < at):
            self._keep(at)

    def flush_cut(self) -> None:
        """Writes the state of the last epoch's end, training being cut short now."""
        self.keep_at_epoch_end()
        self.flush()

    def flush(self) -> None:
        """Writes the last epoch's state, unless it is written already."""
        if self.last is None or self.last[1].epoch == self.written_epoch:
            return
        started = time.perf_counter()
        try:
            self.checkpoint.write(*self.last)
            self.written_epoch = self.last[1].epoch
        except OSError as e:  # a full disk: training goes on, and tries again at the cadence
            if not self.failed:
                self.say(f"checkpoint of trial {self.trial_number} not written in "
                         f"{self.checkpoint.folder} ({e.strerror or e}); training goes on "
                         "without it")
            self.failed = True
        took = time.perf_counter() - started
        self.seconds += took
        self.next_write = time.monotonic() + max(self.every_s, self.WRITE_SHARE * took)


def build_optimizer(model) -> None:
    """Creates the optimizer's variables before fit. On TensorFlow, Keras otherwise creates them
    inside the first step's trace, and tf.function then traces the train step twice (once
    creating variables, once using them): measured on the digits CNN, the first epoch took 3.1 s
    against 1.6 s built. A model not built yet (a subclassed one) is left to fit."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built and model.built \
            and model.trainable_variables:
        optimizer.build(model.trainable_variables)


# Above this size the training split is streamed batch by batch from the memory-mapped cache:
# given whole arrays, Keras copies them into tensors, one private copy per worker.
STREAM_BYTES = 64 * 2**20


def epoch_order(seed: int, epoch: int, rows: int) -> np.ndarray:
    """The order of the training rows in `epoch`: a function of the seed and the epoch alone, so a
    trial resumed at an epoch sees the batches it would have seen uncut."""
    return np.random.default_rng([seed, epoch]).permutation(rows)


class EpochBatches(keras.utils.PyDataset):
    """The batches of epochs first_epoch..epochs-1 as one sequence, read in order: batch i is
    batch i % steps of epoch first_epoch + i // steps (in epoch_order). Only the batch is copied
    from the (memory-mapped) arrays.

    With `full`, every batch has batch_size rows: the last one is topped up with rows from the
    start of its epoch's order. A backend that compiles the train step for each batch shape (JAX)
    then compiles it once, not twice, per trial."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epochs: int,
                 first_epoch: int = 0, full: bool = False):
        super().__init__()
        self.x, self.y, self.batch_size, self.full = x, y, batch_size, full
        self.seed, self.first_epoch, self.epochs = seed, first_epoch, epochs
        self.steps = -(-len(x) // batch_size)
        self._order: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.steps * max(self.epochs - self.first_epoch, 0)

    def __getitem__(self, index: int):
        epoch, step = divmod(index, self.steps)
        epoch += self.first_epoch
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_order(self.seed, epoch, len(self.x)))
        order = self._order[1]
        rows = order[step * self.batch_size:(step + 1) * self.batch_size]
        if self.full and len(rows) < self.batch_size:
            rows = np.concatenate([rows, order[:self.batch_size - len(rows)]])
        rows = np.sort(rows)  # sorted, a batch reads the mapped file front to back
        return self.x[rows], self.y[rows]


def training_input(data, batch_size: int, seed: int, epochs: int, first_epoch: int = 0) -> dict:
    """The arguments for model.fit(..., epochs=epochs, initial_epoch=first_epoch): one pass over
    every epoch's batches in order (fit neither shuffles nor starts over at an epoch), each
    epoch's order a function of the seed and the epoch alone. On TensorFlow a tf.data pipeline
    (measured on the digits CNN: fit's set-up 36 -> 16 ms, epochs ~10% faster than given the
    arrays), or batches streamed from the arrays when large (given whole arrays, Keras copies
    them into tensors, one private copy per worker). On other backends: full batches, streamed
    (JAX compiles the train step once per batch shape: a short last batch cost a second compile,
    3.4 s of a digits CNN trial on the CPU)."""
    steps = -(-len(data.x_train) // batch_size)
    fixed = {"steps_per_epoch": steps, "shuffle": False}
    if keras.backend.backend() != "tensorflow" or data.x_train.nbytes > STREAM_BYTES:
        full = keras.backend.backend() != "tensorflow" and len(data.x_train) >= batch_size
        return {"x": EpochBatches(data.x_train, data.y_train, batch_size, seed, epochs,
                                  first_epoch, full), **fixed}
    return {"x": _tf_epochs(data, batch_size, seed, epochs, first_epoch), **fixed}


def _tf_epochs(data, batch_size: int, seed: int, epochs: int, first_epoch: int):
    """EpochBatches as a tf.data pipeline, each epoch's order shuffled statelessly from
    (seed, epoch)."""
    import tensorflow as tf

    rows = len(data.x_train)
    x, y = tf.constant(data.x_train), tf.constant(data.y_train)

    def epoch_batches(epoch):
        key = tf.stack([tf.constant(seed, tf.int64), epoch])
        order = tf.random.experimental.stateless_shuffle(tf.range(rows), seed=key)
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    # No autotuning: nothing here is tunable (the prefetch is fixed), and an autotuned pipeline
    # made fit's end wait for its tuning thread: ~2 s after the last epoch in about half the
    # trials of two workers sharing two cores, every one of them 8 ms once it was off.
    options = tf.data.Options()
    options.autotune.enabled = False
    return (tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch_batches)
            .map(lambda batch: (tf.gather(x, batch), tf.gather(y, batch))).prefetch(2)
            .with_options(options))


def fit(model, data, trial, batch_size: int, max_epochs: int, average: str,
        should_stop=None, seed: int = 0, checkpoint: Checkpoint | None = None,
        resumed: Saved | None = None,
        checkpoint_every_s: float = CHECKPOINT_EVERY_S, after_first_step=None) -> EpochReporter:
    """Trains from epoch 1, or from where `resumed` (read from `checkpoint`) stood: its epochs'
    validation F1 is reported again, so pruners judge the trial as if it had never been cut.
    `after_first_step` is called once the first training step has run."""
    reporter = EpochReporter(trial, data.x_val, data.y_val, average, resumed, after_first_step)
    for step, score in enumerate(reporter.scores, 1):
        multi_objective.report(trial, score, step)
    callbacks: list = [reporter]
    saver = None
    if checkpoint is not None:
        saver = reporter.saver = Checkpointing(checkpoint, reporter, trial.number,
                                               checkpoint_every_s)
        callbacks.append(saver)
    if should_stop is not None:
        callbacks.append(StopCheck(should_stop, reporter))
    first = reporter.first_epoch
    if first >= max_epochs:  # cut after its last epoch (in the compress stage): nothing to train
        return reporter
    reporter.timeline["fit"] = time.time()
    build_optimizer(model)
    try:
        model.fit(**training_input(data, batch_size, seed, max_epochs, first),
                  epochs=max_epochs, initial_epoch=first, callbacks=callbacks, verbose=0)
    except BaseException:
        # A stop request, or the store gone: the retry goes on from the last epoch done. (A
        # trial that failed of itself runs no retry; its checkpoint is removed.)
        if saver is not None:
            saver.flush_cut()
        raise
    if saver is not None:
        reporter.seconds["checkpoint"] = saver.seconds
    return reporter
