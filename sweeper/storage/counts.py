"""The shared trial budget, counted from the database itself: every worker on every machine
answers 'is a slot free?' from the same numbers.

The budget is what a study runs: a retry takes its failed trial's slot, and trials imported by a
warm start (sweeper.sweep.warm_start) take none."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from sqlalchemy import text

from sweeper import keys
from sweeper.storage import sqlite


@dataclass(frozen=True)
class TrialCounts:
    """Trials of one study by state. `retries` counts trials created to retry a failed one,
    `imported` the finished trials a warm start brought in (counted in complete and pruned)."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    retries: int = 0
    imported_complete: int = 0
    imported_pruned: int = 0

    @property
    def imported(self) -> int:
        return self.imported_complete + self.imported_pruned

    @property
    def claimed(self) -> int:
        """Budget slots taken: every trial except the failed ones that a retry replaced and the
        imported ones."""
        return self.all - self.retries - self.imported

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
        return (f"complete {self.complete - self.imported_complete}, pruned "
                f"{self.pruned - self.imported_pruned}, failed {self.failed_for_good}"
                + (f"; {self.imported} imported" if self.imported else ""))


# Optuna's own tables, read directly, in one statement: loading every trial through the API to
# count them would cost each worker a full study download per trial.
_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
_MARKED = ("(SELECT COUNT(*) FROM {table} a JOIN trials t ON a.trial_id = t.trial_id"
           " WHERE t.study_id = :study_id AND a.key = '{key}'{state})")
_COUNTS = text(
    "SELECT " + ", ".join(f"COUNT(CASE WHEN state = '{state}' THEN 1 END)" for state in _STATES)
    + ", " + _MARKED.format(table="trial_system_attributes", key=keys.FAILED_TRIAL, state="")
    + "".join(", " + _MARKED.format(table="trial_user_attributes", key=keys.IMPORTED_FROM,
                                    state=f" AND t.state = '{state}'")
              for state in ("COMPLETE", "PRUNED"))
    + " FROM trials WHERE study_id = :study_id")


def count_trials(storage, study_id: int) -> TrialCounts:
    with sqlite.reading(), keys.rdb_of(storage).engine.connect() as conn:
        complete, pruned, failed, running, waiting, retries, imported_complete, imported_pruned = \
            conn.execute(_COUNTS, {"study_id": study_id}).one()
        conn.rollback()
    return TrialCounts(complete=complete, pruned=pruned, failed=failed, running=running,
                       waiting=waiting, retries=retries, imported_complete=imported_complete,
                       imported_pruned=imported_pruned)


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
