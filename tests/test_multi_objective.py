"""Multi-objective studies: metrics and their bounds read from text, studies made with one label per
objective, and per-epoch pruning that Optuna alone refuses (sweeper.pipeline.multi_objective). No
TensorFlow: the objectives here report made-up F1 values."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest

from sweeper import keys
from sweeper.metrics import Bound, BoundError, metric_value, parse_bound, parse_pick
from sweeper.pipeline.multi_objective import load_prunable_study, report, should_prune
from sweeper.space import parse_space
from sweeper.storage.locks import budget_lock
from sweeper.sweep.studies import prepare_study
from sweeper.worker.trial_run import Ending, run_one

optuna.logging.set_verbosity(optuna.logging.ERROR)

SPACE = """
model: {name: cnn}
training: {max_epochs: 8}
compress: {quantize: int8}
objectives: [f1, size_kb]
pruner: {name: successive_halving, min_resource: 2, reduction_factor: 2, n_startup_trials: 0}
sampler: {name: tpe, seed: 0, n_startup_trials: 4}
params:
  learning_rate: {type: float, low: 0.001, high: 0.1, log: true}
  sparsity: {type: float, low: 0.0, high: 0.9}
"""


@pytest.mark.parametrize("text, bound", [
    ("size_kb <= 64", Bound("size_kb", "<=", 64.0)),
    ("  latency_ms<0.05 ", Bound("latency_ms", "<", 0.05)),
    ("f1 >= 0.9", Bound("f1", ">=", 0.9)),
    ("params > 1e3", Bound("params", ">", 1000.0)),
])
def test_bounds_are_read_from_text(text, bound):
    assert parse_bound(text) == bound


@pytest.mark.parametrize("text, told", [
    ("size_kb == 64", "is not a bound"),
    ("size_kb <= ", "is not a bound"),
    ("weight <= 3", "'weight' is not a metric"),
    ("size_kb <= 6x4", "'6x4' in 'size_kb <= 6x4' is not a number"),
    ("size_kb <= nan", "not finite"),
    (64, "is not a bound"),
])
def test_bad_bounds_say_what_is_wrong(text, told):
    with pytest.raises(BoundError, match=told):
        parse_bound(text)


def test_picks_are_read_from_text():
    pick = parse_pick("max f1 where size_kb <= 64 and latency_ms < 0.1")
    assert (pick.goal, pick.metric) == ("max", "f1")
    assert pick.bounds == (Bound("size_kb", "<=", 64.0), Bound("latency_ms", "<", 0.1))
    assert str(pick) == "max f1 where size_kb <= 64 and latency_ms < 0.1"
    assert parse_pick("min size_kb").bounds == ()
    for bad, told in (("best f1", "is not a pick"), ("max accuracy", "'accuracy' is not a metric"),
                      ("max f1 where size_kb", "is not a bound")):
        with pytest.raises(BoundError, match=told):
            parse_pick(bad)


def _trial(number, f1, size_bytes):
    return SimpleNamespace(number=number, values=[f1, size_bytes / 1024],
                           user_attrs={keys.COMPRESSED_VAL_F1: f1,
                                       keys.COMPRESSED_GZIP_BYTES: size_bytes})


def test_a_pick_chooses_the_best_point_within_its_bounds():
    front = [_trial(0, 0.97, 90 * 1024), _trial(1, 0.95, 40 * 1024), _trial(2, 0.90, 10 * 1024)]
    assert parse_pick("max f1").choose(front).number == 0
    assert parse_pick("max f1 where size_kb <= 64").choose(front).number == 1
    assert parse_pick("min size_kb where f1 >= 0.94").choose(front).number == 1
    assert parse_pick("max f1 where size_kb <= 5").choose(front) is None
    assert metric_value("size_kb", front[1]) == 40.0


def test_a_study_of_several_objectives_is_made_with_a_label_for_each(tmp_path):
    space = parse_space(SPACE, name="mo")
    _, study = prepare_study(space, f"sqlite:///{tmp_path / 'mo.db'}", "mo", trials=10)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    # optuna-dashboard names the Pareto-front axes with these
    assert study.metric_names == ["val F1 (macro)", "size KiB (gzipped)"]


def _epochs_then_values(trial):
    """Reports F1 per epoch as a training run would; a low learning rate learns slowly."""
    learning_rate = trial.suggest_float("learning_rate", 1e-3, 1e-1, log=True)
    sparsity = trial.suggest_float("sparsity", 0.0, 0.9)
    f1 = 0.0
    for epoch in range(1, 9):
        f1 = min(0.99, epoch * learning_rate * 2)
        report(trial, f1, epoch)
        if should_prune(trial):
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")
    return f1, 100 * (1 - sparsity)


def test_a_multi_objective_study_prunes_on_per_epoch_f1(tmp_path):
    """Optuna alone raises NotImplementedError at report and should_prune here, and its TPE
    raises RuntimeError ranking pruned trials of a multi-objective study (it asks the study's one
    direction): sweeper's study answers with F1's."""
    space = parse_space(SPACE, name="mo")
    url = f"sqlite:///{tmp_path / 'mo.db'}"
    storage, _ = prepare_study(space, url, "mo", trials=16)
    study = load_prunable_study("mo", storage, space.make_sampler(), space.make_pruner())
    for _ in range(16):
        outcome = run_one(study, _epochs_then_values, budget_lock(storage, "mo"), lambda: "stop")
        assert outcome.ending is Ending.FINISHED
        assert outcome.finished.state != "FAIL", outcome.finished.reason
    trials = study.get_trials()
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned and complete
    for t in pruned:  # no values: never on the Pareto front
        assert t.values is None and t.intermediate_values
    for t in complete:
        assert len(t.values) == 2 and sorted(t.intermediate_values) == list(range(1, 9))
    assert set(t.number for t in study.best_trials) <= set(t.number for t in complete)


def test_a_finished_multi_objective_trial_keeps_every_value(tmp_path):
    space = parse_space(SPACE, name="mo")
    storage, _ = prepare_study(space, f"sqlite:///{tmp_path / 'mo.db'}", "mo", trials=1)
    study = load_prunable_study("mo", storage)
    outcome = run_one(study, lambda trial: (0.91, 12.5), budget_lock(storage, "mo"), lambda: "x")
    assert (outcome.finished.value, outcome.finished.others) == (0.91, (12.5,))
    assert outcome.finished.describe() == "trial 0 COMPLETE: F1 0.9100 (12.5)"
    assert study.trials[0].values == [0.91, 12.5]


def _sized(size: int, f1: float):
    """An objective whose model keeps `size` weights and scores `f1` at every epoch."""

    def objective(trial):
        trial.suggest_float("learning_rate", 1e-3, 1e-1, log=True)
        trial.set_user_attr(keys.EXPECTED_NONZERO, size)
        for epoch in range(1, 9):
            report(trial, f1, epoch)
            if should_prune(trial):
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")
        return f1, size / 1024

    return objective


def test_a_trial_is_judged_only_against_trials_no_larger(tmp_path):
    """A small model behind large ones may still end on the front's small end: it runs on. A
    large model behind them is pruned, as is a small one behind another small one."""
    space = parse_space(SPACE, name="mo")
    storage, _ = prepare_study(space, f"sqlite:///{tmp_path / 'mo.db'}", "mo", trials=8)
    study = load_prunable_study("mo", storage, space.make_sampler(), space.make_pruner())

    def run(size, f1):
        finished = run_one(study, _sized(size, f1), budget_lock(storage, "mo"), lambda: "x")
        return finished.finished.state

    assert [run(10_000, 0.95), run(10_000, 0.96)] == ["COMPLETE", "COMPLETE"]
    assert run(500, 0.40) == "COMPLETE"  # behind both, but smaller than both
    assert run(10_000, 0.40) == "PRUNED"  # behind trials of its own size
    assert run(400, 0.30) == "COMPLETE"  # the smallest yet
    assert run(500, 0.20) == "PRUNED"  # behind the 500 and the 400
