"""One trial end to end in this process: real TensorFlow, a real study in a real SQLite store."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from sklearn.metrics import f1_score

from sweeper.pipeline.artifacts import artifact_store
from sweeper.space import parse_space
from sweeper.storage.rdb import open_storage

pytestmark = pytest.mark.slow

SPACE = """
dataset: {name: digits}
model: {name: cnn, filters: 8, conv_blocks: 2, augment_strength: 0.2}
training: {max_epochs: 3, batch_size: 64, seed: 5}
objective: {average: weighted}
pruner: none
params:
  learning_rate: {type: float, low: 0.001, high: 0.01, log: true}
  optimizer: {type: categorical, choices: [adam, sgd]}
  momentum: {type: float, low: 0.0, high: 0.9, when: {optimizer: sgd}}
"""


@pytest.fixture
def study(tmp_path, shared_cache, monkeypatch):
    monkeypatch.setenv("SWEEPER_CACHE_DIR", str(shared_cache))
    monkeypatch.setenv("SWEEPER_ARTIFACT_DIR", str(tmp_path / "artifacts"))
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    return optuna.create_study(storage=storage, study_name="one", direction="maximize")


def test_stored_f1_is_scikit_learns_on_the_models_predictions(study, tmp_path):
    from sweeper.pipeline.objective import run_trial

    space = parse_space(SPACE)
    study.enqueue_trial({"learning_rate": 0.008, "optimizer": "adam"})
    trial = study.ask()
    result = run_trial(trial, space, {"sweeper.worker": 0, "sweeper.cuda_visible_devices": ""})
    study.tell(trial, result.value)
    stored = study.trials[0]

    val_pred = np.asarray(result.model.predict(result.data.x_val, verbose=0)).argmax(-1)
    test_pred = np.asarray(result.model.predict(result.data.x_test, verbose=0)).argmax(-1)
    assert stored.value == pytest.approx(f1_score(result.data.y_val, val_pred, average="weighted"))
    assert stored.user_attrs["sweeper.test_f1"] == pytest.approx(
        f1_score(result.data.y_test, test_pred, average="weighted"))
    assert stored.user_attrs["sweeper.test_accuracy"] == pytest.approx(
        float(np.mean(test_pred == result.data.y_test)))
    # One report per epoch, the last being the objective value.
    assert sorted(stored.intermediate_values) == [1, 2, 3]
    assert stored.intermediate_values[3] == pytest.approx(stored.value)
    assert stored.user_attrs["sweeper.epochs_run"] == 3
    assert len(stored.user_attrs["sweeper.loss_history"]) == 3
    assert stored.user_attrs["sweeper.seed"] == 5 + trial.number
    seconds = stored.user_attrs["sweeper.seconds"]
    for stage in ("preprocess", "build", "train", "epochs", "f1", "report", "evaluate"):
        assert seconds[stage] >= 0
    # The parts of training add up to no more than the whole fit.
    assert seconds["epochs"] + seconds["f1"] + seconds["report"] <= seconds["train"] + 1e-3
    assert 0 < seconds["first_epoch"] <= seconds["epochs"]  # the model's trace is in the first
    # When fit was called, its first batch began and training ended: where a slot waits.
    timeline = stored.user_attrs["sweeper.timeline"]
    assert timeline["fit"] <= timeline["first_batch"] <= timeline["trained"]
    assert timeline["trained"] - timeline["first_batch"] <= seconds["train"] + 1e-3
    assert 0 < seconds["last_f1"] <= seconds["f1"]
    assert stored.user_attrs["sweeper.rss_mb"] > 0
    assert stored.user_attrs["sweeper.worker"] == 0
    assert stored.value > 0.3  # well above chance (0.1) after 3 epochs

    # The model kept as an artifact is the one that was scored.
    import keras
    from optuna.artifacts import download_artifact, get_all_artifact_meta

    names = {m.filename: m.artifact_id for m in get_all_artifact_meta(stored, storage=study._storage)}
    assert {f"confusion_matrix_trial_{trial.number}.png", f"per_class_trial_{trial.number}.csv",
            f"model_trial_{trial.number}.keras"} <= set(names)
    saved = tmp_path / "saved.keras"
    download_artifact(artifact_store=artifact_store(), artifact_id=names[f"model_trial_{trial.number}.keras"],
                      file_path=str(saved))
    reloaded = keras.models.load_model(saved)
    again = np.asarray(reloaded.predict(result.data.x_val, verbose=0)).argmax(-1)
    assert stored.value == pytest.approx(f1_score(result.data.y_val, again, average="weighted"))


def test_nan_loss_prunes_the_trial_with_its_reason(study, project):
    from sweeper.pipeline.objective import make_objective

    space = parse_space(SPACE.replace("model: {name: cnn, filters: 8, conv_blocks: 2, "
                                      "augment_strength: 0.2}",
                                      "model: {function: 'user_models:nan_model'}"))
    study.optimize(make_objective(space, {}), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["sweeper.prune_reason"] == "loss became nan at epoch 1"


def test_a_failing_trial_keeps_its_reason_and_the_worker_goes_on(study, project):
    from sweeper.pipeline.objective import make_objective

    space = parse_space(SPACE.replace("model: {name: cnn, filters: 8, conv_blocks: 2, "
                                      "augment_strength: 0.2}",
                                      "model: {function: 'user_models:out_of_memory_model'}"))
    study.optimize(make_objective(space, {}), n_trials=2, catch=(Exception,))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2
    reason = study.trials[0].user_attrs["sweeper.fail_reason"]
    assert reason.startswith("out of memory (ResourceExhaustedError): OOM when allocating")


def test_pruner_stops_a_hopeless_trial(study):
    from sweeper.pipeline.objective import make_objective

    space = parse_space(SPACE.replace("pruner: none", "pruner: {name: median, n_startup_trials: 1}")
                        .replace("low: 0.001, high: 0.01", "low: 0.000001, high: 0.01"))
    study.pruner = space.make_pruner()  # as a worker loads the study
    study.enqueue_trial({"learning_rate": 0.01, "optimizer": "adam"})
    study.enqueue_trial({"learning_rate": 0.000001, "optimizer": "sgd", "momentum": 0.0})
    study.optimize(make_objective(space, {}), n_trials=2)
    good, hopeless = study.trials
    assert good.state == optuna.trial.TrialState.COMPLETE
    assert hopeless.state == optuna.trial.TrialState.PRUNED
    assert hopeless.user_attrs["sweeper.prune_reason"].startswith("pruned after epoch 1")
    assert hopeless.user_attrs["sweeper.epochs_run"] == 1


def test_a_trial_that_trained_all_its_epochs_is_not_pruned(study):
    """The same hopeless trial as above, with one epoch: the pruner is not asked after the last
    epoch (stopping the trial then saves nothing), so it completes."""
    from sweeper.pipeline.objective import make_objective

    space = parse_space(SPACE.replace("pruner: none", "pruner: {name: median, n_startup_trials: 1}")
                        .replace("low: 0.001, high: 0.01", "low: 0.000001, high: 0.01")
                        .replace("max_epochs: 3", "max_epochs: 1"))
    study.pruner = space.make_pruner()
    study.enqueue_trial({"learning_rate": 0.01, "optimizer": "adam"})
    study.enqueue_trial({"learning_rate": 0.000001, "optimizer": "sgd", "momentum": 0.0})
    study.optimize(make_objective(space, {}), n_trials=2)
    good, hopeless = study.trials
    assert hopeless.intermediate_values[1] < good.intermediate_values[1]  # the pruner's case
    assert hopeless.state == optuna.trial.TrialState.COMPLETE
    assert hopeless.user_attrs["sweeper.epochs_run"] == 1


def test_the_training_pipeline_is_not_autotuned():
    """Nothing in it is tunable, and an autotuned pipeline made fit's end wait ~2 s for its tuning
    thread in about half the trials of two workers sharing two cores (make bench, row 4)."""
    from types import SimpleNamespace

    from sweeper.pipeline import train

    data = SimpleNamespace(x_train=np.zeros((10, 8, 8, 1), np.float32), y_train=np.zeros(10, int))
    dataset = train.training_input(data, batch_size=4, seed=0, epochs=2)["x"]
    assert dataset.options().autotune.enabled is False
    assert sum(1 for _ in dataset) == 2 * 3  # every epoch's batches, in one pass


def test_large_training_splits_stream_from_the_memory_mapped_cache(study, monkeypatch):
    """Above STREAM_BYTES, fit gets batches sliced from the mapped arrays (Keras would copy whole
    arrays into tensors in every worker); training still learns and reports every epoch."""
    from sweeper.pipeline import train
    from sweeper.pipeline.objective import run_trial

    monkeypatch.setattr(train, "STREAM_BYTES", 0)
    seen = []
    original = train.EpochBatches.__getitem__

    def spy(self, index):
        seen.append(index)
        return original(self, index)

    monkeypatch.setattr(train.EpochBatches, "__getitem__", spy)
    space = parse_space(SPACE)
    study.enqueue_trial({"optimizer": "adam", "learning_rate": 0.005})
    trial = study.ask()
    result = run_trial(trial, space, {"sweeper.worker": 0}, save_artifacts=False)
    assert isinstance(result.data.x_train, np.memmap)  # the cache hands out mapped arrays
    steps = -(-len(result.data.x_train) // 64)
    assert len(seen) >= 3 * steps  # every batch of 3 epochs came through the stream
    assert result.value > 0.3  # well above chance (0.1) after 3 epochs


@pytest.mark.parametrize("artifacts", ["in line", "in the background"])
def test_what_earlier_trials_leave_is_out_of_the_collectors_sight(study, artifacts):
    """TensorFlow keeps every trial's traced graphs (thousands of objects). The worker's loop
    collects after each trial and freezes what survives, so the objects each later collection
    scans do not pile up trial after trial (pruned trials included: their exception no longer
    holds the model then). With artifacts written in the background, the first trial's model is
    held by its job past its trial (nothing is frozen then): the freeze after the next trial
    takes what survives, and the count is flat from there."""
    import gc

    from sweeper.pipeline.bookkeeping import Bookkeeper
    from sweeper.pipeline.objective import make_objective
    from sweeper.worker.loop import TrialLoop

    space = parse_space(SPACE.replace("max_epochs: 3", "max_epochs: 2")
                        .replace("pruner: none", "pruner: {name: median, n_startup_trials: 1}"))
    study.pruner = space.make_pruner()
    keeper = Bookkeeper() if artifacts == "in the background" else None
    objective = make_objective(space, {}, None, keeper)
    tracked = []

    def counting(trial):
        tracked.append(len(gc.get_objects()))  # what a collection would scan now
        return objective(trial)

    for params in ([{"learning_rate": 0.01, "optimizer": "adam"}]
                   + [{"learning_rate": 0.001, "optimizer": "sgd", "momentum": 0.0}] * 4):
        study.enqueue_trial(params)
    loop = TrialLoop(study, counting, 5, deadline=None, recycle_after=None, max_memory_mb=None,
                     bookkeeper=keeper)
    try:
        assert loop.run() == 0
    finally:
        if keeper is not None:
            keeper.drain()
    assert [t.state.name for t in study.trials].count("PRUNED") >= 1
    growth = [later - earlier for earlier, later in zip(tracked[1:], tracked[2:])]
    assert max(growth) < 3000, f"objects scanned by each collection grew by {growth} per trial"
