"""What the worker's loop learns of a finished trial without reading it back from the store
(sweeper.worker.trial_run.Finished) agrees with what Optuna stored, for every way a trial ends."""

from __future__ import annotations

import optuna
import pytest

from sweeper import keys
from sweeper.storage.locks import budget_lock
from sweeper.storage.rdb import open_storage
from sweeper.worker.trial_run import Ending, run_one

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _returns(value):
    return lambda trial: value


def _pruned(trial):
    raise optuna.TrialPruned("pruned after epoch 2: behind the others")


def _fails_with_reason(trial):
    trial.set_user_attr(keys.FAIL_REASON, "out of memory (ResourceExhaustedError): OOM; try a "
                        "smaller batch_size or model")
    raise RuntimeError("OOM when allocating tensor")


def _fails_plainly(trial):
    raise ValueError("bad shape")


@pytest.mark.parametrize("objective, state, value, reason", [
    (_returns(0.75), "COMPLETE", 0.75, None),
    (_returns(float("nan")), "FAIL", None, "the objective returned NaN"),
    (_returns("high"), "FAIL", None, "the objective returned 'high', not a number"),
    (_pruned, "PRUNED", None, "pruned after epoch 2: behind the others"),
    (_fails_with_reason, "FAIL", None, "out of memory (ResourceExhaustedError): OOM; try a "
                                       "smaller batch_size or model"),
    (_fails_plainly, "FAIL", None, "ValueError: bad shape"),
])
def test_finished_trial_matches_the_store(tmp_path, objective, state, value, reason):
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_s=5)
    study = optuna.create_study(storage=storage, study_name="ends", direction="maximize")
    outcome = run_one(study, objective, budget_lock(storage, "ends"), lambda: "interrupted")
    assert outcome.ending is Ending.FINISHED
    finished = outcome.finished
    stored = study.trials[-1]
    assert (finished.number, finished.state, finished.value) == (stored.number, stored.state.name,
                                                                 stored.value)
    assert (finished.state, finished.value, finished.reason) == (state, value, reason)
    assert finished.describe().startswith(f"trial {stored.number} {state}: ")
