"""`make gpu-kit`: one folder, storage/gpu-kit/, that installs and runs sweeper on a GPU node with
no network and no TensorFlow: the project, and the wheels it needs that such a node's image lacks.

Design rules:
- The wheels are for the node's Python and platform (default CPython 3.12 on manylinux_2_28 x86-64,
  glibc 2.28 or newer), downloaded as wheels only: nothing is compiled on the node.
- Only what a sweep needs. Left out, each for a reason (EXCLUDED): TensorFlow (the node's JAX or
  PyTorch trains), the compress stage's TFLite runtime (that stage needs TensorFlow), the report's
  plotting libraries and optuna-dashboard (reading results happens where they are installed), the
  database drivers (a kit sweeps into a SQLite store). What the node's image is expected to have
  (--from-image, default numpy and scipy: JAX itself needs both) is left out too; the node checks
  that it is there before installing anything.
- The kit is built beside its destination and moved in whole: a refused or failed build leaves the
  previous kit as it was. Above the size limit it is refused, in one line.

    python -m gpu_kit.build [--python 3.12] [--platform manylinux_2_28_x86_64] [--limit-mib 60]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from sweeper.sweep.study_info import git_commit

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "storage" / "gpu-kit"
EXCLUDED = {
    "tensorflow": "the node's JAX or PyTorch backend trains",
    "ai-edge-litert": "runs compressed models, and the compress stage needs TensorFlow",
    "optuna-dashboard": "inspection runs where the results are read, not on the node",
    "plotly": "draws reports, which are read elsewhere",
    "matplotlib": "draws reports, which are read elsewhere",
}
# Installs the rest on the node (run from its own wheel) and builds the project's editable install.
TOOLS = ["pip", "setuptools>=68"]
NODE_FILES = ("run",)  # beside the project in the kit


class KitError(Exception):
    """A build that cannot go on: one line, exit code 2."""


def sweep_requirements() -> list[str]:
    """The project's own dependencies (not its extras), less EXCLUDED."""
    try:
        declared = metadata.requires("sweeper") or []
    except metadata.PackageNotFoundError:
        raise KitError("sweeper is not installed in this Python; run `make gpu-kit`, which "
                       "installs it first") from None
    kept = []
    for line in declared:
        requirement = Requirement(line)
        if requirement.marker is not None and "extra" in str(requirement.marker):
            continue
        if canonicalize_name(requirement.name) not in EXCLUDED:
            kept.append(str(requirement))
    return kept


def download(requirements: list[str], dest: Path, python: str, platform_tag: str | None) -> str:
    """Every wheel of the requirements' dependency chain into dest; pip's output on failure."""
    target = [] if python == "native" else ["--python-version", python, "--implementation", "cp"]
    if platform_tag and python != "native":
        target += ["--platform", platform_tag]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
               "--dest", str(dest), *target, *requirements]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        why = [line for line in (result.stderr or result.stdout).splitlines()
               if line.startswith("ERROR")] or ["pip failed"]
        raise KitError(f"cannot download the wheels for Python {python}"
                       f"{' on ' + platform_tag if platform_tag and python != 'native' else ''}: "
                       f"{why[-1].removeprefix('ERROR: ')}; check that the package index is "
                       "reachable, and KIT_PYTHON / KIT_PLATFORM")
    return result.stdout


def wheel_name(path: Path) -> str:
    return canonicalize_name(path.name.split("-")[0])


def project_files() -> list[str]:
    """The checkout's files: tracked, and new ones not ignored (a user's own spaces)."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                                cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return [f for f in listed.splitlines() if (ROOT / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = re.compile(r"(^|/)(\.git|\.venv|storage|__pycache__|[^/]+\.egg-info)(/|$)")
        return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
                if p.is_file() and not skip.search(str(p.relative_to(ROOT)))]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def build(out: Path, python: str, platform_tag: str, limit_mib: float,
          from_image: list[str]) -> dict:
    requirements = sweep_requirements()
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    wheels = partial / "wheels"
    wheels.mkdir(parents=True)
    try:
        download(requirements + TOOLS, wheels, python, platform_tag)
        image = {canonicalize_name(n) for n in from_image}
        for wheel in wheels.glob("*.whl"):
            if wheel_name(wheel) in image:
                wheel.unlink()
        for name in project_files():
            target = partial / "sweeper" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
        for name in NODE_FILES:
            shutil.copy2(Path(__file__).with_name(name), partial / name)
        (partial / "run").chmod(0o755)
        kit = {"python": platform.python_version().rsplit(".", 1)[0] if python == "native"
               else python,
               "platform": "native" if python == "native" else platform_tag,
               "requirements": requirements, "from_image": sorted(image),
               "wheels": sorted(w.name for w in wheels.glob("*.whl")),
               "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": git_commit(ROOT)}
        (partial / "kit.json").write_text(json.dumps(kit, indent=1) + "\n")
        size = folder_bytes(partial)
        if size > limit_mib * 2**20:
            biggest = sorted(wheels.glob("*.whl"), key=lambda w: -w.stat().st_size)[:3]
            raise KitError(f"the kit would be {size / 2**20:.1f} MiB, above the limit of "
                           f"{limit_mib:g} MiB (largest: "
                           f"{', '.join(f'{w.name} {w.stat().st_size / 2**20:.1f} MiB' for w in biggest)}"
                           "); raise KIT_LIMIT_MIB, or leave more to the image with KIT_FROM_IMAGE")
        shutil.rmtree(out, ignore_errors=True)
        partial.rename(out)
        return {**kit, "bytes": size, "path": str(out)}
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpu_kit.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default="3.12",
                        help="the node's Python, e.g. 3.12; 'native' for this machine's own")
    parser.add_argument("--platform", default="manylinux_2_28_x86_64",
                        help="the node's platform tag (pip download --platform)")
    parser.add_argument("--limit-mib", type=float, default=60, help="refuse a larger kit")
    parser.add_argument("--from-image", default="numpy scipy",
                        help="packages the node's image has, left out of the kit")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.python != "native" and not re.fullmatch(r"3\.\d+", args.python):
        print(f"gpu-kit: error: KIT_PYTHON={args.python!r} is not a Python version; write e.g. "
              "3.12, or native", file=sys.stderr)
        return 2
    try:
        kit = build(args.out.resolve(), args.python, args.platform, args.limit_mib,
                    args.from_image.replace(",", " ").split())
    except KitError as e:
        print(f"gpu-kit: error: {e}", file=sys.stderr)
        return 2
    try:
        shown = Path(kit["path"]).relative_to(Path.cwd())
    except ValueError:
        shown = Path(kit["path"])
    print(f"{shown}: {kit['bytes'] / 2**20:.1f} MiB (limit {args.limit_mib:g} MiB): "
          f"{len(kit['wheels'])} wheels for Python {kit['python']} on "
          f"{'this machine' if kit['platform'] == 'native' else kit['platform']}, and the "
          f"project; the node's image provides {', '.join(kit['from_image']) or 'nothing'} and a "
          "Keras backend (JAX, PyTorch or TensorFlow)")
    print(f"on the node, with no network:  bash {shown.name}/run gpu-check   "
          f"(or: bash {shown.name}/run sweep SPACE ...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
