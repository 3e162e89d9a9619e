"""Trials cut short by something other than themselves run again, and never cost a budget slot.

A trial cut short by a signal, a dead worker, a lost controller or a store outage is failed with
its reason and queued to run again with the same params: Optuna's retry, a WAITING trial whose
system attribute `retry_history` ends with the failed trial's number, at most MAX_RETRIES times per
original trial. The retry takes over the failed trial's budget slot (storage.TrialCounts).

Failing a trial and queueing its retry are two writes. If the store refuses the second (the disk
filled up in between) or the process dies between them, the failed trial would hold a budget slot
that nothing runs. So a trial is marked before it is failed (keys.REQUEUE = its own number: a retry
inherits its original's attributes and so never looks marked itself), and `queue_pending` queues
every marked failed trial that has no retry yet. Controllers call it when a sweep starts, at each
heartbeat check and before they call a sweep finished, under the budget lock so that two of them
never queue the same trial twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from sqlalchemy import text

from sweeper import keys
from sweeper.storage.counts import state_name
from sweeper.storage.locks import budget_lock
from sweeper.storage.rdb import MAX_RETRIES, retry_callback

# A marked trial younger than this may still be getting its retry from the process that failed
# it (the very next write); older, or failed by a process that is gone, it never will.
PENDING_GRACE_S = 60


def will_retry(trial) -> bool:
    """Whether a failed `trial` (a FrozenTrial) would be queued again."""
    return len(trial.system_attrs.get(keys.RETRY_HISTORY, [])) < MAX_RETRIES


def mark(storage, trial_id: int, reason: str) -> None:
    """Gives a RUNNING trial its fail reason and, when it will be retried, the mark that makes
    sure it is (see the module's docstring). Call before the trial is failed."""
    trial = storage.get_trial(trial_id)
    if will_retry(trial):
        storage.set_trial_user_attr(trial_id, keys.FAIL_REASON, f"{reason}; queued to run again")
        storage.set_trial_user_attr(trial_id, keys.REQUEUE, trial.number)
    else:
        storage.set_trial_user_attr(trial_id, keys.FAIL_REASON,
                                    f"{reason}; not queued again (tried {MAX_RETRIES + 1} times)")


def fail_and_requeue(study, storage, trial_id: int, reason: str) -> bool:
    """Fails a RUNNING trial with `reason` and queues it again. False when another process
    closed it first (a heartbeat check, say), which then queued it itself."""
    import optuna

    try:
        mark(storage, trial_id, reason)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    queue_retry(study, storage, trial_id)
    return True


def queue_retry(study, storage, trial_id: int) -> None:
    """Queues the failed trial again unless it already has its retry or used up its retries."""
    trial = storage.get_trial(trial_id)
    if trial.number not in retried_numbers(storage, keys.study_id(study)):
        retry_callback()(study, trial)


# Optuna's own tables, read directly: two small queries instead of loading every trial.
_MARKED = text(
    "SELECT t.trial_id, t.number, t.state, a.value_json "
    "FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
    "WHERE t.study_id = :study_id AND a.key = :key")
_HISTORIES = text(
    "SELECT a.value_json FROM trial_system_attributes a JOIN trials t ON a.trial_id = t.trial_id "
    f"WHERE t.study_id = :study_id AND a.key = '{keys.RETRY_HISTORY}'")


def retried_numbers(storage, study_id: int) -> set[int]:
    """Numbers of the trials that already have a retry."""
    with keys.rdb_of(storage).engine.connect() as conn:
        histories = [json.loads(v) for (v,) in conn.execute(_HISTORIES, {"study_id": study_id})]
        conn.rollback()
    return {history[-1] for history in histories if history}


def pending(storage, study_id: int) -> list[int]:
    """Ids of the marked failed trials that have no retry."""
    with keys.rdb_of(storage).engine.connect() as conn:
        rows = list(conn.execute(_MARKED, {"study_id": study_id, "key": keys.REQUEUE}))
        conn.rollback()
    marked = {number: trial_id for trial_id, number, state, value in rows
              if state_name(state) == "FAIL" and json.loads(value) == number}
    if not marked:
        return []
    retried = retried_numbers(storage, study_id)
    return [trial_id for number, trial_id in marked.items() if number not in retried]


def queue_pending(study, storage, is_gone: Callable[[object], bool]) -> int:
    """Queues the retries that a full disk or a death kept from being queued (see the module's
    docstring). `is_gone(frozen_trial)` says whether the process that failed it has gone away,
    so its retry need not wait PENDING_GRACE_S. Returns how many it queued."""
    if not pending(storage, keys.study_id(study)):
        return 0  # the usual case: no lock, two small reads
    lock = budget_lock(keys.rdb_of(storage), study.study_name)
    lock.acquire()
    try:
        queued = 0
        for trial_id in pending(storage, keys.study_id(study)):
            trial = storage.get_trial(trial_id)
            failed = trial.datetime_complete
            old = failed is None or time.time() - failed.timestamp() > PENDING_GRACE_S
            if old or is_gone(trial):
                retry_callback()(study, trial)
                queued += 1
        return queued
    finally:
        lock.release()
