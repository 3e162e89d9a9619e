"""What a search space may say: its sections and keys, the samplers and pruners with their
options, and the hyperparameters the built-in models read, each with its type, bounds and default.

A table, not code: the validator checks a space against it, the models take their defaults from
it, and a new hyperparameter is one row here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sweeper.text import shown

BUILTIN_DATASETS = ("digits", "breast_cancer", "mnist", "fashion_mnist", "cifar10")
BUILTIN_MODELS = ("cnn", "mlp")
IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")


@dataclass(frozen=True)
class HParam:
    """A hyperparameter the built-in code reads: its type, what values make sense, its default."""

    kind: type
    default: Any = None
    choices: tuple = ()
    at_least: int | None = None  # whole numbers from this up
    fraction: bool = False  # in [0, 1)
    positive: bool = False  # above 0

    def problem(self, value) -> tuple[str, str] | None:
        """(what is wrong, how to fix it) for a value given in a space, or None if it is fine."""
        if self.choices:
            if value not in self.choices:
                return f"unknown value {shown(value)}", f"use one of: {', '.join(self.choices)}"
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None  # a wrong type is the validator's to say
        if self.at_least is not None and isinstance(value, int) and value < self.at_least:
            return f"must be at least {self.at_least}, got {value}", "write a positive number"
        if self.fraction and not 0 <= value < 1:
            return f"must be in [0, 1), got {value}", "write e.g. 0.2"
        if self.positive and value <= 0:
            return f"must be positive, got {value}", "write e.g. 0.001"
        return None


TRAINING_HPARAMS: dict[str, HParam] = {
    "batch_size": HParam(int, default=64, at_least=1),
    "optimizer": HParam(str, default="adam", choices=("adam", "adamw", "sgd", "rmsprop")),
    "learning_rate": HParam(float, default=1e-3, positive=True),
    "momentum": HParam(float, default=0.0),
    "weight_decay": HParam(float, default=1e-4),
    "lr_schedule": HParam(str, default="constant", choices=("constant", "cosine", "exponential")),
}
MODEL_HPARAMS: dict[str, dict[str, HParam]] = {
    "cnn": {
        "conv_blocks": HParam(int, default=2, at_least=1),
        "filters": HParam(int, default=32, at_least=1),
        "kernel_size": HParam(int, default=3, at_least=1),
        "batch_norm": HParam(bool, default=False),
        "dropout": HParam(float, default=0.0, fraction=True),
        "dense_units": HParam(int, default=64, at_least=1),
        "augment_strength": HParam(float, default=0.0),
        "augment_flip": HParam(bool, default=False),
    },
    "mlp": {
        "hidden_layers": HParam(int, default=2, at_least=1),
        "units": HParam(int, default=64, at_least=1),
        "dropout": HParam(float, default=0.0, fraction=True),
        "activation": HParam(str, default="relu", choices=("relu", "gelu", "tanh", "elu", "swish")),
        "batch_norm": HParam(bool, default=False),
    },
}


# The compress stage's settings a trial reads; fixed in the `compress` section or searched in params.
COMPRESS_HPARAMS: dict[str, HParam] = {
    "sparsity": HParam(float, default=0.0, fraction=True),
}


def hparam(hp: dict, name: str, model: str | None = None):
    """A built-in hyperparameter of a trial: its own value, else the table's default. `model`
    names the model for the model's own hyperparameters."""
    spec = TRAINING_HPARAMS.get(name) or COMPRESS_HPARAMS.get(name) or MODEL_HPARAMS[model or ""][name]
    return hp.get(name, spec.default)


# (allowed keys with their types) per section.
SECTION_KEYS: dict[str, dict[str, type]] = {
    "dataset": {
        "name": str,
        "path": str,
        "function": str,
        "validation_fraction": float,
        "test_fraction": float,
        "split_seed": int,
        "classes": list,
        "image_size": list,
        "color_mode": str,
    },
    "preprocess": {"normalize": str, "drop_duplicates": bool, "drop_nonfinite": bool},
    "training": {"max_epochs": int, "seed": int, "checkpoint_every_s": float,
                 **{name: spec.kind for name, spec in TRAINING_HPARAMS.items()}},
    "objective": {"metric": str, "average": str, "direction": str},
    "compress": {"quantize": str, "sparsity": float, "finetune_epochs": int,
                 "calibration_samples": int},
}
TOP_LEVEL_KEYS = (
    "description", "dataset", "preprocess", "model", "training", "objective", "objectives",
    "constraints", "compress", "sampler", "pruner", "params",
)
# Filled in where a space leaves them out.
DEFAULTS: dict[str, dict[str, Any]] = {
    "dataset": {"validation_fraction": 0.15, "test_fraction": 0.15, "split_seed": 0},
    "preprocess": {"normalize": "unit", "drop_duplicates": True, "drop_nonfinite": True},
    "training": {"max_epochs": 20, "seed": 0,
                 **{name: TRAINING_HPARAMS[name].default
                    for name in ("batch_size", "optimizer", "learning_rate", "lr_schedule")}},
    "objective": {"metric": "f1", "average": "macro", "direction": "maximize"},
    # Two epochs of fine-tuning win back most of what pruning half the weights costs; 200 rows
    # are what TensorFlow's guide suggests for calibrating int8 ranges.
    "compress": {"quantize": "int8", "sparsity": 0.0, "finetune_epochs": 2,
                 "calibration_samples": 200},
}
QUANTIZE_CHOICES = ("int8", "none")
# How often a training trial writes its checkpoint at most, when its space does not say. Writing
# is spaced further apart where it is slow (sweeper.pipeline.train.Checkpointing: at most 2% of
# training time), so this bounds what a killed trial loses: the epochs of up to this many
# seconds. Not filled into the config: the cadence is no part of a study's meaning (its
# fingerprint), and a study made before the option existed resumes.
CHECKPOINT_EVERY_S = 10.0
MAX_FINETUNE_EPOCHS = 1000
# Samplers that can weigh several objectives, and those that can also honour constraints.
MULTI_OBJECTIVE_SAMPLERS = ("tpe", "random", "nsga2", "nsga3", "qmc", "grid")
CONSTRAINT_SAMPLERS = ("tpe", "nsga2", "nsga3")
# Pruners that can judge per-epoch F1 of a multi-objective study: Hyperband's brackets each
# build a study of their own, which would have no single direction to judge by.
MULTI_OBJECTIVE_PRUNERS = ("successive_halving", "median", "percentile", "none")

