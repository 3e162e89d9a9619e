"""What a trial is judged by: each metric's name, unit, better direction and where it lives on a
trial; and bounds on them written as plain text, `size_kb <= 64`.

A space's `objectives` and `constraints`, `sweeper best --pick` and the report all read metrics
here, so a name means the same thing everywhere. `f1` is the deployed model's validation F1: the
compressed model's where the space compresses, else the trained model's.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sweeper import keys


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str  # maximize | minimize
    label: str  # for tables and plot axes, with its unit
    key: str  # the trial attribute it is read from
    scale: float = 1.0  # the attribute's value / scale = the metric's value
    needs_compress: bool = True  # only a space with a compress stage measures it


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("f1", "maximize", "val F1", keys.COMPRESSED_VAL_F1, needs_compress=False),
    Metric("size_kb", "minimize", "size KiB (gzipped)", keys.COMPRESSED_GZIP_BYTES, 1024),
    Metric("file_kb", "minimize", "file KiB", keys.COMPRESSED_BYTES, 1024),
    Metric("latency_ms", "minimize", "ms/sample", keys.LATENCY_MS),
    Metric("params", "minimize", "non-zero weights", keys.NONZERO_PARAMS),
)}


def metric_value(name: str, trial) -> float | None:
    """The metric of a trial (a FrozenTrial, or anything with user_attrs and values), or None when
    the trial never measured it (pruned before the compress stage, failed)."""
    metric = METRICS[name]
    value = trial.user_attrs.get(metric.key)
    if value is None and name == "f1":  # a space without a compress stage
        value = trial.user_attrs.get(keys.FLOAT_VAL_F1)
        if value is None and trial.values:
            value = trial.values[0]
    return None if value is None else float(value) / metric.scale


def measures(trial) -> dict[str, float]:
    """Every metric the trial measured, by name."""
    values = {name: metric_value(name, trial) for name in METRICS}
    return {name: value for name, value in values.items() if value is not None}


def delivered_test_f1(trial) -> float | None:
    """Test F1 of the model the trial delivers, as `f1` is its validation F1."""
    value = trial.user_attrs.get(keys.COMPRESSED_TEST_F1)
    return trial.user_attrs.get(keys.TEST_F1) if value is None else value


class BoundError(ValueError):
    """A bound or pick that cannot be read; its message says what is wrong and the fix."""


_BOUND = re.compile(r"^\s*([A-Za-z_]\w*)\s*(<=|>=|<|>)\s*([^\s<>=]+)\s*$")


@dataclass(frozen=True)
class Bound:
    """`metric op limit`, e.g. size_kb <= 64."""

    metric: str
    op: str
    limit: float

    def violation(self, value: float | None) -> float:
        """How far a value is past the bound: <= 0 holds (what Optuna's constraints take); a
        value never measured counts as holding, so a pruned trial is judged by F1 alone."""
        if value is None:
            return 0.0
        return value - self.limit if self.op in ("<=", "<") else self.limit - value

    def holds(self, value: float | None) -> bool:
        if value is None:
            return False
        return {"<=": value <= self.limit, "<": value < self.limit,
                ">=": value >= self.limit, ">": value > self.limit}[self.op]

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.limit:g}"


def parse_bound(text) -> Bound:
    match = _BOUND.match(text) if isinstance(text, str) else None
    if match is None:
        raise BoundError(f"'{text}' is not a bound; write it as METRIC <= NUMBER, e.g. size_kb <= 64")
    name, op, limit_text = match.groups()
    if name not in METRICS:
        raise BoundError(f"'{name}' is not a metric; use one of: {', '.join(METRICS)}")
    try:
        limit = float(limit_text)
    except ValueError:
        raise BoundError(f"'{limit_text}' in '{text.strip()}' is not a number; "
                         "write e.g. size_kb <= 64") from None
    if not math.isfinite(limit):
        raise BoundError(f"'{limit_text}' in '{text.strip()}' is not finite; write a finite number")
    return Bound(name, op, limit)


@dataclass(frozen=True)
class Pick:
    """`max f1 where size_kb <= 64 and latency_ms < 0.05`: one point of a Pareto front."""

    goal: str  # max | min
    metric: str
    bounds: tuple[Bound, ...] = ()

    def choose(self, trials: list):
        """The trial that best meets the pick among those within every bound, or None."""
        fits = [t for t in trials if metric_value(self.metric, t) is not None
                and all(b.holds(metric_value(b.metric, t)) for b in self.bounds)]
        if not fits:
            return None
        best = max if self.goal == "max" else min
        return best(fits, key=lambda t: metric_value(self.metric, t) or 0.0)

    def __str__(self) -> str:
        where = " and ".join(map(str, self.bounds))
        return f"{self.goal} {self.metric}" + (f" where {where}" if where else "")


def parse_pick(text: str) -> Pick:
    head, _, tail = text.strip().partition(" where ")
    words = head.split()
    if len(words) != 2 or words[0] not in ("max", "min"):
        raise BoundError(f"'{text}' is not a pick; write e.g. \"max f1 where size_kb <= 64\"")
    if words[1] not in METRICS:
        raise BoundError(f"'{words[1]}' is not a metric; use one of: {', '.join(METRICS)}")
    bounds = tuple(parse_bound(part) for part in re.split(r"\s+and\s+", tail)) if tail.strip() \
        else ()
    return Pick(words[0], words[1], bounds)
