"""The shared trial budget, counted from the database itself: every worker on every machine
answers 'is a slot free?' from the same numbers."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from sqlalchemy import text

from sweeper import keys
from sweeper.storage import sqlite


@dataclass(frozen=True)
class TrialCounts:
    """Trials of one study by state. `retries` counts trials created to retry a failed one."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    retries: int = 0

    @property
    def claimed(self) -> int:
        """Budget slots taken: every trial except the failed ones that a retry replaced."""
        return self.all - self.retries

    @property
    def all(self) -> int:
        """Every trial of the study, whatever its state."""
        return self.complete + self.pruned + self.failed + self.running + self.waiting

    @property
    def finished(self) -> int:
        """Slots whose trial has ended for good (complete, pruned, or failed and not retried)."""
        return self.claimed - self.running - self.waiting

    @property
    def failed_for_good(self) -> int:
        """Failed trials that no retry replaced."""
        return self.failed - self.retries

    def may_start(self, budget: int) -> bool:
        """A worker may ask for a trial: a retry waits, or a slot is free."""
        return self.waiting > 0 or self.claimed < budget

    def describe(self) -> str:
        return (f"complete {self.complete}, pruned {self.pruned}, failed "
                f"{self.failed_for_good}")


# Optuna's own tables, read directly, in one statement: loading every trial through the API to
# count them would cost each worker a full study download per trial.
_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
_COUNTS = text(
    "SELECT " + ", ".join(f"COUNT(CASE WHEN state = '{state}' THEN 1 END)" for state in _STATES)
    + ", (SELECT COUNT(*) FROM trial_system_attributes a JOIN trials t ON a.trial_id = t.trial_id"
    f" WHERE t.study_id = :study_id AND a.key = '{keys.FAILED_TRIAL}')"
    " FROM trials WHERE study_id = :study_id")


def count_trials(storage, study_id: int) -> TrialCounts:
    with sqlite.reading(), keys.rdb_of(storage).engine.connect() as conn:
        complete, pruned, failed, running, waiting, retries = conn.execute(
            _COUNTS, {"study_id": study_id}).one()
        conn.rollback()
    return TrialCounts(complete=complete, pruned=pruned, failed=failed, running=running,
                       waiting=waiting, retries=retries)


_RECENT = text(
    "SELECT datetime_start, datetime_complete FROM trials WHERE study_id = :study_id "
    "AND state IN ('COMPLETE', 'PRUNED') AND datetime_complete IS NOT NULL "
    "ORDER BY trial_id DESC LIMIT :n")


def recent_trial_seconds(storage, study_id: int, n: int = 10) -> list[float]:
    """How long the last `n` finished trials of the study took, newest first."""
    with sqlite.reading(), keys.rdb_of(storage).engine.connect() as conn:
        rows = list(conn.execute(_RECENT, {"study_id": study_id, "n": n}))
        conn.rollback()
    return [(_when(end) - _when(start)).total_seconds() for start, end in rows]


def _when(stored) -> datetime.datetime:
    """A datetime as read from the table (SQLite gives text)."""
    return stored if isinstance(stored, datetime.datetime) else \
        datetime.datetime.fromisoformat(str(stored))


def state_name(stored) -> str:
    """A trial state as read from the table: 'FAIL' (some drivers give 'TrialState.FAIL')."""
    return str(stored).rsplit(".", 1)[-1]


def study_counts(study) -> TrialCounts:
    return count_trials(keys.storage_of(study), keys.study_id(study))
