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


def test_a_worker_keeps_the_space_as_stored_while_seeding_its_own_sampler(tmp_path):
    """Each worker draws from its own sampler stream (seed + 1000 x worker + trials so far), but
    its space keeps the stored fingerprint: checkpoints are checked against it, and a space that
    changed with the trial count would refuse every retry's checkpoint."""
    from sweeper.space import load_space
    from sweeper.sweep.studies import prepare_study
    from sweeper.worker.loop import open_study

    url = f"sqlite:///{tmp_path / 'store.db'}"
    space = load_space("cnn_lr")  # its sampler has a seed
    _, created = prepare_study(space, url, "cnn_lr", trials=4)
    created.enqueue_trial({"learning_rate": 1e-3})  # one more trial: another seed
    seen = []
    for worker in ("0", "1"):
        study, loaded, _ = open_study(url, "cnn_lr", worker)
        seen.append(int(study.sampler._rng.rng.get_state()[1][0]))  # the seed it was given
        assert loaded.fingerprint == created.user_attrs[keys.SPACE_HASH] == space.fingerprint
        assert loaded.config["sampler"]["seed"] == 0
    assert seen == [0 + 1, 1000 + 1]  # base seed + 1000 x worker + 1 trial in the study
