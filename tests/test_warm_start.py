"""Warm starts (sweeper.sweep.warm_start, sweeper.space.changes): which trials of an earlier space fit a
changed one, what is imported or queued, the budget, the lineage, and queued re-runs racing on
every store. Real Optuna studies in real stores; no TensorFlow (trials are made by the test)."""

from __future__ import annotations

import optuna
import pytest
import yaml
from conftest import race_workers

from sweeper import keys
from sweeper.errors import StorageError
from sweeper.results.lineage import describe
from sweeper.space import parse_space
from sweeper.space.changes import fit, ran_with, result_changes
from sweeper.storage.counts import study_counts
from sweeper.storage.rdb import open_storage
from sweeper.sweep.studies import prepare_study
from sweeper.sweep.warm_start import RERUN_BEST, find_parent, plan, seed
from sweeper.worker.exits import EXIT_DONE

optuna.logging.set_verbosity(optuna.logging.WARNING)

LR = {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}
FILTERS = {"type": "categorical", "choices": [8, 16]}
OLD = {"model": {"name": "cnn", "dropout": 0.1}, "training": {"max_epochs": 4},
       "sampler": {"name": "tpe", "seed": 0},
       "params": {"learning_rate": LR, "filters": FILTERS}}


def space(doc: dict, **changes):
    """The space of `doc` with top-level sections replaced; params merged (None drops one)."""
    doc = {**doc, **{k: v for k, v in changes.items() if k != "params"}}
    params = {**doc["params"], **changes.get("params", {})}
    doc["params"] = {k: v for k, v in params.items() if v is not None}
    return parse_space(yaml.safe_dump(doc, sort_keys=False), source="search_spaces/s.yaml",
                       name="s")


USER_MODEL = {"model": {"function": "user_models:small_dense"}, "training": {"max_epochs": 4},
              "params": {"learning_rate": LR}}

OPTIMIZER_PARAMS = {"optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
                    "momentum": {"type": "float", "low": 0.0, "high": 0.9}}
OPTIMIZER = {**OLD, "params": {**OLD["params"], **OPTIMIZER_PARAMS}}
SGD_MOMENTUM = space(OPTIMIZER, params={"momentum": {**OPTIMIZER_PARAMS["momentum"],
                                                     "when": {"optimizer": "sgd"}}})

# (old space, new space, a trial's params in the old one, params in the new one or the reason)
FITS = [
    # widened range: every old value lies inside
    (OLD, space(OLD, params={"learning_rate": {**LR, "low": 1e-4, "high": 3e-2}}),
     {"learning_rate": 5e-3, "filters": 16}, {"learning_rate": 5e-3, "filters": 16}),
    # narrowed range: the value is outside
    (OLD, space(OLD, params={"learning_rate": {**LR, "high": 3e-3}}),
     {"learning_rate": 5e-3, "filters": 16}, "learning_rate: 0.005 is outside float 0.001..0.003"),
    # a choice removed
    (OLD, space(OLD, params={"filters": {"type": "categorical", "choices": [16, 32]}}),
     {"learning_rate": 5e-3, "filters": 8}, "filters: 8 is outside one of [16, 32]"),
    # a dropped param is ignored
    (OLD, space(OLD, params={"filters": None}),
     {"learning_rate": 5e-3, "filters": 8}, {"learning_rate": 5e-3}),
    # a new param the model fixed before: the value the trial ran with (model.dropout 0.1)
    (OLD, space(OLD, params={"dropout": {"type": "float", "low": 0.0, "high": 0.5}}),
     {"learning_rate": 5e-3, "filters": 8}, {"learning_rate": 5e-3, "filters": 8, "dropout": 0.1}),
    # ... which the new range leaves out
    (OLD, space(OLD, params={"dropout": {"type": "float", "low": 0.2, "high": 0.5}}),
     {"learning_rate": 5e-3, "filters": 8}, "dropout: ran with 0.1 is outside float 0.2..0.5"),
    # a new param of the built-in model that the old space left at the model's default (2)
    (OLD, space(OLD, params={"conv_blocks": {"type": "int", "low": 1, "high": 3}}),
     {"learning_rate": 5e-3, "filters": 8}, {"learning_rate": 5e-3, "filters": 8, "conv_blocks": 2}),
    # ... off the new step
    (OLD, space(OLD, params={"conv_blocks": {"type": "int", "low": 1, "high": 3, "step": 2}}),
     {"learning_rate": 5e-3, "filters": 8}, "conv_blocks: ran with 2 is outside int 1..3 step 2"),
    # a user's model: what it ran with is unknown, so a new param needs a default:
    (USER_MODEL, space(USER_MODEL, params={"width": {"type": "int", "low": 4, "high": 8}}),
     {"learning_rate": 5e-3}, "width is new and has no default:"),
    (USER_MODEL, space(USER_MODEL, params={"width": {"type": "int", "low": 4, "high": 8,
                                                     "default": 6}}),
     {"learning_rate": 5e-3}, {"learning_rate": 5e-3, "width": 6}),
    # a condition that now leaves out a value the trial had
    (OPTIMIZER, SGD_MOMENTUM, {"learning_rate": 5e-3, "filters": 8, "optimizer": "adam",
                               "momentum": 0.5},
     "momentum is no longer searched when optimizer in ['sgd']"),
    # ... and one that still holds
    (OPTIMIZER, SGD_MOMENTUM,
     {"learning_rate": 5e-3, "filters": 8, "optimizer": "sgd", "momentum": 0.5},
     {"learning_rate": 5e-3, "filters": 8, "optimizer": "sgd", "momentum": 0.5}),
]


