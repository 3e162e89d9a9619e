"""A validated search space at run time: it suggests a trial's parameters, merges them with the
fixed hyperparameters, and makes the space's sampler and pruner."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from sweeper.space.schema import (
    CHECKPOINT_EVERY_S,
    HALVING,
    HALVING_STARTUP_TRIALS,
    PRUNERS,
    SAMPLERS,
    TRAINING_HPARAMS,
    halving_min_resource,
)

# Keys that say how a trial is run, not what it is: left out of the fingerprint.
CADENCE_KEYS = ("checkpoint_every_s",)


@dataclass(frozen=True)
class Param:
    """One searchable parameter; `when` maps earlier param names to the values that activate it."""

    name: str
    kind: str  # float | int | categorical
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()
    when: dict[str, tuple] = field(default_factory=dict)
    # What trials of an earlier space that lacked this param are taken to have had (warm starts).
    default: Any = None
    has_default: bool = False

    def is_active(self, chosen: dict[str, Any]) -> bool:
        return all(name in chosen and chosen[name] in values for name, values in self.when.items())

    def suggest(self, trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log,
                                     step=self.step or 1)
        return trial.suggest_categorical(self.name, list(self.choices))

    def contains(self, value) -> bool:
        """Whether `value` is one this param could suggest: in its range (on its step) or one of
        its choices, of the same type (True is not the choice 1)."""
        if self.kind == "categorical":
            return any(type(c) is type(value) and c == value for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (self.kind == "int" and not float(value).is_integer()):
            return False
        low, high, step = self.number_range()
        if not low <= value <= high:
            return False
        if self.step is None:
            return True
        steps = (value - low) / step
        return abs(steps - round(steps)) < 1e-9 * max(1.0, abs(steps))

    def describe(self) -> str:
        """'float 0.001..0.03 (log)', 'int 1..3', 'one of [8, 16, 32]'."""
        if self.kind == "categorical":
            return f"one of [{', '.join(map(str, self.choices))}]"
        return (f"{self.kind} {self.low}..{self.high}" + (f" step {self.step}" if self.step else "")
                + (" (log)" if self.log else ""))

    def distribution(self):
        """Optuna's distribution of this param, as Trial.suggest_* records it."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices))
        low, high, step = self.number_range()
        if self.kind == "float":
            return FloatDistribution(low, high, log=self.log, step=self.step)
        return IntDistribution(low, high, log=self.log, step=step)

    def meaning(self) -> dict:
        """What the fingerprint hashes: a param without a default hashes as it did before
        defaults existed, so the studies of those spaces still resume."""
        fields = dataclasses.asdict(self)
        if not self.has_default:
            del fields["default"], fields["has_default"]
        return fields

    def number_range(self) -> tuple[Any, Any, Any]:
        """(low, high, step) of a float or int param; the step is 1 where none is given."""
        assert self.low is not None and self.high is not None, self.kind
        return self.low, self.high, self.step or 1

    def grid_size(self) -> int:
        if self.kind == "categorical":
            return len(self.choices)
        low, high, step = self.number_range()
        return int(math.floor((high - low) / step + 1e-9)) + 1

    def grid_values(self) -> list:
        if self.kind == "categorical":
            return list(self.choices)
        low, high, step = self.number_range()
        if self.kind == "int":
            return list(range(low, high + 1, step))
        return [round(low + i * step, 12) for i in range(self.grid_size())]


