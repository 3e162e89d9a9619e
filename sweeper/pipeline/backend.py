"""The Keras backend of a worker process: set up before Keras is first imported, and asked which
GPUs it can really use (recorded on every trial, and checked by `make gpu-check`).

TensorFlow, JAX and PyTorch each get the same three things, in their own terms: CPU threads (the
worker's share of the cores), GPU memory taken as needed rather than all at start, and, where
several workers share a GPU, a cap at this worker's share of its memory:
- TensorFlow: intra/inter-op thread pools; memory growth, or a logical device with a memory limit.
- JAX: no preallocation; the share as XLA_PYTHON_CLIENT_MEM_FRACTION (a cap when not
  preallocating). XLA's CPU thread pool has no size setting: a JAX worker on the CPU uses every
  core. Compiled programs persist under the dataset cache (`jax/`), so a shape compiled once is
  not compiled again by the next trial or worker (weight initialisers: ~0.5 s per new shape).
- PyTorch: torch.set_num_threads; torch.cuda.set_per_process_memory_fraction for the share.
"""

from __future__ import annotations

import os

from sweeper.gpus import GPU_FRACTION_ENV, GPU_MEMORY_ENV
from sweeper.keras_backend import backend_name

JAX_FRACTION_ENVS = ("XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_CLIENT_MEM_FRACTION")


def backend_environment(backend: str, threads: int | None, environ, jax_cache: str) -> dict:
    """The variables to set (None: to remove) before the backend is imported. A user's own
    setting is kept, except the memory share of a packed worker, which is the sweep's."""
    wanted = {"TF_CPP_MIN_LOG_LEVEL": "2", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    if threads:
        wanted["OMP_NUM_THREADS"] = str(threads)
    if backend == "jax":
        wanted.update({"JAX_COMPILATION_CACHE_DIR": jax_cache,
                       "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                       "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"})
    changes: dict = {k: v for k, v in wanted.items() if k not in environ}
    fraction = environ.get(GPU_FRACTION_ENV)
    if backend == "jax" and fraction:
        # jaxlib refuses both names at once; the older one is read by every version so far.
        changes.update({JAX_FRACTION_ENVS[0]: fraction, JAX_FRACTION_ENVS[1]: None})
    return changes


def configure_backend(threads: int | None, environ=os.environ) -> None:
    """Call before the first Keras import: quiet logs, size thread pools, and either grow GPU
    memory as needed or, where workers share the GPU, cap it at this worker's share."""
    from sweeper.pipeline.data import cache_dir

    backend = backend_name(environ)[0]
    jax_cache = cache_dir().resolve() / "jax"
    for name, value in backend_environment(backend, threads, environ, str(jax_cache)).items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    if backend == "jax":
        from sweeper.paths import private_folder

        private_folder(jax_cache)
    import keras  # noqa: F401  (reads KERAS_BACKEND and the variables above)

    if backend == "tensorflow":
        _configure_tensorflow(threads, environ.get(GPU_MEMORY_ENV))
    elif backend == "torch":
        _configure_torch(threads, environ.get(GPU_FRACTION_ENV))


def _configure_tensorflow(threads: int | None, share_mb: str | None) -> None:
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    for gpu in tf.config.list_physical_devices("GPU"):
        if share_mb:
            tf.config.set_logical_device_configuration(
                gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=int(share_mb))])
        else:  # take GPU memory as needed instead of all of it at start
            tf.config.experimental.set_memory_growth(gpu, True)


def _configure_torch(threads: int | None, fraction: str | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    if fraction and torch.cuda.is_available():  # PyTorch's caching allocator grows as needed
        for index in range(torch.cuda.device_count()):
            torch.cuda.set_per_process_memory_fraction(float(fraction), index)


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


def backend_version() -> str:
    """'jax 0.10.2', as recorded on each trial."""
    import keras

    backend = keras.backend.backend()
    try:
        from importlib.metadata import version

        return f"{backend} {version(backend)}"
    except Exception:
        return backend