@pytest.mark.parametrize("old, new, params, expected", FITS, ids=range(len(FITS)))
def test_fit_rules(old, new, params, expected):
    fitted, why = fit(params, new, ran_with(space(old), params))
    if isinstance(expected, dict):
        assert (fitted, why) == (expected, "")
    else:
        assert fitted is None and expected in why, why


def test_a_value_fits_only_as_its_own_type():
    flag = space(USER_MODEL, params={"flag": {"type": "categorical", "choices": [1, 2]}})
    assert fit({"learning_rate": 5e-3, "flag": 1}, flag)[0] is not None
    assert fit({"learning_rate": 5e-3, "flag": True}, flag)[0] is None  # True == 1 in Python


# (changes to the old space, the changed settings that make its values incomparable)
RESULT_CHANGES = [
    ({"training": {"max_epochs": 6}}, ["training.max_epochs: 4 -> 6"]),
    ({"dataset": {"name": "digits", "split_seed": 3}}, ["dataset.split_seed: 0 -> 3"]),
    ({"preprocess": {"normalize": "standardize"}}, ["preprocess.normalize: 'unit' -> 'standardize'"]),
    ({"model": {"name": "cnn", "dropout": 0.2}}, ["model.dropout: 0.1 -> 0.2"]),
    ({"sampler": {"name": "tpe", "seed": 0}}, []),
    ({"pruner": {"name": "median"}}, []),
    ({"params": {"learning_rate": {**LR, "high": 0.1}}}, []),
    # dropout moved from a fixed setting into the params: judged by the fit rules instead
    ({"model": {"name": "cnn"}, "params": {"dropout": {"type": "float", "low": 0, "high": 0.5}}},
     []),
]


@pytest.mark.parametrize("changes, expected", RESULT_CHANGES, ids=range(len(RESULT_CHANGES)))
def test_which_changed_settings_make_values_incomparable(changes, expected):
    assert result_changes(space(OLD), space(OLD, **changes)) == expected


# -- in a store ----------------------------------------------------------------------------------


def _parent(url: str, name: str = "s", trials: int = 8):
    """A study of the OLD space with finished trials as a worker leaves them: the last pruned,
    one failed; F1 grows with the learning rate. Returns the study."""
    _, study = prepare_study(space(OLD), url, name, trials)
    distributions = {p.name: p.distribution() for p in space(OLD).params}
    for i in range(trials):
        lr = 1e-3 * (1 + i)
        pruned = i == trials - 1
        f1 = 0.5 + 0.05 * i
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE,
            values=None if pruned else [f1], params={"learning_rate": lr, "filters": 8 * (1 + i % 2)},
            distributions=distributions, intermediate_values={0: f1 / 2, 1: f1 * 0.9},
            user_attrs={keys.MODEL_ARTIFACT: f"model-{i}", keys.EPOCHS_RUN: 2, keys.WORKER: "0",
                        keys.TEST_F1: f1 - 0.01}))
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL, params={"learning_rate": 1e-3, "filters": 8},
        distributions=distributions))
    return study


def _seeded(url: str, new, parent_name: str = "s", name: str = "s-2", budget: int = 6):
    storage = open_storage(url)
    parent = find_parent(storage, url, new, parent_name)
    _, study = prepare_study(new, url, name, budget)
    trials = storage.get_all_trials(keys.study_id(parent), deepcopy=False)
    return study, seed(study, new, plan(parent, trials, new, budget))


