"""Search-space parsing: good spaces from a table, bad spaces and their one-line messages."""

from __future__ import annotations

import optuna
import pytest
import yaml

from sweeper.errors import SpaceError
from sweeper.space import load_space, parse_space
from sweeper.space.pruning import AfterStartup

MINIMAL = {"model": {"name": "cnn"},
           "params": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}


def space_text(**overrides) -> str:
    doc = {**MINIMAL, **overrides}
    return yaml.safe_dump({k: v for k, v in doc.items() if v is not None}, sort_keys=False)


def suggest_once(space, sampler=None):
    study = optuna.create_study(sampler=sampler or optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    return space.suggest(trial), trial


def test_shipped_spaces_are_valid(project):
    for name in ("cnn_lr", "mlp_breast_cancer", "cnn_compress"):
        space = load_space(name)
        params, _ = suggest_once(space)
        assert "learning_rate" in params
        assert space.config["sampler"]["name"] == "tpe"


def test_defaults_are_filled_in():
    space = parse_space(space_text())
    assert space.config["dataset"]["name"] == "digits"
    assert space.config["objective"] == {"metric": "f1", "average": "macro", "direction": "maximize"}
    assert space.config["sampler"]["name"] == "tpe"
    assert space.config["pruner"]["name"] == "successive_halving"
    assert space.config["training"]["max_epochs"] == 20
    # Its rungs suit the epochs: 4 and 16 of 20, keeping the best quarter at each.
    # No trial is stopped before 5 have completed.
    pruner = space.make_pruner()
    assert isinstance(pruner, AfterStartup) and pruner.n_startup_trials == 5
    assert isinstance(pruner.pruner, optuna.pruners.SuccessiveHalvingPruner)
    assert (pruner.pruner._min_resource, pruner.pruner._reduction_factor) == (4, 4)
    short = parse_space(space_text(training={"max_epochs": 4})).make_pruner()
    assert short.pruner._min_resource == 1
    eager = parse_space(space_text(pruner={"name": "successive_halving", "n_startup_trials": 0}))
    assert isinstance(eager.make_pruner(), optuna.pruners.SuccessiveHalvingPruner)


@pytest.mark.parametrize("spec, distribution", [
    ({"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
     optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)),
    ({"type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
     optuna.distributions.FloatDistribution(0.0, 0.5, step=0.1)),
    ({"type": "float", "low": "1e-5", "high": "1e-3", "log": True},  # PyYAML reads 1e-5 as text
     optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)),
    ({"type": "int", "low": 1, "high": 3},
     optuna.distributions.IntDistribution(1, 3)),
    ({"type": "int", "low": 16, "high": 128, "step": 16},
     optuna.distributions.IntDistribution(16, 128, step=16)),
    ({"type": "int", "low": 8, "high": 256, "log": True},
     optuna.distributions.IntDistribution(8, 256, log=True)),
    ({"type": "categorical", "choices": [16, 32, 64]},
     optuna.distributions.CategoricalDistribution([16, 32, 64])),
])
def test_param_distributions(spec, distribution):
    name = "dense_units" if spec["type"] in ("int", "categorical") else "dropout"
    if spec.get("log") and spec["type"] == "float":
        name = "learning_rate"
    space = parse_space(space_text(params={name: spec}))
    _, trial = suggest_once(space)
    assert trial.distributions[name] == distribution


def test_conditional_param_only_when_its_choice_is_made():
    params = {
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "momentum": {"type": "float", "low": 0.0, "high": 0.9, "when": {"optimizer": "sgd"}},
    }
    space = parse_space(space_text(params=params))
    seen = {"adam": 0, "sgd": 0}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(30):
        chosen = space.suggest(study.ask())
        seen[chosen["optimizer"]] += 1
        assert ("momentum" in chosen) == (chosen["optimizer"] == "sgd")
    assert seen["adam"] and seen["sgd"]


def test_hyperparameters_merge_fixed_values_and_params():
    space = parse_space(space_text(model={"name": "cnn", "filters": 8},
                                   training={"batch_size": 16}))
    hp = space.hyperparameters({"learning_rate": 0.01})
    assert hp["filters"] == 8 and hp["batch_size"] == 16 and hp["learning_rate"] == 0.01


@pytest.mark.parametrize("sampler, cls", [
    ("tpe", optuna.samplers.TPESampler), ("random", optuna.samplers.RandomSampler),
    ("cmaes", optuna.samplers.CmaEsSampler), ("qmc", optuna.samplers.QMCSampler),
])
def test_samplers(sampler, cls):
    space = parse_space(space_text(sampler={"name": sampler, "seed": 1}))
    assert isinstance(space.make_sampler(), cls)


def test_grid_sampler_enumerates_every_point():
    params = {"dropout": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
              "filters": {"type": "categorical", "choices": [8, 16]}}
    space = parse_space(space_text(sampler="grid", params=params))
    study = optuna.create_study(sampler=space.make_sampler())
    seen = set()

    def objective(trial):
        chosen = space.suggest(trial)
        seen.add((round(chosen["dropout"], 6), chosen["filters"]))
        return 0.0

    study.optimize(objective, n_trials=10)  # the grid sampler stops the study when it is done
    assert len(study.trials) == 6
    assert seen == {(d, f) for d in (0.0, 0.1, 0.2) for f in (8, 16)}


@pytest.mark.parametrize("pruner, cls", [
    ({"name": "hyperband", "min_resource": 2}, optuna.pruners.HyperbandPruner),
    ({"name": "median", "n_warmup_steps": 3}, optuna.pruners.MedianPruner),
    ({"name": "percentile", "percentile": 25}, optuna.pruners.PercentilePruner),
    ({"name": "successive_halving"}, AfterStartup),
    ("none", optuna.pruners.NopPruner),
])
def test_pruners(pruner, cls):
    assert isinstance(parse_space(space_text(pruner=pruner)).make_pruner(), cls)


def test_successive_halving_stops_no_trial_before_its_startup_trials_complete():
    """The same poor trial is let go on while fewer than n_startup_trials trials have completed,
    and stopped at the same rung once they have; its rung value is recorded either way."""
    space = parse_space(space_text(training={"max_epochs": 8}, pruner={
        "name": "successive_halving", "min_resource": 2, "reduction_factor": 2,
        "n_startup_trials": 3}))
    study = optuna.create_study(direction="maximize", pruner=space.make_pruner())

    def run(curve: list[float]) -> bool:
        """Reports the curve; True when the trial was stopped."""
        trial = study.ask()
        for step, value in enumerate(curve, start=1):
            trial.report(value, step)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                return True
        study.tell(trial, curve[-1])
        return False

    # Each poor trial is the worst so far, which successive halving alone stops at its first rung.
    assert [run([0.9] * 8), run([0.2] * 8), run([0.1] * 8)] == [False, False, False]
    assert run([0.05] * 8) is True  # 3 complete before it
    assert all("completed_rung_0" in t.system_attrs for t in study.trials)


def test_fingerprint_ignores_comments_but_not_meaning():
    a = parse_space(space_text())
    b = parse_space("# a comment\n" + space_text())
    c = parse_space(space_text(training={"max_epochs": 5}))
    assert a.fingerprint == b.fingerprint != c.fingerprint
    wider = {"learning_rate": {**MINIMAL["params"]["learning_rate"], "high": 2e-2}}
    assert parse_space(space_text(params=wider)).fingerprint != a.fingerprint


def test_the_checkpoint_cadence_is_no_part_of_the_fingerprint():
    """How often a trial writes its checkpoint says how it runs, not what it is: a study resumes
    under another cadence, and one made before the option existed resumes with it set."""
    plain = parse_space(space_text())
    often = parse_space(space_text(training={"checkpoint_every_s": 2}))
    assert often.fingerprint == plain.fingerprint
    assert often.checkpoint_every_s == 2.0 and plain.checkpoint_every_s == 10.0
    assert "checkpoint_every_s" not in plain.config["training"]


def test_user_model_may_use_any_param_name():
    space = parse_space(space_text(model={"function": "user_models:small_dense"},
                                   params={"width": {"type": "int", "low": 4, "high": 8}}))
    assert [p.name for p in space.params] == ["width"]


# Each bad space: (YAML text, fragments the one-line message must contain)
LR = "params: {learning_rate: {type: float, low: 0.0001, high: 0.01, log: true}}\n"
BAD_SPACES = [
    ("", ["is empty"]),
    ("[1, 2]", ["must be a mapping"]),
    ("model: {name: cnn}\nparams: {learning_rate: {type: float, low: 1, high: [}\n",
     ["invalid YAML", "line"]),
    ("model: {name: cnn}\nmodel: {name: mlp}\n" + LR, ["duplicate key 'model'"]),
    ("modle: {name: cnn}\n" + LR, ["modle", "did you mean 'model'"]),
    ("model: {name: cnn}\ntraining: {max_epoch: 3}\n" + LR,
     ["training.max_epoch", "unknown key", "max_epochs"]),
    ("model: {name: cnn}\ntraining: {max_epochs: three}\n" + LR,
     ["training.max_epochs", "whole number"]),
    ("model: {name: cnn}\ntraining: {max_epochs: 0}\n" + LR, ["training.max_epochs", "at least 1"]),
    ("model: {name: cnn}\ntraining: {checkpoint_every_s: -1}\n" + LR,
     ["training.checkpoint_every_s", "0 to 86400", "write e.g. 10"]),
    ("model: {name: resnet}\n" + LR, ["model.name", "resnet", "cnn, mlp"]),
    (LR, ["model", "needs a name"]),
    ("model: {name: cnn}\ndataset: {name: imagenet}\n" + LR, ["dataset.name", "imagenet"]),
    ("model: {name: cnn}\ndataset: {path: /no/such/file.npz}\n" + LR,
     ["dataset.path", "does not exist"]),
    ("model: {name: cnn}\ndataset: {name: digits, path: x.npz}\n" + LR, ["has both"]),
    ("model: {name: cnn}\nparams: {learning_rate: {type: float, low: 0.1, high: 0.01}}\n",
     ["params.learning_rate", "low (0.1) must be below high (0.01)"]),
    ("model: {name: cnn}\nparams: {learning_rate: {type: float, low: 0.0, high: 0.1, log: true}}\n",
     ["params.learning_rate.low", "log"]),
    ("model: {name: cnn}\nparams: {filters: {type: categorical, choices: []}}\n",
     ["params.filters.choices", "non-empty"]),
    ("model: {name: cnn}\nparams: {dropout: {type: floaty, low: 0, high: 1}}\n",
     ["params.dropout.type", "floaty"]),
    ("model: {name: cnn}\nparams: {dropout: {type: float, high: 0.5}}\n",
     ["params.dropout.low", "missing"]),
    ("model: {name: cnn}\nparams: {dropout: {type: float, low: 0, high: .nan}}\n",
     ["params.dropout.high", "finite"]),
    ("model: {name: cnn}\nparams: {lerning_rate: {type: float, low: 0.1, high: 0.2}}\n",
     ["params.lerning_rate", "did you mean 'learning_rate'"]),
    ("model: {name: cnn}\nparams: {momentum: {type: float, low: 0, high: 0.9, "
     "when: {optimizer: sgd}}}\n", ["params.momentum.when.optimizer", "not a param defined above"]),
    ("model: {name: cnn}\nparams:\n  optimizer: {type: categorical, choices: [adam]}\n"
     "  momentum: {type: float, low: 0, high: 0.9, when: {optimizer: sgd}}\n",
     ["params.momentum.when.optimizer", "'sgd' is not one of its choices"]),
    ("model: {name: cnn}\nparams: {optimizer: {type: categorical, choices: [adam, adagrad]}}\n",
     ["params.optimizer.choices", "adagrad"]),
    ("model: {name: cnn}\nsampler: {name: bayes}\n" + LR, ["sampler.name", "bayes", "tpe"]),
    ("model: {name: cnn}\nsampler: {name: tpe, seeds: 1}\n" + LR, ["sampler.seeds", "seed"]),
    ("model: {name: cnn}\npruner: {name: percentile}\n" + LR, ["pruner.percentile", "required"]),
    ("model: {name: cnn}\npruner: {name: hyperband, reduction_factor: 1}\n" + LR,
     ["pruner.reduction_factor", "at least 2"]),
    ("model: {name: cnn}\nobjective: {average: samples}\n" + LR, ["objective.average", "samples"]),
    ("model: {name: cnn}\nobjective: {average: binary}\n" + LR,
     ["objective.average", "two-class"]),
    ("model: {name: cnn}\nsampler: grid\n" + LR, ["grid needs a step"]),
    ("model: {name: cnn}\ndataset: {name: breast_cancer}\n" + LR, ["model.name", "use name: mlp"]),
    ("model: {name: cnn}\nparams: {}\n", ["params", "is empty"]),
    ("model: {function: 'not a path'}\n" + LR, ["model.function", "import path"]),
    ("model: {name: cnn}\nparams: {batch_size: {type: float, low: 8, high: 64}}\n",
     ["params.batch_size.type", "whole numbers"]),
    ("model: {name: cnn}\ndataset: {validation_fraction: 1.5}\n" + LR,
     ["dataset.validation_fraction", "between 0 and 1"]),
    ("model: !!python/object/apply:os.system ['true']\n" + LR, ["invalid YAML"]),
    # objectives, constraints and the compress stage
    ("model: {name: cnn}\nobjectives: [f1, size_kb]\n" + LR,
     ["objectives", "size_kb is measured by the compress stage", "add a compress section"]),
    ("model: {name: cnn}\ncompress: {}\nobjectives: [size_kb, f1]\n" + LR,
     ["objectives", "starts with size_kb", "put f1 first"]),
    ("model: {name: cnn}\ncompress: {}\nobjectives: [f1, weight]\n" + LR,
     ["objectives", "unknown value 'weight'", "size_kb"]),
    ("model: {name: cnn}\ncompress: {}\nobjectives: [f1, size_kb, f1]\n" + LR,
     ["objectives", "twice"]),
    ("model: {name: cnn}\nobjectives: f1\n" + LR, ["objectives", "non-empty list"]),
    ("model: {name: cnn}\ncompress: {}\nobjectives: [f1, {size_kb: min}]\n" + LR,
     ["objectives", "is not a metric name"]),
    ("model: {name: cnn}\ncompress: {}\nobjectives: [f1, size_kb]\nsampler: cmaes\n" + LR,
     ["sampler.name", "cmaes cannot weigh several objectives", "nsga2"]),
    ("model: {name: cnn}\ncompress: {}\nobjectives: [f1, size_kb]\npruner: hyperband\n" + LR,
     ["pruner.name", "hyperband cannot prune a multi-objective study", "successive_halving"]),
    ("model: {name: cnn}\ncompress: {}\nobjectives: [f1, latency_ms]\n"
     "objective: {direction: minimize}\n" + LR, ["objective.direction", "must be maximize"]),
    ("model: {name: cnn}\ncompress: {}\nconstraints: ['size_kb <= lots']\n" + LR,
     ["constraints", "'lots'", "not a number"]),
    ("model: {name: cnn}\ncompress: {}\nconstraints: ['size <= 64']\n" + LR,
     ["constraints", "'size' is not a metric", "size_kb"]),
    ("model: {name: cnn}\ncompress: {}\nconstraints: ['size_kb = 64']\n" + LR,
     ["constraints", "is not a bound", "size_kb <= 64"]),
    ("model: {name: cnn}\ncompress: {}\nconstraints: ['size_kb <= inf']\n" + LR,
     ["constraints", "not finite"]),
    ("model: {name: cnn}\ncompress: {}\nconstraints: ['size_kb <= 64']\nsampler: random\n" + LR,
     ["sampler.name", "random cannot honour constraints", "tpe, nsga2, nsga3"]),
    ("model: {name: cnn}\nconstraints: ['latency_ms <= 1']\n" + LR,
     ["constraints", "latency_ms is measured by the compress stage"]),
    ("model: {name: cnn}\ncompress: {quantize: int4}\n" + LR,
     ["compress.quantize", "int4", "int8, none"]),
    ("model: {name: cnn}\ncompress: {quantise: int8}\n" + LR,
     ["compress.quantise", "did you mean 'quantize'"]),
    ("model: {name: cnn}\ncompress: {sparsity: 1.0}\n" + LR, ["compress.sparsity", "[0, 1)"]),
    ("model: {name: cnn}\ncompress: {finetune_epochs: -1}\n" + LR,
     ["compress.finetune_epochs", "must be 0 to 1000"]),
    ("model: {name: cnn}\ncompress: {calibration_samples: 0}\n" + LR,
     ["compress.calibration_samples", "must be 1 to 100000"]),
    ("model: {name: cnn}\ncompress: int8\n" + LR, ["compress", "must be a mapping"]),
    ("model: {name: cnn}\nparams: {sparsity: {type: float, low: 0, high: 0.5}}\n",
     ["params.sparsity", "has no parameter 'sparsity'"]),
    ("model: {name: cnn}\ncompress: {}\nparams: {sparsity: {type: float, low: 0, high: 1.0}}\n",
     ["params.sparsity.high", "[0, 1)"]),
    ("model: {name: cnn}\nsampler: {name: nsga2, population_size: 1}\n" + LR,
     ["sampler.population_size", "at least 2"]),
    ("model: {name: cnn}\nsampler: {name: nsga3, mutation_prob: 1.5}\n" + LR,
     ["sampler.mutation_prob", "between 0 and 1"]),
    ("model: {name: cnn}\nparams: {learning_rate: {type: float, low: 0.001, high: 0.01, "
     "default: 0.1}}\n", ["params.learning_rate.default", "0.1", "0.001..0.01"]),
    ("model: {name: cnn}\nparams: {learning_rate: {type: float, low: 0.001, high: 0.01, "
     "default: fast}}\n", ["params.learning_rate.default", "must be a number"]),
    ("model: {name: cnn}\nparams: {conv_blocks: {type: int, low: 1, high: 5, step: 2, "
     "default: 2}}\n", ["params.conv_blocks.default", "step 2"]),
    ("model: {name: cnn}\nparams: {filters: {type: categorical, choices: [8, 16], "
     "default: 32}}\n", ["params.filters.default", "one of [8, 16]"]),
    ("model: {name: cnn}\nparams: {batch_norm: {type: categorical, choices: [true, false], "
     "default: 1}}\n", ["params.batch_norm.default", "1 is not a value"]),
]


@pytest.mark.parametrize("text, fragments", BAD_SPACES, ids=range(len(BAD_SPACES)))
def test_bad_spaces_give_one_line(text, fragments):
    with pytest.raises(SpaceError) as caught:
        parse_space(text, source="search_spaces/bad.yaml")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("search_spaces/bad.yaml: ")
    for fragment in fragments:
        assert fragment in message, message


def test_unknown_space_lists_the_known_ones(project):
    with pytest.raises(SpaceError, match=r"no such search space 'cnn_lrr'.*cnn_lr"):
        load_space("cnn_lrr")


def test_non_utf8_space(project):
    (project / "search_spaces" / "latin.yaml").write_bytes(b"description: caf\xe9\n")
    with pytest.raises(SpaceError, match="not UTF-8"):
        load_space("latin")


# The schema's rule for a built-in hyperparameter's value: (name, value, what the user is told).
HPARAM_VALUES = [
    ("batch_size", 64, None),
    ("batch_size", 0, ("must be at least 1, got 0", "write a positive number")),
    ("filters", -3, ("must be at least 1, got -3", "write a positive number")),
    ("dropout", 0.0, None),
    ("dropout", 1.0, ("must be in [0, 1), got 1.0", "write e.g. 0.2")),
    ("learning_rate", 0, ("must be positive, got 0", "write e.g. 0.001")),
    ("learning_rate", 3e-4, None),
    ("optimizer", "sgd", None),
    ("optimizer", "adagrad", ("unknown value 'adagrad'", "use one of: adam, adamw, sgd, rmsprop")),
    ("activation", "mish", ("unknown value 'mish'", "use one of: relu, gelu, tanh, elu, swish")),
    ("momentum", -5.0, None),  # unbounded
    ("batch_size", "big", None),  # a wrong type is the validator's to tell
]


@pytest.mark.parametrize("name, value, told", HPARAM_VALUES)
def test_hyperparameter_bounds_come_from_the_schema_table(name, value, told):
    from sweeper.space.schema import MODEL_HPARAMS, TRAINING_HPARAMS

    spec = TRAINING_HPARAMS.get(name) or MODEL_HPARAMS["cnn"].get(name) or \
        MODEL_HPARAMS["mlp"][name]
    assert spec.problem(value) == told


def test_defaults_a_space_leaves_out_come_from_the_schema_table():
    from sweeper.space.schema import hparam

    space = parse_space(space_text())
    assert space.config["training"]["batch_size"] == hparam({}, "batch_size") == 64
    assert hparam({"filters": 8}, "filters", model="cnn") == 8
    assert hparam({}, "filters", model="cnn") == 32 and hparam({}, "units", model="mlp") == 64


COMPRESS_SPACE = ("model: {name: cnn}\ncompress: {quantize: int8, sparsity: 0.25}\n"
                  "objectives: [f1, size_kb, latency_ms]\n"
                  "constraints: ['size_kb <= 64', 'latency_ms<0.5']\n"
                  "params:\n  learning_rate: {type: float, low: 0.001, high: 0.01}\n"
                  "  sparsity: {type: float, low: 0.0, high: 0.8}\n")


def test_objectives_constraints_and_compress_settings_are_read():
    space = parse_space(COMPRESS_SPACE)
    assert space.objectives == ["f1", "size_kb", "latency_ms"]
    assert space.directions == ["maximize", "minimize", "minimize"]
    assert space.is_multi_objective
    assert space.compress == {"quantize": "int8", "sparsity": 0.25, "finetune_epochs": 2,
                              "calibration_samples": 200}
    assert [str(b) for b in space.constraints] == ["size_kb <= 64", "latency_ms < 0.5"]
    sampler = space.make_sampler()
    assert isinstance(sampler, optuna.samplers.TPESampler)
    params, _ = suggest_once(space)
    assert 0.0 <= space.hyperparameters(params)["sparsity"] <= 0.8


def test_a_space_without_the_new_sections_keeps_its_fingerprint():
    """Stores made before objectives and compress existed must still resume: the defaults of
    the new sections are not written into the config a fingerprint hashes."""
    space = parse_space(space_text())
    assert {"objectives", "constraints", "compress"}.isdisjoint(space.config)
    assert space.objectives == ["f1"] and space.directions == ["maximize"]
    assert space.compress is None and space.constraints == []
    assert parse_space(space_text()).fingerprint == space.fingerprint
    assert parse_space(COMPRESS_SPACE).fingerprint != space.fingerprint


def test_fingerprints_of_spaces_stored_before_defaults_existed_are_unchanged():
    """A study stores its space's fingerprint and refuses a space whose fingerprint differs: a
    param without `default:` must hash as it always did, or every stored study stops resuming."""
    assert parse_space(space_text()).fingerprint == "1f8a0662bf27f952"
    with_default = {"learning_rate": {**MINIMAL["params"]["learning_rate"], "default": 1e-3}}
    space = parse_space(space_text(params=with_default))
    assert space.params[0].default == 1e-3 and space.params[0].has_default
    assert space.fingerprint != "1f8a0662bf27f952"


def test_constraint_values_come_from_the_trial_attributes():
    from types import SimpleNamespace

    from sweeper import keys

    space = parse_space(COMPRESS_SPACE)
    trial = SimpleNamespace(values=[0.9], user_attrs={keys.COMPRESSED_GZIP_BYTES: 80 * 1024,
                                                      keys.LATENCY_MS: 0.25})
    assert space.constraint_values(trial) == [16.0, -0.25]  # size 16 KiB over; latency within
    pruned = SimpleNamespace(values=None, user_attrs={})
    assert space.constraint_values(pruned) == [0.0, 0.0]  # never measured: judged by F1 alone


@pytest.mark.parametrize("sampler, cls", [
    ("nsga2", optuna.samplers.NSGAIISampler), ("nsga3", optuna.samplers.NSGAIIISampler)])
def test_multi_objective_samplers(sampler, cls):
    text = space_text(sampler={"name": sampler, "seed": 1, "population_size": 4})
    assert isinstance(parse_space(text).make_sampler(), cls)
