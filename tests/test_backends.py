"""Which Keras backend workers will use, read as Keras reads it, and refused in one line where it
cannot train the space; what each backend is told before it is imported. No backend is imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sweeper.gpus import GPU_FRACTION_ENV
from sweeper.keras_backend import BackendError, backend_name, require_backend
from sweeper.pipeline.backend import backend_environment
from sweeper.space import load_space


def test_the_backend_is_named_as_keras_names_it(tmp_path):
    home = {"KERAS_HOME": str(tmp_path)}
    assert backend_name(home) == ("tensorflow", "Keras's default")
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax", "floatx": "float32"}))
    assert backend_name(home) == ("jax", str(tmp_path / "keras.json"))
    assert backend_name({**home, "KERAS_BACKEND": "torch"}) == ("torch", "KERAS_BACKEND")
    (tmp_path / "keras.json").write_text("{not json")  # Keras ignores a broken file too
    assert backend_name(home)[0] == "tensorflow"


@pytest.mark.parametrize("named", ["jax", "tensorflow", "torch"])
def test_the_name_agrees_with_keras_itself(tmp_path, named):
    """The same environment, asked of Keras in a child process (where the backend is installed)."""
    from sweeper.keras_backend import installed

    if not installed(named):
        pytest.skip(f"{named} is not installed here: Keras cannot be started with it")
    (tmp_path / "keras.json").write_text(json.dumps({"backend": named}))
    env = {"KERAS_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", "import keras; print(keras.backend.backend())"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.stdout.split()[-1] == backend_name(env)[0] == named


def test_a_backend_that_cannot_train_here_is_one_line_naming_the_fix(monkeypatch):
    from sweeper import keras_backend

    space, compress = load_space("cnn_lr"), load_space("cnn_compress")
    with pytest.raises(BackendError, match=r"'numpy' \(from KERAS_BACKEND\) cannot train.*"
                                           "tensorflow, jax or torch"):
        require_backend(space, {"KERAS_BACKEND": "numpy"})
    monkeypatch.setattr(keras_backend, "installed", lambda name: name == "jax")
    with pytest.raises(BackendError) as missing:
        require_backend(space, {"KERAS_BACKEND": "tensorflow"})
    assert "tensorflow is not installed" in str(missing.value)
    assert "set KERAS_BACKEND=jax (installed here)" in str(missing.value)
    with pytest.raises(BackendError) as needs_tf:
        require_backend(compress, {"KERAS_BACKEND": "jax"})
    message = str(needs_tf.value)
    assert "cnn_compress.yaml" in message and "compress section needs TensorFlow" in message
    assert "KERAS_BACKEND=tensorflow" in message and "\n" not in message
    assert require_backend(space, {"KERAS_BACKEND": "jax"}) == "jax"
    monkeypatch.setattr(keras_backend, "installed", lambda name: False)
    with pytest.raises(BackendError, match="install one: pip install torch"):
        require_backend(space, {"KERAS_BACKEND": "torch"})


def test_each_backend_is_told_its_threads_memory_share_and_cache():
    shared = {GPU_FRACTION_ENV: "0.225"}
    jax = backend_environment("jax", 2, {**shared, "XLA_CLIENT_MEM_FRACTION": "0.9"}, "/c/jax")
    assert jax["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.225"
    assert jax["XLA_CLIENT_MEM_FRACTION"] is None  # jaxlib refuses both names set at once
    assert jax["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" and jax["OMP_NUM_THREADS"] == "2"
    assert jax["JAX_COMPILATION_CACHE_DIR"] == "/c/jax"
    # A user's own cache and thread settings are kept; a worker alone on its GPU gets no cap.
    own = backend_environment("jax", 2, {"JAX_COMPILATION_CACHE_DIR": "/mine",
                                         "OMP_NUM_THREADS": "1"}, "/c/jax")
    assert "JAX_COMPILATION_CACHE_DIR" not in own and "OMP_NUM_THREADS" not in own
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in own
    tf = backend_environment("tensorflow", None, shared, "/c/jax")
    assert "JAX_COMPILATION_CACHE_DIR" not in tf and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in tf
    assert tf["TF_CPP_MIN_LOG_LEVEL"] == "2"