def test_a_widened_space_imports_every_finished_trial_with_its_history(storage_url):
    parent = _parent(storage_url)
    wide = space(OLD, params={"learning_rate": {**LR, "low": 1e-4, "high": 3e-2}})
    study, lineage = _seeded(storage_url, wide)
    trials = study.get_trials()
    assert len(trials) == 8  # 7 complete + 1 pruned; the failed one is not imported
    for old, new in zip(parent.get_trials(states=(optuna.trial.TrialState.COMPLETE,
                                                  optuna.trial.TrialState.PRUNED)), trials):
        assert (new.state, new.values, new.params) == (old.state, old.values, old.params)
        assert new.intermediate_values == old.intermediate_values  # the pruner's history
        assert new.distributions["learning_rate"].high == 3e-2  # the new space's: TPE uses them
        assert new.user_attrs[keys.IMPORTED_FROM] == {"study": "s", "trial": old.number}
        assert new.user_attrs[keys.TEST_F1] == old.user_attrs[keys.TEST_F1]
        assert keys.MODEL_ARTIFACT not in new.user_attrs  # the parent's files stay the parent's
        assert new.datetime_start == old.datetime_start
    counts = study_counts(study)
    assert (counts.imported, counts.claimed, counts.finished) == (8, 0, 0)  # no budget slot
    assert counts.may_start(6)
    assert lineage == {**lineage, "parent": "s", "comparable": True, "imported": 8, "queued": 0,
                       "finished": 8, "unfit": 0, "done": True}
    assert lineage["changes"] == ["learning_rate: float 0.001..0.01 (log) -> float 0.0001..0.03 (log)"]
    assert study.user_attrs[keys.LINEAGE] == lineage
    assert describe(lineage).startswith("warm-started from 's' (learning_rate: float 0.001..0.01 "
                                        "(log) -> float 0.0001..0.03 (log)): imported 8 of its 8")


def test_trials_that_do_not_fit_stay_behind_and_are_named(storage_url):
    _parent(storage_url)
    narrow = space(OLD, params={"learning_rate": {**LR, "high": 4e-3}})
    study, lineage = _seeded(storage_url, narrow)
    assert sorted(t.params["learning_rate"] for t in study.get_trials()) == \
        pytest.approx([1e-3, 2e-3, 3e-3, 4e-3])
    assert (lineage["imported"], lineage["unfit"]) == (4, 4)
    assert "trial 4: learning_rate: 0.005 is outside float 0.001..0.004" in describe(lineage)


def test_seeding_cut_short_is_finished_without_twins(storage_url):
    _parent(storage_url)
    wide = space(OLD, params={"learning_rate": {**LR, "high": 3e-2}})
    storage = open_storage(storage_url)
    parent = find_parent(storage, storage_url, wide, "s")
    _, study = prepare_study(wide, storage_url, "s-2", 6)
    trials = storage.get_all_trials(keys.study_id(parent), deepcopy=False)
    whole = plan(parent, trials, wide, 6)
    half = plan(parent, trials, wide, 6)
    half.chosen = half.chosen[:3]
    seed(study, wide, half)
    study.set_user_attr(keys.LINEAGE, {**study.user_attrs[keys.LINEAGE], "done": False})
    assert "cut short" in describe(study.user_attrs[keys.LINEAGE])
    lineage = seed(study, wide, whole)  # what the next sweep does
    numbers = [t.user_attrs[keys.IMPORTED_FROM]["trial"] for t in study.get_trials()]
    assert sorted(numbers) == list(range(8)) and lineage["imported"] == 8 and lineage["done"]


def test_changed_epochs_queue_the_best_fitting_configurations_instead(storage_url):
    _parent(storage_url)
    longer = space(OLD, training={"max_epochs": 6})
    study, lineage = _seeded(storage_url, longer, budget=10)
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == len(study.get_trials()) == RERUN_BEST
    # the best complete trials by F1: 6, 5, 4, 3, 2 (7 was pruned)
    assert [t.user_attrs[keys.RERUN_OF]["trial"] for t in waiting] == [6, 5, 4, 3, 2]
    assert waiting[0].system_attrs["fixed_params"] == {"learning_rate": 7e-3, "filters": 8}
    counts = study_counts(study)
    assert (counts.waiting, counts.claimed) == (RERUN_BEST, RERUN_BEST)  # they take budget slots
    assert not lineage["comparable"] and lineage["queued"] == RERUN_BEST
    assert describe(lineage).startswith(
        "warm-started from 's': training.max_epochs: 4 -> 6 changes results, so its values are "
        "not comparable; queued its best 5 trials that fit to run again")


