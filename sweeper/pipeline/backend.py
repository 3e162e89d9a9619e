"""The Keras backend of a worker process: set up before Keras is first imported, and asked which
GPUs it can really use (recorded on every trial, and checked by `make gpu-check`)."""

from __future__ import annotations

import os

GPU_MEMORY_ENV = "SWEEPER_GPU_MEMORY_MB"  # set when workers share a GPU: this one's share


def configure_backend(threads: int | None, environ=os.environ) -> None:
    """Call before the first Keras import: quiet logs, size thread pools, and either grow GPU
    memory as needed or, where workers share the GPU, cap it at this worker's share (TensorFlow:
    a logical device with a memory limit; JAX reads XLA_PYTHON_CLIENT_MEM_FRACTION itself)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX: grow like TF does
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    share = environ.get(GPU_MEMORY_ENV)
    for gpu in tf.config.list_physical_devices("GPU"):
        if share:
            tf.config.set_logical_device_configuration(
                gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=int(share))])
        else:  # take GPU memory as needed instead of all of it at start
            tf.config.experimental.set_memory_growth(gpu, True)


def visible_accelerators() -> list[str]:
    """The GPUs the Keras backend of this process can use (empty: it trains on the CPU)."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return [d.name for d in tf.config.list_logical_devices("GPU")]
        if backend == "jax":
            import jax

            return [str(d) for d in jax.devices() if d.platform == "gpu"]
        if backend == "torch":
            import torch

            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except Exception:  # a broken driver must not stop the worker: it reports no GPU
        pass
    return []
