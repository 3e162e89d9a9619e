"""On the GPU node: install the kit into the project's own .venv with no network, pick the Keras
backend the node has, and run `make gpu-check` or a sweeper command in the project.

Standard library only, and it runs on the node's Python before anything is installed. Design:
- The venv is the node's Python plus the kit: it sees everything the image has (a .pth file lists
  the image's package folders, so an image whose Python is itself a venv or a conda environment
  works too), and pip installs from the kit's wheels only what the image lacks (--no-index: no
  network is ever asked for).
- Installed once per kit: a rebuilt kit (another build time) installs again.
- Every problem is one line, `kit: error: ...`, naming the fix, exit code 2.

    python3 node.py KIT [gpu-check [VAR=VALUE ...] | SWEEPER-COMMAND ...]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

BACKENDS = ("tensorflow", "jax", "torch")  # the first the node has is used, unless KERAS_BACKEND
USAGE = """usage: bash gpu-kit/run gpu-check [SPACE=cnn_lr] [GPU_CHECK_SECONDS=100]
       bash gpu-kit/run sweep SPACE [OPTIONS]     (any sweeper command: check, status, ...)
PYTHON=/path/to/python picks the node's Python (default python3); KERAS_BACKEND the backend."""


class KitError(Exception):
    pass


def run_quietly(command: list[str], what: str, hint: str = "") -> str:
    result = subprocess.run(command, capture_output=True, text=True,
                            env={**os.environ, "PIP_NO_INPUT": "1", "PIP_CONFIG_FILE": os.devnull})
    if result.returncode != 0:
        lines = (result.stderr + result.stdout).strip().splitlines()
        errors = [line for line in lines if line.startswith("ERROR")] or lines[-1:] or ["failed"]
        raise KitError(f"{what}: {errors[-1].removeprefix('ERROR: ')}{hint}")
    return result.stdout


def image_folders() -> list[str]:
    """Where this (the node's) Python finds packages, less this script's own folder."""
    own = Path(__file__).resolve().parent
    from_env = set(filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    return [p for p in sys.path if p and os.path.isdir(p) and p not in from_env
            and Path(p).resolve() != own]


def install(kit: Path, info: dict, venv: Path) -> None:
    wheels = kit / "wheels"
    pips = sorted(wheels.glob("pip-*.whl"))
    if not pips:
        raise KitError(f"{wheels} holds no pip wheel; rebuild the kit with make gpu-kit")
    print(f"kit: installing into {venv} (no network) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(venv)],
                   check=True)
    python = str(venv / "bin" / "python")
    purelib = run_quietly([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          "cannot use the new venv").strip()
    (Path(purelib) / "_node_image.pth").write_text("\n".join(image_folders()) + "\n")
    pip = [python, str(pips[-1] / "pip"), "install", "--no-index", "--find-links", str(wheels),
           "--disable-pip-version-check", "--no-warn-script-location", "--quiet"]
    hint = (f"; the kit holds wheels for Python {info['python']} on {info['platform']}, and "
            f"expects {', '.join(info['from_image']) or 'nothing'} from the image: rebuild it with "
            "make gpu-kit KIT_PYTHON=... KIT_PLATFORM=... KIT_FROM_IMAGE=... for this node")
    # setuptools builds the project's editable install, in the venv itself: pip's isolated build
    # environment does not work when pip runs from its wheel.
    run_quietly(pip + ["setuptools>=68", *info["requirements"]],
                "installing the kit's wheels failed", hint)
    run_quietly(pip + ["--no-deps", "--no-build-isolation", "-e", str(kit / "sweeper")],
                "installing sweeper failed", hint)
    (venv / ".installed").touch()  # the Makefile's stamp: make installs nothing more
    (venv / ".kit").write_text(info["built"])


def choose_backend() -> str:
    """KERAS_BACKEND where set, else the first backend the node's Python has."""
    import importlib.util

    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    for name in BACKENDS:
        if importlib.util.find_spec(name) is not None:
            return name
    raise KitError(f"this Python ({sys.executable}) has no Keras backend: the node's image needs "
                   "JAX, PyTorch or TensorFlow; name the Python that has one with "
                   "PYTHON=/path/to/python")


def command(venv: Path, args: list[str]) -> list[str]:
    if args[0] != "gpu-check":
        return [str(venv / "bin" / "sweeper"), *args]
    if shutil.which("make"):
        return ["make", "--no-print-directory", "gpu-check", *args[1:]]
    # No make on the node: what the Makefile's gpu-check runs, with its variables.
    settings = dict(arg.split("=", 1) for arg in args[1:] if "=" in arg)
    check = [str(venv / "bin" / "python"), "-m", "benchmarks.gpu_check",
             "--space", settings.get("SPACE", "cnn_lr")]
    if "GPU_CHECK_SECONDS" in settings:
        check += ["--seconds-per-packing", settings["GPU_CHECK_SECONDS"]]
    return check


def main(argv: list[str]) -> int:
    kit, args = Path(argv[0]).resolve(), argv[1:]
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    info = json.loads((kit / "kit.json").read_text())
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if info["platform"] != "native" and version != info["python"]:
        raise KitError(f"the kit holds wheels for Python {info['python']}, and {sys.executable} "
                       f"is {version}: run it with PYTHON=python{info['python']}, or rebuild the "
                       f"kit with make gpu-kit KIT_PYTHON={version}")
    from importlib import metadata

    for name in info["from_image"]:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            raise KitError(f"the kit expects {name} from the node's image, and {sys.executable} "
                           f"lacks it: rebuild the kit with it inside (make gpu-kit "
                           f"KIT_FROM_IMAGE=\"{' '.join(n for n in info['from_image'] if n != name)}\""
                           ")") from None
    backend = choose_backend()
    project, venv = kit / "sweeper", kit / "sweeper" / ".venv"
    marker = venv / ".kit"
    if not (marker.exists() and marker.read_text() == info["built"]):
        install(kit, info, venv)
    print(f"kit: Keras backend {backend} (KERAS_BACKEND to choose another), Python {version}",
          flush=True)
    os.chdir(project)
    argv_ = command(venv, args)
    os.execvpe(argv_[0], argv_, {**os.environ, "KERAS_BACKEND": backend})


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KitError as e:
        print(f"kit: error: {e}", file=sys.stderr)
        sys.exit(2)
