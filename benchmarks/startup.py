"""Row 8: how fast the tool starts: `sweeper --help`, and `make sweep` to the first trial running."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

from benchmarks import common
from benchmarks.common import Row


def _help_seconds(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(common.ROOT / ".venv" / "bin" / "sweeper"), "--help"],
                       capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return times


def _first_running(path) -> bool:
    if not path.exists():
        return False
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0] > 0
    except sqlite3.Error:  # tables not made yet
        return False


def _make_sweep_to_first_trial() -> float:
    work = common.workdir("row8")
    store = work / "store.db"
    cmd = ["make", "-s", "-C", str(common.ROOT), "sweep", "SPACE=cnn_lr", "TRIALS=2",
           f"STORAGE=sqlite:///{store}", "NEW=1"]
    env = common.child_env(SWEEPER_CACHE_DIR=str(work / "cache"),
                           SWEEPER_ARTIFACT_DIR=str(work / "artifacts"))
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        while not _first_running(store):
            if proc.poll() is not None:
                raise RuntimeError(f"make sweep exited {proc.returncode} before a trial ran")
            time.sleep(0.02)
        return time.perf_counter() - started
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)


def startup(quick: bool) -> Row:
    helps = _help_seconds(3 if quick else 7)
    first = [_make_sweep_to_first_trial() for _ in range(1 if quick else 3)]
    help_s, first_s = common.median(helps), common.median(first)
    return Row(8, "start-up: `sweeper --help`; `make sweep` to first trial RUNNING",
               f"--help {help_s:.2f}s; first trial after {first_s:.1f}s", "-",
               f"first trial {first_s:.1f}s (TensorFlow import included)",
               "--help < 0.5 s", help_s < 0.5,
               {"help_s": helps, "make_sweep_to_first_trial_s": first})
