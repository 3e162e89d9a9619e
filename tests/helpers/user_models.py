"""User code that test spaces name by import path."""

import keras
import numpy as np


def nan_model(hp, input_shape, num_classes):
    """A model whose outputs (and so loss) are NaN from the first batch."""
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(num_classes)(x)
    x = keras.layers.Lambda(lambda t: t * float("nan"))(x)
    outputs = keras.layers.Activation("softmax")(x)
    return keras.Model(inputs, outputs)


def small_dense(hp, input_shape, num_classes):
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(hp.get("width", 16), activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def blobs():
    """Two well-separated Gaussian blobs: a dataset given as a function."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 1, (100, 4)), rng.normal(2, 1, (100, 4))])
    y = np.array([0] * 100 + [1] * 100)
    return x, y


def out_of_memory_model(hp, input_shape, num_classes):
    """Fails with the error TensorFlow raises when a GPU runs out of memory (no GPU here to fill)."""
    import tensorflow as tf

    raise tf.errors.ResourceExhaustedError(
        None, None, "OOM when allocating tensor with shape[4096,4096,64] and type float on "
        "/job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc")


def crashing_model(hp, input_shape, num_classes):
    """Kills its own process, as a segfaulting library or the kernel's OOM killer would."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def flaky_dense(hp, input_shape, num_classes):
    """A small dense model that, by its `fault` draw, fails at build time (a bug in user code)
    or yields NaN from the first batch (a diverging run); otherwise trains normally."""
    if hp["fault"] < 0.08:
        raise RuntimeError("injected failure")
    if hp["fault"] < 0.16:
        return nan_model(hp, input_shape, num_classes)
    return small_dense(hp, input_shape, num_classes)
