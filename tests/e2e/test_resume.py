"""Trials cut three ways in one sweep, and the same command run again each time: a stop request
(SIGTERM to the sweep), a worker SIGKILLed, the controller SIGKILLed. Each retry goes on from its
original's checkpoint and trains only the epochs that checkpoint lacks; the budget is exact and no
checkpoint outlives the sweep. Real TensorFlow, real processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import _server_database, load

pytestmark = pytest.mark.slow
State = optuna.trial.TrialState
SPACE = "resume_cnn"  # tests/spaces: 40 epochs, a checkpoint as often as the 2% rule lets
EPOCHS = 40
TRIALS = 3


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, project):
    if request.param == "sqlite":
        yield f"sqlite:///{project / 'storage' / 'resume.db'}"
        return
    url, drop = _server_database("postgres")
    yield url
    drop()


def _checkpoint(first: int) -> tuple[int | None, int]:
    """(The trial that wrote it, the epochs it holds) of the checkpoint of the chain that trial
    `first` started; (None, 0) when there is none."""
    state = Path("storage") / "checkpoints" / SPACE / str(first) / "checkpoint.json"
    try:
        found = json.loads(state.read_text())
        return found["trial"], found["epoch"]
    except (OSError, ValueError):
        return None, 0


def _chain(trial) -> int:
    return (trial.system_attrs.get("retry_history") or [trial.number])[0]


def _wait_for(sweep: subprocess.Popen, url: str, ready, what: str, timeout: float = 240):
    """The first RUNNING trial for which ready(trial) holds; fails with the logs otherwise."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if sweep.poll() is not None:
            pytest.fail(f"the sweep ended before {what}: {sweep.communicate()[0][-3000:]}")
        try:
            running = load(url, SPACE).get_trials(states=(State.RUNNING,))
        except Exception:  # the store or the study is not there yet
            running = []
        found = [t for t in running if ready(t)]
        if found:
            return found[0]
        time.sleep(0.2)
    sweep.kill()
    logs = "".join(f"\n--- {p}\n" + p.read_text()[-2000:] for p in Path("storage").rglob("*.log"))
    pytest.fail(f"never {what}: {sweep.communicate()[0][-3000:]}{logs}")


def _gone(pid: int, timeout: float = 60) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_cut_three_ways_each_retry_trains_only_what_its_checkpoint_lacks(project, store):
    command = [sys.executable, "-m", "sweeper", "sweep", SPACE, "--trials", str(TRIALS),
               "--workers", "1", "--storage", store]

    def start():
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    # 1. A stop request: the worker writes where it stands, queues the trial and leaves.
    sweep = start()
    _wait_for(sweep, store, lambda t: len(t.intermediate_values) >= 3, "a trial trained 3 epochs")
    sweep.send_signal(signal.SIGTERM)
    sweep.communicate(timeout=120)

    # 2. The same command again; its worker SIGKILLed once a periodic checkpoint holds epochs of
    # the trial it runs (a kill writes nothing: the retry loses what came after that checkpoint).
    sweep = start()
    written = {}

    def checkpointed(trial):
        writer, epoch = _checkpoint(_chain(trial))
        resumed = (trial.user_attrs.get("sweeper.resumed_from") or {}).get("epoch", 0)
        # Written by this run, and well before the end: the kill lands mid-training.
        if writer == trial.number and resumed < epoch < EPOCHS - 15:
            written[trial.number] = epoch
            return True
        return False

    victim = _wait_for(sweep, store, checkpointed, "a checkpoint was written mid-trial")
    os.kill(victim.user_attrs["sweeper.pid"], signal.SIGKILL)

    # 3. The controller SIGKILLed: its worker sees it gone, writes where it stands and leaves.
    # A trial with epochs left to train: a stop that came after its last one would let it end.
    running = _wait_for(sweep, store, lambda t: t.number != victim.number and
                        3 + (t.user_attrs.get("sweeper.resumed_from") or {}).get("epoch", 0)
                        <= len(t.intermediate_values) <= EPOCHS - 15,
                        "the restarted worker trained 3 epochs")
    sweep.kill()
    sweep.communicate(timeout=60)
    assert _gone(running.user_attrs["sweeper.pid"]), "the worker outlived its controller"

    # 4. The same command finishes the sweep.
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    trials = {t.number: t for t in load(store, SPACE).trials}
    assert sum(t.state == State.COMPLETE for t in trials.values()) == TRIALS  # the budget, exactly
    assert not [t for t in trials.values() if t.state in (State.RUNNING, State.WAITING)]
    cuts = {"stop": 0, "kill": 0}
    for retry in trials.values():
        history = retry.system_attrs.get("retry_history")
        if not history:
            continue
        cut = trials[history[-1]]
        reached = len(cut.intermediate_values)
        resumed = retry.user_attrs.get("sweeper.resumed_from")
        assert resumed, {n: (t.state.name, len(t.intermediate_values), t.user_attrs.get(
            "sweeper.resumed_from"), t.user_attrs.get("sweeper.fail_reason"))
            for n, t in trials.items()}
        reason = cut.user_attrs["sweeper.fail_reason"]
        if "killed" in reason or "died" in reason:  # nothing written at the kill
            cuts["kill"] += 1
            assert written.get(cut.number, 0) <= resumed["epoch"] <= reached, (reason, resumed)
        else:  # a stop request writes the last epoch done
            cuts["stop"] += 1
            assert resumed["epoch"] == reached, (reason, resumed, reached)
        assert resumed["trial"] in history and resumed["seconds"] > 0
        if retry.state == State.COMPLETE:
            assert retry.user_attrs["sweeper.epochs_run"] == EPOCHS - resumed["epoch"]
        values = [retry.intermediate_values[step] for step in sorted(retry.intermediate_values)]
        assert values[:resumed["epoch"]] == \
            [cut.intermediate_values[step] for step in range(1, resumed["epoch"] + 1)]
    assert cuts == {"stop": 2, "kill": 1}, {n: t.user_attrs.get("sweeper.fail_reason")
                                            for n, t in trials.items()}
    assert written, "the worker was killed after a checkpoint was written"
    assert "resumed from checkpoints" in done.stdout
    status = subprocess.run([sys.executable, "-m", "sweeper", "status", SPACE, "--storage", store],
                            capture_output=True, text=True, timeout=120)
    assert f"{cuts['stop'] + cuts['kill']} trials resumed from checkpoints" in status.stdout, \
        status.stdout + status.stderr
    assert not list((project / "storage" / "checkpoints").rglob("*.npz"))
