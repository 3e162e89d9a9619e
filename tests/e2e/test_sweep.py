"""Real sweeps through the real entry point: 2 pinned workers, real TensorFlow, a real store."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time

import optuna
import psutil
import pytest
from conftest import load, run_sweeper, wait_for_running

pytestmark = pytest.mark.slow
State = optuna.trial.TrialState


def test_sweep_pins_workers_prunes_and_resumes(project, fake_nvidia_smi):
    url = f"sqlite:///{project / 'storage' / 'tiny_cnn.db'}"
    first = run_sweeper("sweep", "tiny_cnn", "--trials", "8", "--gpus", "0,1", "--recycle-after", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "best trials" in first.stdout and str(project / "storage" / "tiny_cnn.db") in first.stdout

    trials = load(url, "tiny_cnn").trials
    assert len(trials) == 8
    assert {t.state for t in trials} <= {State.COMPLETE, State.PRUNED}
    assert any(t.state == State.PRUNED for t in trials), "the top-quarter pruner pruned nothing"
    assert any(t.state == State.COMPLETE for t in trials)
    # Each worker saw exactly its own GPU: worker 0 -> "0", worker 1 -> "1", and both worked.
    seen = {(t.user_attrs["sweeper.worker"], t.user_attrs["sweeper.cuda_visible_devices"])
            for t in trials}
    assert seen == {("0", "0"), ("1", "1")}
    # These trials are shorter than a start-up: each worker asked for its successor at once, and
    # ran its 2 trials at least, more while the successor warmed up, before making way for it
    # (when it does: tests/e2e/test_handover.py).
    for worker in ("0", "1"):
        pids = [t.user_attrs["sweeper.pid"] for t in trials
                if t.user_attrs["sweeper.worker"] == worker]
        per_process = [len(list(run)) for _, run in itertools.groupby(pids)]
        assert all(n >= 2 for n in per_process[:-1]), per_process
    logs = "".join(p.read_text() for p in (project / "storage" / "logs" / "tiny_cnn").glob("*.log"))
    assert logs.count("asking for the next worker") >= 2
    for t in trials:
        assert t.user_attrs["sweeper.host"]
        assert len(t.intermediate_values) == t.user_attrs["sweeper.epochs_run"]
        if t.state == State.COMPLETE:
            assert 0 <= t.user_attrs["sweeper.test_f1"] <= 1 and t.value is not None
    _artifacts_written_while_the_next_trial_trained(trials, project / "storage" / "artifacts")

    # Same command, larger budget, GPUs found by (the fake) nvidia-smi: the study resumes.
    env = {**os.environ, "FAKE_GPU_COUNT": "2"}
    second = run_sweeper("sweep", "tiny_cnn", "--trials", "10", env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "8 of 10 trials already done, resuming" in second.stdout
    resumed = load(url, "tiny_cnn").trials
    assert len(resumed) == 10 and all(t.state != State.RUNNING for t in resumed)
    assert [(t.params, t.value) for t in resumed[:8]] == [(t.params, t.value) for t in trials]
    assert {t.user_attrs["sweeper.cuda_visible_devices"] for t in resumed[8:]} <= {"0", "1"}

    # A changed space is refused, and nothing is added to the study.
    space_file = project / "search_spaces" / "tiny_cnn.yaml"
    space_file.write_text(space_file.read_text().replace("max_epochs: 4", "max_epochs: 3"))
    changed = run_sweeper("sweep", "tiny_cnn", "--trials", "12", "--workers", "1", "--gpus", "")
    assert changed.returncode == 2
    assert "changed since study 'tiny_cnn' was created" in changed.stderr
    assert "--new-study" in changed.stderr
    assert len(load(url, "tiny_cnn").trials) == 10


def test_sigterm_stops_workers_within_10s_and_a_rerun_resumes(project):
    url = f"sqlite:///{project / 'storage' / 'long_cnn.db'}"
    controller = subprocess.Popen(
        [sys.executable, "-m", "sweeper", "sweep", "long_cnn", "--trials", "40", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_running(url, "long_cnn", 2, controller)  # both workers inside a trial
        workers = [p.pid for p in psutil.Process(controller.pid).children()]
        started = time.time()
        controller.send_signal(signal.SIGTERM)
        output, _ = controller.communicate(timeout=30)
        took = time.time() - started
    finally:
        if controller.poll() is None:
            controller.kill()
    assert took < 10, f"stopping took {took:.1f}s"
    assert controller.returncode == 130, output
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
                   for pid in workers)
    trials = load(url, "long_cnn").trials
    assert not [t for t in trials if t.state == State.RUNNING]
    interrupted = [t for t in trials if t.state == State.FAIL]
    assert len(interrupted) == 2
    assert all(t.user_attrs["sweeper.fail_reason"].startswith("interrupted") for t in interrupted)
    waiting = [t for t in trials if t.state == State.WAITING]
    assert sorted(map(repr, (t.params for t in waiting))) == sorted(
        map(repr, (t.params for t in interrupted)))

    finished = sum(t.state in (State.COMPLETE, State.PRUNED) for t in trials)
    rerun = run_sweeper("sweep", "long_cnn", "--trials", str(finished + 2), "--workers", "2")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = load(url, "long_cnn").trials
    assert not [t for t in after if t.state in (State.RUNNING, State.WAITING)]
    done = [t for t in after if t.state in (State.COMPLETE, State.PRUNED)]
    assert len(done) == finished + 2
    # The two retries ran the interrupted trials' params again.
    retried = [t for t in done if "failed_trial" in t.system_attrs]
    assert sorted(t.system_attrs["failed_trial"] for t in retried) == sorted(
        t.number for t in interrupted)


def test_a_killed_worker_is_replaced_and_its_trial_retried(project):
    url = f"sqlite:///{project / 'storage' / 'long_cnn.db'}"
    controller = subprocess.Popen(
        [sys.executable, "-m", "sweeper", "sweep", "long_cnn", "--trials", "3", "--workers", "2",
         "--heartbeat", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        victim = wait_for_running(url, "long_cnn", 2, controller)[0]
        os.kill(victim.user_attrs["sweeper.pid"], signal.SIGKILL)
        output, _ = controller.communicate(timeout=300)
    finally:
        if controller.poll() is None:
            controller.kill()
    assert controller.returncode == 0, output
    assert "exited with code -9" in output
    trials = load(url, "long_cnn").trials
    killed = trials[victim.number]
    assert killed.state == State.FAIL
    assert killed.user_attrs["sweeper.fail_reason"].startswith("the worker died (exit code -9)")
    finished = [t for t in trials if t.state in (State.COMPLETE, State.PRUNED)]
    assert len(finished) == 3
    assert not [t for t in trials if t.state in (State.RUNNING, State.WAITING)]
    retry = [t for t in finished if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retry) == 1 and retry[0].params == killed.params
    assert retry[0].user_attrs["sweeper.fail_reason"] is None  # not the failed trial's reason


def test_workers_that_keep_crashing_stop_the_sweep_with_the_reason(project):
    result = run_sweeper("sweep", "crashing", "--trials", "5", "--workers", "1", timeout=300)
    assert result.returncode == 1
    assert "worker 0 crashed 3 times" in result.stderr
    assert "storage/logs/crashing/worker-0.log" in result.stderr
    url = f"sqlite:///{project / 'storage' / 'crashing.db'}"
    trials = load(url, "crashing").trials
    assert not [t for t in trials if t.state == State.RUNNING]
    assert all(t.user_attrs["sweeper.fail_reason"].startswith("the worker died")
               for t in trials if t.state == State.FAIL)


def _artifacts_written_while_the_next_trial_trained(trials, folder) -> None:
    """Every completed trial has its confusion matrix and per-class table, also each worker's
    last (a worker leaves only once they are written). Where the same worker ran a next trial,
    they were written after that trial's first training step and before it ended: off the slot's
    path, and within that trial's time."""
    import json

    by_pid: dict = {}
    for t in sorted(trials, key=lambda t: t.datetime_start):
        by_pid.setdefault(t.user_attrs["sweeper.pid"], []).append(t)
    checked = 0
    for runs in by_pid.values():
        for t, after in zip(runs, runs[1:] + [None]):
            if t.state != State.COMPLETE:
                continue
            files = {json.loads(v)["filename"]: folder / json.loads(v)["artifact_id"]
                     for k, v in t.system_attrs.items() if k.startswith("artifacts:")}
            assert {f"confusion_matrix_trial_{t.number}.png", f"per_class_trial_{t.number}.csv"} \
                <= set(files), f"trial {t.number}: {sorted(files)}"
            # (A model file is left out: when a later trial pushes it out of the best k, a note
            # is written in its place.)
            written = max(files[name].stat().st_mtime for name in files if name[-4:] in (".png", ".csv"))
            if after is not None:
                assert after.user_attrs["sweeper.timeline"]["first_batch"] <= written \
                    <= after.datetime_complete.timestamp(), f"trial {t.number}"
                checked += 1
    assert checked, "no worker ran a trial after a completed one"
