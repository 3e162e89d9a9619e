"""Checks of a space's `params`: each a float, int or categorical with sane bounds, conditions that
refer to params above them, names the model reads, and a grid that can be enumerated."""

from __future__ import annotations

import dataclasses
import difflib
import math

from sweeper.space.checks import Checks
from sweeper.space.runtime import Param
from sweeper.space.schema import COMPRESS_HPARAMS, MODEL_HPARAMS, PARAM_KEYS, TRAINING_HPARAMS, HParam
from sweeper.text import shown

GRID_LIMIT = 1_000_000


class ParamChecks(Checks):
    def params(self, raw, model: dict, compress: bool = False) -> list[Param]:
        specs = self.mapping(raw.get("params"), "params")
        if not specs:
            self.fail("params", "is empty", "add at least one parameter to search")
        known = known_hparams(model, compress)
        params: list[Param] = []
        for name, spec in specs.items():
            key = f"params.{name}"
            if not name.strip() or not name.isprintable():  # stores refuse e.g. NUL in names
                self.fail(key, "is not a usable name", "use letters, digits and _")
            if known is not None and name not in known:
                hint = difflib.get_close_matches(name, list(known), n=1)
                fix = f"did you mean '{hint[0]}'?" if hint else \
                    f"model {model['name']} reads: {', '.join(known)}"
                self.fail(key, f"model {model['name']} has no parameter '{name}'", fix)
            params.append(self.param(name, spec, key, params, (known or {}).get(name)))
        return params

    def param(self, name: str, spec, key: str, earlier: list[Param], known: HParam | None) -> Param:
        spec = self.mapping(spec, key)
        kind = spec.get("type")
        if kind is None:
            self.fail(f"{key}.type", "is missing", "add type: float, int or categorical")
        self.choice(kind, tuple(PARAM_KEYS), f"{key}.type")
        self.known_keys(spec, PARAM_KEYS[kind], key)
        when = self.condition(spec.get("when"), f"{key}.when", earlier)
        if kind == "categorical":
            param = Param(name, kind, choices=self.choices(spec, key, known), when=when)
        else:
            param = self.numeric(name, kind, spec, key, when, known)
        return self.default(param, spec, key) if "default" in spec else param

    def default(self, param: Param, spec: dict, key: str) -> Param:
        """`default:` is the value that trials of an earlier space, which lacked the param, are
        taken to have had when a sweep warm-starts from them: it must be one it could suggest."""
        value = spec["default"]
        if param.kind == "float":  # 1 and 1e-3 (text to PyYAML) are floats here
            value = float(self.typed(value, float, f"{key}.default"))
        if not param.contains(value):
            self.fail(f"{key}.default", f"{shown(value)} is not a value of this param "
                      f"({param.describe()})", "give one inside its range or choices")
        return dataclasses.replace(param, default=value, has_default=True)

    def choices(self, spec: dict, key: str, known: HParam | None) -> tuple:
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            self.fail(f"{key}.choices", "must be a non-empty list", "write choices: [a, b]")
        for c in choices:
            if c is not None and not isinstance(c, (bool, int, float, str)):
                self.fail(f"{key}.choices", f"choice {shown(c)} is not a plain value",
                          "use numbers, text, true/false or null")
            if isinstance(c, float) and not math.isfinite(c):
                self.fail(f"{key}.choices", f"choice {c} is not finite", "use finite numbers")
            if known is not None and c is not None:
                if known.kind is float and isinstance(c, str):
                    c = self.typed(c, float, f"{key}.choices")
                self.typed(c, known.kind, f"{key}.choices")
                self.hparam_value(known, c, f"{key}.choices")
        if len(set(map(repr, choices))) != len(choices):
            self.fail(f"{key}.choices", "has the same choice twice", "list each choice once")
        if known is not None and known.kind is float:
            choices = [float(c) if isinstance(c, str) else c for c in choices]
        return tuple(choices)

    def numeric(self, name: str, kind: str, spec: dict, key: str, when: dict,
                known: HParam | None) -> Param:
        number = float if kind == "float" else int
        for bound in ("low", "high"):
            if bound not in spec:
                self.fail(f"{key}.{bound}", "is missing", f"add {bound}: <number>")
        low = self.typed(spec["low"], number, f"{key}.low")
        high = self.typed(spec["high"], number, f"{key}.high")
        log = self.typed(spec.get("log", False), bool, f"{key}.log")
        step = spec.get("step")
        if step is not None:
            step = self.typed(step, number, f"{key}.step")
            if step <= 0:
                self.fail(f"{key}.step", f"must be positive, got {step}", "write e.g. 0.1")
            if log:
                self.fail(f"{key}.step", "cannot be used with log: true", "drop step or log")
        if low >= high:
            self.fail(key, f"low ({low}) must be below high ({high})", "swap or widen them")
        if log and low <= 0:
            self.fail(f"{key}.low", f"must be > 0 when log is true, got {low}",
                      "use a positive low or log: false")
        if known is not None:
            if known.kind is int and kind != "int":
                self.fail(f"{key}.type", f"{name} takes whole numbers", "use type: int")
            if known.kind in (bool, str):
                self.fail(f"{key}.type", f"{name} takes {known.kind.__name__} values",
                          "use type: categorical with choices")
            self.hparam_value(known, low, f"{key}.low")
            self.hparam_value(known, high, f"{key}.high")
        return Param(name, kind, low=low, high=high, log=log, step=step, when=when)

    def condition(self, when, key: str, earlier: list[Param]) -> dict[str, tuple]:
        if when is None:
            return {}
        when = self.mapping(when, key)
        if not when:
            self.fail(key, "is empty", "write e.g. when: {optimizer: sgd}")
        by_name = {p.name: p for p in earlier}
        result = {}
        for ref, values in when.items():
            if ref not in by_name:
                self.fail(f"{key}.{ref}", f"'{ref}' is not a param defined above this one",
                          "define that param first, or fix the name")
            values = tuple(values) if isinstance(values, list) else (values,)
            target = by_name[ref]
            if target.kind == "categorical":
                for v in values:
                    if v not in target.choices:
                        self.fail(f"{key}.{ref}", f"{shown(v)} is not one of its choices",
                                  f"use one of: {', '.join(map(str, target.choices))}")
            result[ref] = values
        return result

    def check_grid(self, params: list[Param]):
        for p in params:
            if p.kind == "float" and p.step is None:
                self.fail(f"params.{p.name}", "a grid needs a step for float params",
                          "add step: or use type: categorical")
            if p.kind == "int" and p.log:
                self.fail(f"params.{p.name}", "a grid cannot enumerate a log-scale int",
                          "drop log: true or use type: categorical")
            # Checked as a float first: a tiny step makes the count infinite.
            if p.kind != "categorical" and \
                    (p.number_range()[1] - p.number_range()[0]) / p.number_range()[2] >= GRID_LIMIT:
                self.fail(f"params.{p.name}", "has a million grid points or more",
                          "use a larger step or another sampler")
        size = math.prod(p.grid_size() for p in params)
        if size > GRID_LIMIT:
            self.fail("params", f"the grid has {size} points", "use fewer values or another sampler")


def known_hparams(model: dict, compress: bool = False) -> dict[str, HParam] | None:
    """The hyperparameters the built-in model (and the compress stage, when the space has one)
    reads; None for a user's model (any name)."""
    if "function" in model:
        return None
    return {**TRAINING_HPARAMS, **MODEL_HPARAMS[model["name"]],
            **(COMPRESS_HPARAMS if compress else {})}
