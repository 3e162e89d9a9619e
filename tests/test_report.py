"""What `sweeper report` says about a study, from made-up trials (no TensorFlow): the
hyperparameter importances of each objective, judged in that objective's own direction, and the
hint under a Pareto front."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import optuna
import pytest

from sweeper.results.report import importances, pareto_lines

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(directions: list[str], names: list[str], name: str = "s") -> optuna.Study:
    """200 random trials where `high` decides the best F1 (the top F1 values all have a high
    `high`) and `low` decides the worst (every F1 below 0 has `low` < 0.2); `size` is the second
    objective's value where there is one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(study_name=name, directions=directions,
                                    sampler=optuna.samplers.RandomSampler(seed=0))
        study.set_metric_names(names)

    def objective(trial):
        high, low = trial.suggest_float("high", 0, 1), trial.suggest_float("low", 0, 1)
        size = trial.suggest_float("size", 0, 1)
        f1 = high - 10 * (low < 0.2)
        return f1 if len(directions) == 1 else (f1, size)

    study.optimize(objective, n_trials=200)
    return study


def _top(weights: dict) -> str:
    return max(weights, key=weights.get)


def test_importances_are_those_of_a_high_f1_not_a_low_one():
    """Optuna's default evaluator takes a given target as a loss: handed F1 as it is, it would
    tell what makes F1 low (here `low`)."""
    study = _study(["maximize"], ["f1"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing of Optuna's reaches the report's reader
        found = importances(study)
    assert [name for name, _ in found] == ["f1"]
    assert _top(found[0][1]) == "high", found


def test_a_multi_objective_study_gets_one_table_per_objective():
    study = _study(["maximize", "minimize"], ["f1", "size_kb"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = dict(importances(study))
    assert list(found) == ["f1", "size_kb"]
    assert _top(found["f1"]) == "high", found
    assert _top(found["size_kb"]) == "size", found


@pytest.mark.parametrize("study_name, option", [("cnn_compress", ""),
                                                ("cnn_compress-2", " --study cnn_compress-2")])
def test_the_pareto_hint_names_the_space_and_study(study_name, option):
    study = _study(["maximize", "minimize"], ["f1", "size_kb"], name=study_name)
    space = SimpleNamespace(name="cnn_compress", objectives=["f1", "size_kb"])
    hint = pareto_lines(study, space)[-1]
    assert f"sweeper best cnn_compress{option} --pick \"max f1 where size_kb <= ...\"" in hint


def test_a_resumed_trial_counts_all_its_epochs_and_the_training_it_was_spared():
    """A trial resumed at epoch 12 of 20 trained 8 in its run (`epochs_run`), but its model has
    20: the report's epoch counts, the retrain's epochs and the pruning savings use 20; the
    checkpoint's 30 s of training are what resuming spared."""
    from sweeper import keys
    from sweeper.results.report import pruning_savings
    from sweeper.trials import describe_resumed, epochs_reached

    resumed = SimpleNamespace(user_attrs={
        keys.EPOCHS_RUN: 8, keys.RESUMED_FROM: {"trial": 3, "epoch": 12, "seconds": 30.0},
        keys.SECONDS: {"train": 20.0}})
    plain = SimpleNamespace(user_attrs={keys.EPOCHS_RUN: 20, keys.SECONDS: {"train": 50.0}})
    assert [epochs_reached(t) for t in (resumed, plain)] == [20, 20]
    savings = pruning_savings([resumed, plain], max_epochs=20)
    assert (savings.epochs_trained, savings.epochs_unpruned) == (40, 40)
    assert savings.seconds_trained == 20.0 + 30.0 + 50.0
    assert describe_resumed([resumed, plain]) == \
        "1 trial resumed from checkpoints: 30s of training not done again"
    assert describe_resumed([plain]) is None
