"""The offline kit for GPU nodes (`make gpu-kit`), built here for this machine's own Python and
platform, installed and run as on a node: a fresh Python that has JAX and the scientific stack but
no TensorFlow, no sweeper and no network (a new network namespace, where the machine allows one;
pip is given --no-index either way)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import optuna
import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow
IMAGE_PACKAGES = ("jax", "jaxlib", "numpy", "scipy", "ml_dtypes", "opt_einsum")  # a JAX image's
NOT_IN_KIT = ("tensorflow", "optuna_dashboard", "psycopg", "pymysql", "matplotlib", "plotly")


def build_kit(out: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gpu_kit.build", "--python", "native", "--out",
                           str(out), *options], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("kit") / "gpu-kit"
    built = build_kit(out)
    if built.returncode != 0 and "cannot download" in built.stderr:
        pytest.skip(f"the kit's wheels cannot be downloaded here: {built.stderr.strip()}")
    assert built.returncode == 0, built.stderr
    return out, built.stdout


@pytest.fixture(scope="module")
def node_python(tmp_path_factory) -> Path:
    """A Python as a JAX image has it: JAX, NumPy and SciPy (those of this test run, linked into a
    folder of their own), nothing else: no Keras, Optuna, TensorFlow or sweeper."""
    root = tmp_path_factory.mktemp("node")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(root / "image")], check=True)
    packages = root / "image-packages"
    packages.mkdir()
    for name in IMAGE_PACKAGES:
        dist = metadata.distribution(name)
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            source = Path(dist.locate_file(top))
            if source.exists() and not (packages / top).exists() and top != "..":
                (packages / top).symlink_to(source)
    python = root / "image" / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True, check=True)
    (Path(purelib.stdout.strip()) / "image.pth").write_text(f"{packages}\n")
    return python


def on_the_node(kit_dir: Path, python: Path, *args: str, cache: Path) -> subprocess.CompletedProcess:
    """`bash gpu-kit/run ARGS` with the node's Python, cut off from every network."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KERAS_", "PIP_", "PYTHONPATH", "SWEEPER_", "CUDA_"))}
    env.update({"PYTHON": str(python), "SWEEPER_CACHE_DIR": str(cache),
                "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"})
    offline = ["unshare", "--net"] if _can_unshare() else []
    return subprocess.run([*offline, "bash", str(kit_dir / "run"), *args], capture_output=True,
                          text=True, env=env, timeout=600)


def _can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


def test_the_kit_leaves_out_what_a_node_has_or_a_sweep_does_not_need(kit):
    kit_dir, said = kit
    info = json.loads((kit_dir / "kit.json").read_text())
    names = {w.split("-")[0].lower() for w in info["wheels"]}
    assert {"keras", "optuna", "sqlalchemy", "alembic", "scikit_learn", "pip"} <= names
    assert not names & {"tensorflow", "optuna_dashboard", "psycopg", "psycopg_binary", "pymysql",
                        "matplotlib", "plotly", "ai_edge_litert", "numpy", "scipy"}
    assert info["from_image"] == ["numpy", "scipy"]
    size = sum(p.stat().st_size for p in kit_dir.rglob("*") if p.is_file())
    assert size <= 60 * 2**20
    assert f"{size / 2**20:.1f} MiB (limit 60 MiB)" in said
    assert (kit_dir / "sweeper" / "sweeper" / "worker" / "loop.py").is_file()
    assert not (kit_dir / "sweeper" / ".venv").exists() and not (kit_dir / "sweeper" / ".git").exists()


def test_the_kit_installs_offline_and_sweeps_under_the_nodes_jax(kit, node_python, tmp_path):
    kit_dir, _ = kit
    check = on_the_node(kit_dir, node_python, "check", "tests/spaces/backend_cnn.yaml",
                        cache=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "kit: Keras backend jax" in check.stdout and "ok (3 params" in check.stdout

    sweep = on_the_node(kit_dir, node_python, "sweep", "tests/spaces/backend_cnn.yaml",
                        "--trials", "2", "--workers", "2", cache=tmp_path)
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    assert "installing" not in sweep.stdout  # installed once, by the first command
    store = kit_dir / "sweeper" / "storage" / "backend_cnn.db"
    trials = optuna.load_study(study_name="backend_cnn", storage=f"sqlite:///{store}").trials
    assert len(trials) == 2 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert {t.user_attrs["sweeper.backend"].split()[0] for t in trials} == {"jax"}
    assert all(len(t.intermediate_values) == t.user_attrs["sweeper.epochs_run"] for t in trials)

    venv_python = kit_dir / "sweeper" / ".venv" / "bin" / "python"
    seen = subprocess.run([venv_python, "-c", "import importlib.util as u, json; print(json.dumps("
                           f"[m for m in {NOT_IN_KIT!r} if u.find_spec(m)]))"],
                          capture_output=True, text=True, check=True)
    assert json.loads(seen.stdout) == []  # the sweep ran with none of them


def test_a_kit_above_its_limit_is_refused_and_the_last_one_kept(kit):
    kit_dir, _ = kit
    before = (kit_dir / "kit.json").read_text()
    refused = build_kit(kit_dir, "--limit-mib", "1")
    assert refused.returncode == 2
    line = refused.stderr.strip()
    assert "\n" not in line and "above the limit of 1 MiB" in line and "KIT_LIMIT_MIB" in line
    assert (kit_dir / "kit.json").read_text() == before
    assert not kit_dir.with_name("gpu-kit.partial").exists()


@pytest.mark.parametrize("change, expected", [
    ({"python": "3.99", "platform": "manylinux_2_28_x86_64"},
     "the kit holds wheels for Python 3.99"),
    ({"from_image": ["numpy", "no-such-package"]},
     "the kit expects no-such-package from the node's image"),
])
def test_a_node_the_kit_does_not_fit_is_told_in_one_line(tmp_path, change, expected):
    """Checked before anything is installed: another Python, a package the image lacks."""
    kit_dir = tmp_path / "gpu-kit"
    shutil.copytree(ROOT / "gpu_kit", kit_dir / "sweeper" / "gpu_kit")
    shutil.copy(ROOT / "gpu_kit" / "run", kit_dir / "run")
    info = {"python": "x", "platform": "native", "requirements": [], "from_image": ["numpy"],
            "wheels": [], "built": "now", **change}
    (kit_dir / "kit.json").write_text(json.dumps(info))
    result = subprocess.run(["bash", str(kit_dir / "run"), "check", "cnn_lr"], capture_output=True,
                            text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=60)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("kit: error: ") and expected in line
    assert "make gpu-kit KIT_" in line
    assert not (kit_dir / "sweeper" / ".venv").exists()
