"""Workers stop when their controller is gone, and a sweep waits for such leftover workers instead
of putting a second worker on their GPUs. Real processes, no TensorFlow: a controller stand-in
that is killed outright, and real `sweeper worker` processes held with SIGSTOP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import optuna
import psutil
import pytest
from conftest import ROOT

from sweeper.errors import SweeperError
from sweeper.storage.rdb import open_storage
from sweeper.sweep.host_workers import _worker_study, host_workers, wait_for_leftovers
from sweeper.worker.exits import EXIT_INTERRUPTED
from sweeper.worker.lifeline import CONTROLLER_ENV, EXIT_GRACE_S, controller_pid, watch_controller

# A process that watches its controller and reports what the worker would be told. With
# IGNORE=1 it goes on as if busy, so the lifeline's own exit must end it.
WATCHER = """
import os, sys, threading, time
from sweeper.worker.lifeline import watch_controller
told = threading.Event()
def stop(why):
    with open(os.environ["REPORT"], "a") as report:
        report.write(f"stop: {why}\\n")
    told.set()
watch_controller(stop, 130)
if os.environ.get("IGNORE") == "1":
    time.sleep(60)
told.wait(60)
with open(os.environ["REPORT"], "a") as report:
    report.write("left by itself\\n")
"""

# The stand-in controller: starts the watcher (naming itself as its controller), says its pid,
# then waits to be killed.
CONTROLLER = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]],
                         env={**os.environ, "SWEEPER_CONTROLLER_PID": str(os.getpid())},
                         start_new_session=True)
print(child.pid, flush=True)
time.sleep(120)
"""


def _start_watched(ignore: bool, report) -> tuple[subprocess.Popen, psutil.Process]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IGNORE": "1" if ignore else "0",
           "PYTHONUNBUFFERED": "1", "REPORT": str(report)}
    controller = subprocess.Popen([sys.executable, "-c", CONTROLLER, WATCHER], env=env,
                                  stdout=subprocess.PIPE, text=True)
    watcher = psutil.Process(int(controller.stdout.readline()))
    return controller, watcher


def test_a_worker_notices_its_controller_killed_outright_within_a_second(tmp_path):
    report = tmp_path / "report"
    controller, watcher = _start_watched(ignore=False, report=report)
    time.sleep(1.5)  # the watcher is up and watching
    assert watcher.is_running() and not report.exists()
    killed = time.time()
    controller.kill()  # SIGKILL of the controller's pid only, not its process group
    controller.wait()
    watcher.wait(timeout=10)
    assert time.time() - killed < 3
    # Told why, then left on its own, as a worker does once its trial is closed.
    assert report.read_text() == (f"stop: its controller (pid {controller.pid}) is gone\n"
                                  "left by itself\n")


def test_a_worker_that_does_not_stop_is_ended_by_its_lifeline(tmp_path):
    report = tmp_path / "report"
    controller, watcher = _start_watched(ignore=True, report=report)
    time.sleep(1.5)
    killed = time.time()
    controller.kill()
    controller.wait()
    watcher.wait(timeout=EXIT_GRACE_S + 10)
    assert EXIT_GRACE_S - 1 < time.time() - killed < EXIT_GRACE_S + 5
    assert report.read_text() == f"stop: its controller (pid {controller.pid}) is gone\n"


def test_a_worker_whose_controller_is_gone_asks_for_no_trial(tmp_path, monkeypatch):
    """Asked before every trial, not only by the watch every half second: a trial that ends just
    after its controller died starts no other (seen: 0.4-0.6 s after a controller's SIGKILL,
    workers started new trials and failed them a second later)."""
    from sweeper.worker import loop

    monkeypatch.setenv(CONTROLLER_ENV, str(os.getpid()))  # never this process's own parent
    monkeypatch.setattr(loop, "STOP", threading.Event())  # this test's own stop request
    monkeypatch.setattr(loop, "_why_stopped", ["the worker was stopped"])
    study = optuna.create_study(study_name="gone",
                                storage=open_storage(f"sqlite:///{tmp_path / 'study.db'}"))
    asked = []
    code = loop.run_trials(study, lambda trial: asked.append(trial.number) or 0.0, budget=3)
    assert (code, asked, len(study.trials)) == (EXIT_INTERRUPTED, [], 0)
    assert loop.interrupted_reason() == f"interrupted: its controller (pid {os.getpid()}) is gone"


