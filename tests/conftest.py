"""Shared fixtures: a scratch project folder, study stores on every backend, a fake nvidia-smi."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_SPACES = Path(__file__).resolve().parent / "spaces"
SERVER_URL_ENV = {"postgres": "SWEEPER_TEST_POSTGRES_URL", "mysql": "SWEEPER_TEST_MYSQL_URL"}


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One dataset cache for the whole run: preparing digits once is enough."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def project(tmp_path, monkeypatch, shared_cache) -> Path:
    """A working folder holding the shipped and test search spaces, as a user's checkout would."""
    shutil.copytree(ROOT / "search_spaces", tmp_path / "search_spaces")
    for space in TEST_SPACES.glob("*.yaml"):
        shutil.copy(space, tmp_path / "search_spaces" / space.name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SWEEPER_STORAGE", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("SWEEPER_CACHE_DIR", str(shared_cache))
    # GPU leases of this test only (no other test's or user's sweep holds them), outside the
    # project: like the machine's own, they are no part of it.
    monkeypatch.setenv("SWEEPER_LEASE_DIR", str(tmp_path.parent / f"{tmp_path.name}-gpu-leases"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "tests" / "helpers")]))
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "helpers"))
    return tmp_path


def _server_database(kind: str):
    """A fresh, empty database on the server named by the environment, dropped afterwards."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    env = SERVER_URL_ENV[kind]
    base = os.environ.get(env)
    if not base:
        pytest.skip(f"{env} is not set (.ci/run sets it); no {kind} server to test against")
    name = f"sweeper_test_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
    except Exception as e:  # server down or unreachable
        admin.dispose()
        pytest.skip(f"{kind} server at {make_url(base).render_as_string(hide_password=True)} "
                    f"not usable: {str(e).splitlines()[0]}")
    url = make_url(base).set(database=name).render_as_string(hide_password=False)

    def drop():
        with admin.connect() as conn:
            if kind == "postgres":
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            else:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        admin.dispose()

    return url, drop


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def storage_url(request, tmp_path):
    """A study store on each backend: SQLite always, servers where their URL is set."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store' / 'study.db'}"
        return
    url, drop = _server_database(request.param)
    yield url
    drop()


def _near_instant_worker(url: str, study_name: str, budget: int, queue) -> None:
    """A worker whose trials report 5 'epochs' and end at once (no TensorFlow). Its trials take
    the params of the study's space where sweeper made the study, else one param x."""
    import contextlib
    import io

    from sweeper import keys
    from sweeper.space import parse_space
    from sweeper.storage.rdb import open_storage
    from sweeper.worker.loop import run_trials

    study = optuna.load_study(study_name=study_name, storage=open_storage(url, heartbeat_s=5))
    text = study.user_attrs.get(keys.SPACE_YAML)
    space = parse_space(text) if text else None

    def objective(trial):
        x = space.suggest(trial)["learning_rate"] if space else trial.suggest_float("x", 0, 1)
        for step in range(5):
            trial.report(x * step, step)
        return x

    with contextlib.redirect_stdout(io.StringIO()):
        code = run_trials(study, objective, budget)
    queue.put((os.getpid(), code))


def race_workers(url: str, study_name: str, budget: int, workers: int) -> list[int]:
    """Starts `workers` near-instant workers at once; their exit codes once all have ended.
    Spawned, not forked: earlier tests may have loaded TensorFlow into this process, and a fork of
    a process with TensorFlow's threads can deadlock in the child."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_near_instant_worker, args=(url, study_name, budget, queue))
             for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0] * workers
    return [queue.get(timeout=5)[1] for _ in procs]


FAKE_NVIDIA_SMI = """#!/bin/sh
# A stand-in for nvidia-smi on a machine without GPUs: lists FAKE_GPU_COUNT GPUs.
count="${FAKE_GPU_COUNT:-2}"
i=0
case "$*" in
  *utilization.gpu*)
    while [ "$i" -lt "$count" ]; do
      echo "$i, GPU-fake-$i, 0, ${FAKE_GPU_MEMORY:-81559}, 0"; i=$((i+1))
    done ;;
  *query-compute-apps*)
    # FAKE_GPU_APPS: "GPU-fake-1, 4242, 1200;GPU-fake-0, 77, 500" (uuid, pid, MiB per process)
    if [ -n "${FAKE_GPU_APPS:-}" ]; then printf '%s\n' "$FAKE_GPU_APPS" | tr ';' '\n'; fi ;;
  *memory.total*)
    while [ "$i" -lt "$count" ]; do echo "$i, ${FAKE_GPU_MEMORY:-81559}"; i=$((i+1)); done ;;
  *--query-gpu*)
    while [ "$i" -lt "$count" ]; do echo "$i, Fake GPU $i, GPU-fake-$i"; i=$((i+1)); done ;;
  *-L*)
    while [ "$i" -lt "$count" ]; do echo "GPU $i: Fake GPU $i (UUID: GPU-fake-$i)"; i=$((i+1)); done ;;
  *) echo "NVIDIA-SMI fake" ;;
esac
"""


@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch) -> Path:
    """Puts a fake nvidia-smi first on PATH (2 GPUs unless FAKE_GPU_COUNT says otherwise)."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    exe = bin_dir / "nvidia-smi"
    exe.write_text(FAKE_NVIDIA_SMI)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return exe


def run_sweeper(*args, env=None, timeout=600, cwd=None) -> subprocess.CompletedProcess:
    """The real entry point in a child process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "sweeper", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=cwd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def start_dashboard(folder, env, port: int, *args: str) -> subprocess.Popen:
    """The real `sweeper dashboard ARGS --port PORT` in folder, once its API answers."""
    process = subprocess.Popen([sys.executable, "-m", "sweeper", "dashboard", *args, "--port",
                                str(port)], cwd=folder, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            get_json(f"http://127.0.0.1:{port}/api/meta")
            return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    pytest.fail(f"the dashboard did not start: {process.communicate()[0]}")


def load(url: str, name: str) -> optuna.Study:
    """A study as a reader sees it: the store must already exist."""
    from sweeper.storage.rdb import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(url, create=False))


def wait_for_running(url: str, study: str, count: int, sweep: subprocess.Popen,
                     timeout: float = 180) -> list:
    """Waits until `count` trials are RUNNING and each has reported an epoch; returns them.
    Fails the test, with the sweep's output and worker logs, if the sweep ends or time runs out."""
    running_state = optuna.trial.TrialState.RUNNING
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.5)
        if sweep.poll() is not None:
            pytest.fail(f"the sweep ended early: {sweep.communicate()[0]}")
        try:
            running = load(url, study).get_trials(states=(running_state,))
        except Exception:  # the store or the study is not there yet
            continue
        if len(running) >= count and all(t.intermediate_values for t in running):
            return running
    sweep.kill()
    logs = "".join(f"\n--- {p}\n" + p.read_text()[-2000:] for p in Path("storage").rglob("*.log"))
    pytest.fail(f"{count} trials never got running; the sweep said: {sweep.communicate()[0]}"
                f"{logs}")
