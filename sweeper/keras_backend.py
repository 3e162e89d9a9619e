"""Which Keras backend the workers will train with, known without importing Keras or any backend.

The controller never imports TensorFlow (nor JAX or PyTorch), yet a sweep must be refused before
anything is written when its workers could not train: the backend named is not installed here, or
the space needs TensorFlow and the backend is another. Keras picks its backend from KERAS_BACKEND,
else from `backend` in $KERAS_HOME/keras.json (~/.keras), else TensorFlow; this reads the same.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from sweeper.errors import SweeperError

TRAINING_BACKENDS = ("tensorflow", "jax", "torch")  # Keras's numpy backend cannot fit


class BackendError(SweeperError):
    """The Keras backend cannot train this space here."""


def keras_home(environ=os.environ) -> Path:
    if environ.get("KERAS_HOME"):
        return Path(environ["KERAS_HOME"])
    home = Path(os.path.expanduser("~"))
    return (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"


def backend_name(environ=os.environ) -> tuple[str, str]:
    """(backend, where it was named): as Keras itself will choose it in this environment."""
    if environ.get("KERAS_BACKEND"):
        return environ["KERAS_BACKEND"], "KERAS_BACKEND"
    config = keras_home(environ) / "keras.json"
    try:
        named = json.loads(config.read_text()).get("backend")
    except (OSError, ValueError, AttributeError):
        named = None
    if isinstance(named, str) and named:
        return named, str(config)
    return "tensorflow", "Keras's default"


def installed(backend: str) -> bool:
    try:
        return importlib.util.find_spec(backend) is not None
    except (ImportError, ValueError):
        return False


def require_backend(space=None, environ=os.environ) -> str:
    """The backend the workers will use; one line naming the fix where it cannot train `space`."""
    name, source = backend_name(environ)
    if name not in TRAINING_BACKENDS:
        raise BackendError(f"Keras backend {name!r} (from {source}) cannot train models here; "
                           "set KERAS_BACKEND to tensorflow, jax or torch")
    if not installed(name):
        others = [b for b in TRAINING_BACKENDS if b != name and installed(b)]
        fix = (f"set KERAS_BACKEND={others[0]} (installed here)" if others
               else f"install one: pip install {name}")
        raise BackendError(f"the Keras backend is {name} (from {source}), but {name} is not "
                           f"installed in this Python ({sys.executable}); {fix}")
    if space is not None and space.compress is not None and name != "tensorflow":
        raise BackendError(f"{space.source}: the compress section needs TensorFlow (it converts "
                           f"models to TFLite), and the Keras backend is {name} (from {source}); "
                           "run this space with KERAS_BACKEND=tensorflow where TensorFlow is "
                           "installed")
    return name