def test_a_worker_started_by_hand_watches_nothing():
    assert controller_pid({}) is None
    assert controller_pid({CONTROLLER_ENV: "x12"}) is None
    assert watch_controller(lambda why: None, 130, environ={}) is None
    assert controller_pid({CONTROLLER_ENV: "4242"}) == 4242


@pytest.mark.parametrize("args, study", [
    (["/usr/bin/python3", "-m", "sweeper", "worker", "--study", "cnn_lr", "--threads", "2"],
     "cnn_lr"),
    (["/home/me/.venv/bin/sweeper", "worker", "--study=mlp"], "mlp"),
    (["sweeper", "worker", "--heartbeat", "5", "--study", "a.b-c"], "a.b-c"),
    (["/usr/bin/python3", "-m", "sweeper", "sweep", "cnn_lr"], None),
    (["/usr/bin/python3", "-m", "sweeper", "worker"], None),
    (["python3", "worker", "--study", "x"], None),
    (["bash", "-c", "sweeper worker --study x"], None),
    ([], None),
])
def test_worker_command_lines_are_recognised(args, study):
    assert _worker_study(args) == study


# Starts a real worker that names this process as its controller, stops it with SIGSTOP before
# it can do anything, and exits: the worker is left behind as a controller killed outright
# leaves its workers.
ORPHAN_MAKER = """
import os, signal, subprocess, sys
env = dict(os.environ, SWEEPER_CONTROLLER_PID=str(os.getpid()))
worker = subprocess.Popen([sys.executable, "-m", "sweeper", "worker", "--study", sys.argv[1]],
                          env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
os.kill(worker.pid, signal.SIGSTOP)
print(worker.pid)
"""


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != CONTROLLER_ENV}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _leftover_worker(study: str) -> int:
    made = subprocess.run([sys.executable, "-c", ORPHAN_MAKER, study], env=_env(),
                          capture_output=True, text=True, check=True)
    return int(made.stdout)


def _stopped_worker(study: str, **env) -> int:
    """A real worker started by this process, held with SIGSTOP."""
    worker = subprocess.Popen([sys.executable, "-m", "sweeper", "worker", "--study", study],
                              env=_env(**env), start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.kill(worker.pid, signal.SIGSTOP)
    return worker.pid


def _end(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def test_a_sweep_waits_for_leftover_workers_and_refuses_when_they_stay():
    leftover = _leftover_worker("left_study")
    own = _stopped_worker("live_study", **{CONTROLLER_ENV: str(os.getpid())})
    by_hand = _stopped_worker("hand_study")
    try:
        found = {w.pid: w for w in host_workers()}
        assert found[leftover].orphaned and found[leftover].study == "left_study"
        assert not found[own].orphaned  # its controller (this test) is alive
        assert not found[by_hand].orphaned and found[by_hand].controller_pid is None

        said = []
        started = time.time()
        with pytest.raises(SweeperError) as refused:
            wait_for_leftovers(said.append, wait_s=1.5)
        assert 1.5 <= time.time() - started < 5
        line = str(refused.value)
        assert "\n" not in line and f"(pid {leftover})" in line and "'left_study'" in line
        assert f"kill -9 {leftover}" in line
        assert str(own) not in line and str(by_hand) not in line
        assert said == [f"waiting for 1 worker(s) of an earlier sweep of 'left_study' to stop "
                        f"(pid {leftover}): their controller is gone"]

        os.kill(leftover, signal.SIGCONT)  # it goes on, and leaves: its controller is gone
        said.clear()
        wait_for_leftovers(said.append, wait_s=30)
        assert len(said) == 1
        assert not [w for w in host_workers() if w.orphaned and w.pid == leftover]
    finally:
        for pid in (leftover, own, by_hand):
            _end(pid)