def test_no_more_reruns_are_queued_than_the_budget(storage_url):
    _parent(storage_url)
    study, lineage = _seeded(storage_url, space(OLD, training={"max_epochs": 6}), budget=2)
    assert len(study.get_trials()) == lineage["queued"] == 2


def test_queued_reruns_run_once_with_8_racing_workers(storage_url):
    """Five queued re-runs and a budget of 7: eight workers race for them; each runs exactly
    once, and two new trials fill the budget."""
    _parent(storage_url)
    study, _ = _seeded(storage_url, space(OLD, training={"max_epochs": 6}), budget=7)
    keys.rdb_of(keys.storage_of(study)).engine.dispose()
    assert race_workers(storage_url, "s-2", 7, workers=8) == [EXIT_DONE] * 8
    trials = optuna.load_study(study_name="s-2", storage=open_storage(storage_url)).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 7
    reruns = sorted(t.user_attrs[keys.RERUN_OF]["trial"] for t in trials if keys.RERUN_OF in t.user_attrs)
    assert reruns == [2, 3, 4, 5, 6]
    for t in trials[:RERUN_BEST]:  # each ran with the params it was queued with
        assert t.params["learning_rate"] == pytest.approx(1e-3 * (1 + t.user_attrs[keys.RERUN_OF]["trial"]))


def test_the_default_parent_is_the_study_the_space_last_ran_as(storage_url):
    _parent(storage_url, "s")
    _parent(storage_url, "s-old", trials=2)
    storage = open_storage(storage_url)
    for name, started in (("s", "2026-11-02T10:00:00+0000"), ("s-old", "2026-11-01T10:00:00+0000")):
        study = optuna.load_study(study_name=name, storage=storage)
        study.set_user_attr(keys.STARTED, started)
    assert find_parent(storage, storage_url, space(OLD), None).study_name == "s"


@pytest.mark.parametrize("name, message", [
    ("nope", "no study 'nope' in {url} to warm-start from; studies there: plain, s"),
    ("plain", "study 'plain' in {url} was not made by sweeper"),
    (None, "no earlier study of space 'other' in {url} to warm-start from"),
])
def test_bad_or_missing_parents_give_one_line(storage_url, name, message):
    from sweeper.storage.url import mask_url

    _parent(storage_url)
    optuna.create_study(study_name="plain", storage=open_storage(storage_url))
    other = parse_space(yaml.safe_dump(OLD), name="other")
    with pytest.raises(StorageError) as caught:
        find_parent(open_storage(storage_url), storage_url, other, name)
    assert message.format(url=mask_url(storage_url)) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_first_sampled_trials_learn_from_the_imported_ones(tmp_path):
    """TPE after a warm start: the imported trials say filters 16 wins and 8 loses, so of the
    first 8 trials it samples at least half take 16 and at most 2 take 8 (the rest try the new
    choice 32; this held for sampler seeds 0 to 9). In a cold study the same sampler's first
    trials are random and miss that mark (the control: this test can fail)."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    _, parent = prepare_study(space(OLD), url, "s", 16)
    distributions = {p.name: p.distribution() for p in space(OLD).params}
    for i in range(16):
        filters = 16 if i % 2 else 8
        parent.add_trial(optuna.trial.create_trial(
            values=[0.9 + 0.001 * i if filters == 16 else 0.3], distributions=distributions,
            params={"learning_rate": 1e-3 * (1 + i / 2), "filters": filters}))
    wide = space(OLD, params={"filters": {"type": "categorical", "choices": [8, 16, 32]},
                              "learning_rate": {**LR, "low": 1e-4, "high": 3e-2}})
    warm, _ = _seeded(url, wide, budget=4)
    _, cold = prepare_study(wide, url, "cold", 4)

    def first_filters(study) -> list:
        study = optuna.load_study(study_name=study.study_name,
                                  storage=open_storage(url, heartbeat_s=None),
                                  sampler=wide.make_sampler())
        chosen = []
        for _ in range(8):
            trial = study.ask()
            chosen.append(wide.suggest(trial)["filters"])
            study.tell(trial, 0.5)
        return chosen

    def learned(choices: list) -> bool:
        return choices.count(16) >= 4 and choices.count(8) <= 2

    warm_choices, cold_choices = first_filters(warm), first_filters(cold)
    assert learned(warm_choices), warm_choices
    assert not learned(cold_choices), cold_choices
