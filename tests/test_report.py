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
