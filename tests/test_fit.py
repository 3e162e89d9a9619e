"""A trial's training (sweeper.pipeline.train.fit), with a real Keras model, a real Optuna trial
and a real checkpoint on disk.

The train step is traced once per trial, a short last batch included. A stop request: after a
short epoch the epoch in progress is finished and its end written, with no copy of the state
kept at the epochs before; after a long one the trial is cut within a batch and the copy kept at
the last epoch's end is written; a trial the pruner stops at that epoch's end ends pruned, not
cut."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import optuna
import pytest

from sweeper.pipeline import train
from sweeper.pipeline.checkpoint import Checkpoint, model_arrays

ROWS, BATCH, EPOCHS = 64, 8, 4
STEPS = ROWS // BATCH


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    return SimpleNamespace(x_train=x, y_train=y, x_val=x[:16], y_val=y[:16])


def _model():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dropout(0.1), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    return model


class _PruneAtEpoch(optuna.pruners.BasePruner):
    def __init__(self, step: int):
        self.step = step

    def prune(self, study, trial) -> bool:
        return trial.last_step == self.step


def _cut(tmp_path, monkeypatch, stop_wait_s: float, pruner=None):
    """Trains with a stop request from epoch 3's third batch on; returns what it left."""
    monkeypatch.setattr(train, "STOP_WAIT_S", stop_wait_s)
    kept: list[list[np.ndarray]] = []

    def counted_copy(model):
        kept.append(model_arrays(model))
        return kept[-1]

    monkeypatch.setattr(train, "model_arrays", counted_copy)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    trial = study.ask()
    batches = itertools.count(1)
    checkpoint = Checkpoint(tmp_path / "checkpoint")
    model = _model()
    outcome = "completed"
    try:
        reporter = train.fit(model, _data(), trial, BATCH, EPOCHS, "macro",
                             should_stop=lambda: next(batches) > 2 * STEPS + 2, seed=1,
                             checkpoint=checkpoint, checkpoint_every_s=1e9)
        outcome = "pruned" if reporter.pruned else outcome
    except train.TrialInterrupted:
        outcome = "cut"
    now = model_arrays(model)
    saved, why_not = checkpoint.read(model)
    written = model_arrays(model) if saved is not None else None
    return SimpleNamespace(outcome=outcome, saved=saved, why_not=why_not, kept=kept, now=now,
                           written=written, reported=sorted(trial.storage.get_trial(
                               trial._trial_id).intermediate_values))


def test_the_train_step_is_traced_once_per_trial():
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("counts TensorFlow's traces; other backends compile the step their own way")
    model = _model()
    traced = []

    def train_step(data):  # runs in Python only while TensorFlow traces it
        traced.append(1)
        return type(model).train_step(model, data)

    model.train_step = train_step
    data = _data()
    short = SimpleNamespace(**{**vars(data), "x_train": data.x_train[:60],
                               "y_train": data.y_train[:60]})  # a last batch of 4 rows
    trial = optuna.create_study(direction="maximize").ask()
    train.fit(model, short, trial, BATCH, 2, "macro", seed=1)
    assert model.optimizer.iterations.numpy() == 2 * 8  # it trained every batch
    assert len(traced) == 1


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_after_a_short_epoch_a_stop_finishes_the_epoch_in_progress_and_writes_its_end(
        tmp_path, monkeypatch):
    found = _cut(tmp_path, monkeypatch, stop_wait_s=60)
    assert found.outcome == "cut" and found.why_not is None
    assert found.saved.epoch == 3 and found.reported == [1, 2, 3]
    assert len(found.kept) == 1  # only at the cut: none at the end of epochs 1 and 2
    assert _same(found.written, found.now)  # the state the model stood at, at epoch 3's end


def test_after_a_long_epoch_a_stop_cuts_within_a_batch_and_writes_the_last_epoch_kept(
        tmp_path, monkeypatch):
    found = _cut(tmp_path, monkeypatch, stop_wait_s=0)
    assert found.outcome == "cut" and found.why_not is None
    assert found.saved.epoch == 2 and found.reported == [1, 2]
    assert len(found.kept) == 2  # at the end of every epoch
    assert _same(found.written, found.kept[-1])
    assert not _same(found.written, found.now)  # epoch 3 had trained on since


def test_a_trial_pruned_at_the_end_of_the_epoch_a_stop_finished_ends_pruned(
        tmp_path, monkeypatch):
    found = _cut(tmp_path, monkeypatch, stop_wait_s=60, pruner=_PruneAtEpoch(3))
    assert found.outcome == "pruned" and found.reported == [1, 2, 3]
    assert found.saved is None and not found.kept  # nothing to resume