NORMALIZE_CHOICES = ("unit", "symmetric", "standardize", "none")
AVERAGE_CHOICES = ("macro", "weighted", "micro", "binary")

SAMPLER_ARGS: dict[str, dict[str, type]] = {
    "tpe": {"seed": int, "n_startup_trials": int, "multivariate": bool, "group": bool,
            "constant_liar": bool},
    "random": {"seed": int},
    "cmaes": {"seed": int, "n_startup_trials": int, "sigma0": float},
    "qmc": {"seed": int, "qmc_type": str, "scramble": bool},
    "grid": {"seed": int},
    "nsga2": {"seed": int, "population_size": int, "mutation_prob": float,
              "crossover_prob": float, "swapping_prob": float},
    "nsga3": {"seed": int, "population_size": int, "mutation_prob": float,
              "crossover_prob": float, "swapping_prob": float},
}
# Successive halving keeps the best quarter of the trials at two rungs, about a fifth and four
# fifths of max_epochs; the rest train to the end; no trial is stopped before 5 have completed.
# Measured on digits at equal training time (make bench, row 7: unpruned sweeps of 24 trials of 9
# epochs, 20 seeds): the pruned sweeps ran 28 trials (median) in the same epoch seconds, and their
# best F1 was 0.18 points ahead on average, at least as good in 12 of the 20 seeds; 6 of their
# first 8 trials trained fully (without the 5-trial rule, `sweep cnn_lr --trials 8` ended with 2).
# At equal trial counts, before that rule, it saved 50% of the epochs. A first rung at
# max_epochs / 9 (reduction factor 3) saved 63% but its best F1 was 1.75 points behind (5 seeds):
# one epoch says too little about a learning rate. Hyperband saved 40%: of its three brackets,
# one never prunes.
DEFAULT_PRUNER = "successive_halving"
HALVING = 4  # successive halving's reduction factor when a space gives none
# Successive halving stops no trial until this many have completed (space.pruning.AfterStartup):
# a short sweep still ends with several fully trained models to compare.
HALVING_STARTUP_TRIALS = 5


def halving_min_resource(max_epochs: int, reduction_factor: int = HALVING) -> int:
    """The first rung of successive halving: max_epochs / (reduction_factor + 1), so the second
    rung falls just below max_epochs."""
    return max(1, round(max_epochs / (reduction_factor + 1)))


# The Optuna classes behind the names.
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "cmaes": "CmaEsSampler",
            "qmc": "QMCSampler", "grid": "GridSampler", "nsga2": "NSGAIISampler",
            "nsga3": "NSGAIIISampler"}
PRUNERS = {"hyperband": "HyperbandPruner", "median": "MedianPruner",
           "percentile": "PercentilePruner", "successive_halving": "SuccessiveHalvingPruner",
           "none": "NopPruner"}
PRUNER_ARGS: dict[str, dict[str, type]] = {
    "hyperband": {"min_resource": int, "max_resource": int, "reduction_factor": int},
    "median": {"n_startup_trials": int, "n_warmup_steps": int, "interval_steps": int,
               "n_min_trials": int},
    "percentile": {"percentile": float, "n_startup_trials": int, "n_warmup_steps": int,
                   "interval_steps": int, "n_min_trials": int},
    "successive_halving": {"min_resource": int, "reduction_factor": int,
                           "min_early_stopping_rate": int, "n_startup_trials": int},
    "none": {},
}
# The smallest value of each pruner option.
PRUNER_MINIMUM = {"min_resource": 1, "max_resource": 1, "reduction_factor": 2,
                  "n_startup_trials": 0, "n_warmup_steps": 0, "interval_steps": 1,
                  "n_min_trials": 1, "min_early_stopping_rate": 0}
PARAM_KEYS = {
    "float": ("type", "low", "high", "log", "step", "when", "default"),
    "int": ("type", "low", "high", "log", "step", "when", "default"),
    "categorical": ("type", "choices", "when", "default"),
}