@dataclass
class SearchSpace:
    """A validated search space. `config` is the parsed YAML with defaults filled in."""

    name: str
    source: str  # the file it came from, for messages
    text: str  # the YAML as written, stored in the study so any worker can rebuild the space
    config: dict[str, Any]
    params: list[Param]

    @property
    def fingerprint(self) -> str:
        """Hash of the meaning of the space (not its comments or layout), params included."""
        params = [p.meaning() for p in self.params]
        config = {**self.config, "training": {k: v for k, v in self.config["training"].items()
                                              if k not in CADENCE_KEYS}}
        canonical = json.dumps([config, params], sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        return self.config["objective"]["direction"]

    @property
    def max_epochs(self) -> int:
        return self.config["training"]["max_epochs"]

    @property
    def checkpoint_every_s(self) -> float:
        return float(self.config["training"].get("checkpoint_every_s", CHECKPOINT_EVERY_S))

    @property
    def objectives(self) -> list[str]:
        """The metrics the study optimises (sweeper.metrics), f1 first."""
        return list(self.config.get("objectives") or ["f1"])

    @property
    def directions(self) -> list[Literal["minimize", "maximize"]]:
        from sweeper.metrics import METRICS

        return [self.direction] + [cast(Literal["minimize", "maximize"], METRICS[name].direction)
                                   for name in self.objectives[1:]]

    @property
    def is_multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def compress(self) -> dict | None:
        """The compress stage's settings, or None where the space has no compress stage."""
        return self.config.get("compress")

    @functools.cached_property
    def constraints(self) -> list:  # parsed once: each trial reads them
        from sweeper.metrics import parse_bound

        return [parse_bound(text) for text in self.config.get("constraints") or []]

    def suggest(self, trial) -> dict[str, Any]:
        """Ask the trial for every active param, in file order (conditions look backwards)."""
        chosen: dict[str, Any] = {}
        for param in self.params:
            if param.is_active(chosen):
                chosen[param.name] = param.suggest(trial)
        return chosen

    def hyperparameters(self, chosen: dict[str, Any]) -> dict[str, Any]:
        """The fixed values of the model and training sections, overridden by the trial's params."""
        fixed = {k: v for k, v in self.config["model"].items() if k not in ("name", "function")}
        fixed.update({k: v for k, v in self.config["training"].items() if k in TRAINING_HPARAMS})
        return {**fixed, **chosen}

    def make_sampler(self, seed: int | None = None):
        """The space's sampler; `seed` in place of its own (a worker's stream: sweeper.worker)."""
        import optuna

        spec = dict(self.config["sampler"])
        if seed is not None:
            spec["seed"] = seed
        sampler = getattr(optuna.samplers, SAMPLERS[spec.pop("name")])
        if sampler is optuna.samplers.GridSampler:
            return sampler({p.name: p.grid_values() for p in self.params}, **spec)
        return sampler(**spec)

    def constraints_of(self, trial) -> dict[str, float]:
        """The trial's constraint values by constraint, as Trial.set_constraint takes them."""
        return {str(bound): violation
                for bound, violation in zip(self.constraints, self.constraint_values(trial))}

    def constraint_values(self, trial) -> list[float]:
        """Per constraint, how far the trial is past it (<= 0 holds), as Optuna's samplers take
        constraints (Trial.set_constraint)."""
        from sweeper.metrics import metric_value

        return [bound.violation(metric_value(bound.metric, trial)) for bound in self.constraints]

    def make_pruner(self):
        import optuna

        from sweeper.space.pruning import AfterStartup  # imports Optuna: not at start-up

        spec = dict(self.config["pruner"])
        pruner = getattr(optuna.pruners, PRUNERS[spec.pop("name")])
        if pruner is optuna.pruners.HyperbandPruner:
            spec.setdefault("max_resource", self.max_epochs)
        if pruner is optuna.pruners.SuccessiveHalvingPruner:
            # Defaults set here, not in the validated config, so the fingerprints of studies
            # made before a default existed stay the same.
            startup = spec.pop("n_startup_trials", HALVING_STARTUP_TRIALS)
            spec.setdefault("reduction_factor", HALVING)
            spec.setdefault("min_resource",
                            halving_min_resource(self.max_epochs, spec["reduction_factor"]))
            return AfterStartup(pruner(**spec), startup) if startup else pruner(**spec)
        return pruner(**spec)
