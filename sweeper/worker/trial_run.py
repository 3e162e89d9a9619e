"""One trial: ask -> run -> tell, and what became of it, as a value the worker's loop acts on.

The trial runs inside `study.optimize(n_trials=1)`: Optuna's heartbeats, which let other workers
fail the trial of a worker that died, work only there. What can happen:
- FINISHED: Optuna told the trial COMPLETE, PRUNED or FAIL (the model code raised, memory ran out,
  the loss became NaN). The trial's own doing: the loop counts it.
- INTERRUPTED: the worker was asked to stop mid-trial (a signal, its controller gone). The trial
  is marked for a retry before Optuna fails it (sweeper.worker.retries).
- STORE_LOST: the store failed during the trial. Not the trial's fault: the loop waits for the
  store, or stops the worker, and the trial runs again.
A user error (bad data or model code, which would fail every trial the same way) is raised, not
returned: the worker stops with it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sweeper import keys
from sweeper.errors import SweeperError
from sweeper.storage.errors import store_cause, store_errors
from sweeper.storage.locks import StoreLock
from sweeper.storage.rdb import on_next_claim
from sweeper.worker.retries import mark


class Ending(enum.Enum):
    FINISHED = "finished"
    INTERRUPTED = "interrupted"
    STORE_LOST = "store lost"


@dataclass(frozen=True)
class Finished:
    """What the loop needs of a finished trial, known without reading it back from the store."""

    number: int
    state: str  # COMPLETE, PRUNED or FAIL, as Optuna told it
    value: float | None = None  # the first objective's (F1)
    reason: str | None = None  # why it was pruned or failed
    others: tuple[float, ...] = ()  # the other objectives' values, in a multi-objective study

    def describe(self) -> str:
        detail = self.reason or (f"F1 {self.value:.4f}" if self.value is not None else "")
        if self.others and not self.reason:
            detail += " (" + ", ".join(f"{v:.4g}" for v in self.others) + ")"
        return f"trial {self.number} {self.state}: {detail}"


@dataclass(frozen=True)
class Outcome:
    ending: Ending
    trial: Any = None  # the optuna.Trial as it ran; None when none was created
    finished: Finished | None = None  # FINISHED: how it ended
    store_error: BaseException | None = None  # STORE_LOST: the store's own error


class _StoreLost(KeyboardInterrupt):
    """The store failed during a trial. A KeyboardInterrupt so Optuna's catch=(Exception,)
    lets it through (after marking the trial FAIL if it still can)."""


class _Attempt:
    """What the objective's wrapper learns while Optuna runs the one trial."""

    def __init__(self, objective, lock: StoreLock, interrupted_reason: Callable[[], str]):
        self.objective = objective
        self.lock = lock
        self.interrupted_reason = interrupted_reason
        self.trial: Any = None
        self.finished: Finished | None = None
        self.user_error: SweeperError | None = None

    def run(self, trial):
        import optuna

        self.lock.release()  # the trial exists now: other workers count it
        self.trial = trial
        try:
            value = self.objective(trial)
        except SweeperError as e:
            self.user_error = e
            raise
        except KeyboardInterrupt:  # marked while the trial can still be written to
            mark(trial.storage, keys.trial_id(trial), self.interrupted_reason())
            raise
        except store_errors() as e:
            raise _StoreLost() from e
        except optuna.TrialPruned as e:
            self.finished = Finished(trial.number, "PRUNED", reason=str(e) or None)
            raise
        except Exception as e:
            self.finished = Finished(trial.number, "FAIL", reason=_failure_reason(trial, e))
            _discard_checkpoint(trial)  # failed of itself: it does not run again
            raise
        self.finished = _returned(trial.number, value)
        return value


def _discard_checkpoint(trial) -> None:
    from sweeper.pipeline.checkpoint import Checkpoint, chain_folder, chain_start

    try:
        attrs = trial.storage.get_trial_system_attrs(keys.trial_id(trial))
    except store_errors():
        return  # the sweep's end removes it (checkpoint.remove_finished)
    Checkpoint(chain_folder(trial.study.study_name, chain_start(attrs, trial.number))).remove()


def _returned(number: int, value) -> Finished:
    """How Optuna tells a trial whose objective returned `value` (one number, or one per
    objective): anything not a number, or NaN, fails it."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    numbers = []
    for v in values:
        try:
            numbers.append(float(v))
        except (TypeError, ValueError):
            return Finished(number, "FAIL", reason=f"the objective returned {value!r}, not a number")
    if not numbers or any(math.isnan(v) for v in numbers):
        shown = "NaN" if len(numbers) == 1 else repr(value)
        return Finished(number, "FAIL", reason=f"the objective returned {shown}")
    return Finished(number, "COMPLETE", value=numbers[0], others=tuple(numbers[1:]))


def _failure_reason(trial, error: Exception) -> str:
    """The reason the objective stored on the trial (sweeper.failed_reason), else the error."""
    try:
        stored = trial.user_attrs.get(keys.FAIL_REASON)
    except store_errors():
        stored = None
    return stored or f"{type(error).__name__}: {error}"


def run_one(study, objective, lock: StoreLock, interrupted_reason: Callable[[], str]) -> Outcome:
    """Runs one trial of `study` with `objective`. `lock` (the budget lock, held when the
    budget is nearly spent) is released as soon as the trial exists in the store."""
    attempt = _Attempt(objective, lock, interrupted_reason)
    on_next_claim(keys.storage_of(study), lock.release)  # other workers count the trial then
    try:
        # No gc_after_trial: the worker's loop collects once after each trial, and freezes what
        # survives (sweeper.worker.loop). No callbacks: Optuna would read the finished trial back
        # from the store for them; the attempt knows how it ended.
        study.optimize(attempt.run, n_trials=1, catch=(Exception,))
    except (_StoreLost, AssertionError, *store_errors()) as e:
        # Optuna hides a store error behind its own AssertionError when it cannot write a
        # trial's result; an AssertionError with no store error behind it is a bug.
        cause = store_cause(e)
        if cause is None:
            raise
        return Outcome(Ending.STORE_LOST, attempt.trial, store_error=cause)
    except KeyboardInterrupt:
        return Outcome(Ending.INTERRUPTED, attempt.trial)
    finally:
        lock.release()
    if attempt.user_error is not None:
        raise attempt.user_error
    return Outcome(Ending.FINISHED, attempt.trial, finished=attempt.finished)
