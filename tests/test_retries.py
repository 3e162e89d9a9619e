"""A trial cut short is failed with its reason and queued to run again exactly once, and it never
costs a budget slot: not when the store refuses the retry (a full disk between the two writes), not
when the process dies between them. On every store; no TensorFlow."""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
import sys

import optuna
import pytest
from sqlalchemy import event

from sweeper.storage.counts import count_trials
from sweeper.storage.errors import store_errors
from sweeper.storage.rdb import MAX_RETRIES, open_storage
from sweeper.sweep.host_workers import ran_here_and_gone
from sweeper.worker import retries
from sweeper.worker.retries import fail_and_requeue, mark, pending, queue_pending

optuna.logging.set_verbosity(optuna.logging.WARNING)
State = optuna.trial.TrialState
X = {"x": optuna.distributions.FloatDistribution(0, 1)}


def _dead_pid() -> int:
    """The pid of a process of this machine that has ended."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def _study(url: str, name: str):
    storage = open_storage(url, heartbeat_s=None)
    return storage, optuna.create_study(storage=storage, study_name=name)


def _running(study, storage, pid: int):
    """A trial a worker of this machine (process `pid`) is running."""
    trial = study.ask(X)
    storage.set_trial_user_attr(trial._trial_id, "sweeper.host", socket.gethostname())
    storage.set_trial_user_attr(trial._trial_id, "sweeper.pid", pid)
    return trial


def _retries_of(study, number: int) -> list:
    return [t for t in study.get_trials() if t.system_attrs.get("retry_history", [None])[-1]
            == number]


def test_a_cut_short_trial_runs_again_once_and_keeps_its_slot(storage_url):
    storage, study = _study(storage_url, "requeue")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    trial = _running(study, storage, _dead_pid())
    assert fail_and_requeue(study, storage, trial._trial_id, "interrupted: the worker was killed")
    failed = storage.get_trial(trial._trial_id)
    assert failed.state == State.FAIL
    assert failed.user_attrs["sweeper.fail_reason"] == ("interrupted: the worker was killed; "
                                                       "queued to run again")
    assert failed.user_attrs["sweeper.requeue"] == failed.number
    [retry] = _retries_of(study, failed.number)
    assert retry.state == State.WAITING and retry.params == failed.params
    counts = count_trials(storage, study._study_id)
    assert (counts.claimed, counts.finished, counts.waiting) == (3, 2, 1)

    # A second closer (a heartbeat check, the controller) finds it closed and queues nothing.
    assert not fail_and_requeue(study, storage, trial._trial_id, "again")
    assert queue_pending(study, storage, lambda t: True) == 0
    assert len(_retries_of(study, failed.number)) == 1
    # The retry inherited the mark, but a mark names its own trial: it is not pending.
    assert pending(storage, study._study_id) == []


def test_a_death_between_failing_and_queueing_is_repaired_once(storage_url, monkeypatch):
    storage, study = _study(storage_url, "repair")
    gone, alive = _running(study, storage, _dead_pid()), _running(study, storage, _dead_pid())
    for trial in (gone, alive):  # failed, and the process died before it queued the retry
        mark(storage, trial._trial_id, "interrupted: the worker was stopped")
        storage.set_trial_state_values(trial._trial_id, State.FAIL)
    assert count_trials(storage, study._study_id).claimed == 2
    assert sorted(pending(storage, study._study_id)) == sorted(
        [gone._trial_id, alive._trial_id])

    # Young, and its process maybe still about to queue it: left alone...
    assert queue_pending(study, storage, lambda t: t.number == gone.number) == 1
    assert len(_retries_of(study, gone.number)) == 1 and not _retries_of(study, alive.number)
    # ...until it is older than the grace period.
    monkeypatch.setattr(retries, "PENDING_GRACE_S", 0)
    assert queue_pending(study, storage, lambda t: False) == 1
    assert queue_pending(study, storage, lambda t: True) == 0
    counts = count_trials(storage, study._study_id)
    assert (counts.claimed, counts.finished, counts.waiting, counts.retries) == (2, 0, 2, 2)


def test_a_trial_retried_too_often_is_not_queued_again(storage_url):
    storage, study = _study(storage_url, "exhausted")
    trial = study.ask(X)
    storage.set_trial_system_attr(trial._trial_id, "retry_history", list(range(MAX_RETRIES)))
    assert fail_and_requeue(study, storage, trial._trial_id, "interrupted: the worker was killed")
    failed = storage.get_trial(trial._trial_id)
    assert failed.user_attrs["sweeper.fail_reason"].endswith(
        f"not queued again (tried {MAX_RETRIES + 1} times)")
    assert "sweeper.requeue" not in failed.user_attrs
    assert not study.get_trials(states=(State.WAITING,))
    assert pending(storage, study._study_id) == []


def _disk_full_from(engine, statement: str):
    """From the first statement matching `statement` on, the store refuses every write the way
    SQLite does when the disk is full (reads go on). Returns a function that frees the disk."""
    full = []

    def refuse(conn, cursor, text, parameters, context, executemany):
        if re.match(statement, text.strip(), re.IGNORECASE):
            full.append(True)
        if full and re.match(r"(INSERT|UPDATE|DELETE)\b", text.strip(), re.IGNORECASE):
            raise sqlite3.OperationalError("database or disk is full")

    event.listen(engine, "before_cursor_execute", refuse)
    return lambda: event.remove(engine, "before_cursor_execute", refuse)


@pytest.mark.parametrize("refused", [r"INSERT INTO trials\b", r"UPDATE trials SET"])
def test_a_full_disk_between_the_two_writes_costs_no_budget_slot(tmp_path, refused):
    """Refused at the retry (the trial is FAIL and marked) or at the fail itself (still RUNNING):
    either way the slot stays one, and the next sweep runs the trial again exactly once."""
    url = f"sqlite:///{tmp_path / 'full.db'}"
    storage, study = _study(url, "full")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    trial = _running(study, storage, _dead_pid())
    free_the_disk = _disk_full_from(storage.engine, refused)
    with pytest.raises(store_errors()) as caught:
        fail_and_requeue(study, storage, trial._trial_id, "interrupted: the store could not be "
                         "written")
    assert "database or disk is full" in str(caught.value.__cause__ or caught.value)
    assert count_trials(storage, study._study_id).claimed == 3  # no slot lost
    free_the_disk()

    # The next sweep's start-up: a trial of a worker gone from this machine is closed, then
    # whatever a full disk kept from being queued is queued.
    for running in study.get_trials(states=(State.RUNNING,)):
        if ran_here_and_gone(running):
            fail_and_requeue(study, storage, running._trial_id, "the worker that ran it is gone")
    queue_pending(study, storage, ran_here_and_gone)
    [retry] = _retries_of(study, trial.number)
    assert retry.state == State.WAITING and retry.params == storage.get_trial(
        trial._trial_id).params
    counts = count_trials(storage, study._study_id)
    assert (counts.claimed, counts.finished, counts.failed, counts.retries) == (3, 2, 1, 1)
