"""What changed between two versions of a search space, and which trials of the old one fit the
new one: the rules of a warm start (sweeper.sweep.warm_start). Pure functions, no store.

- A trial fits the new space when every param the new space would ask for, given the trial's
  other params, has a value it could suggest (inside the new range or choices):
  - the trial's own value, when the old space searched the param;
  - else the value the trial ran with, when the old space says it: a fixed setting of its model
    or training section, or the built-in model's own default;
  - else the param's `default:` (a user's own model, whose defaults sweeper cannot know).
  A trial with none of these does not fit.
- A param the trial has but the new space would not ask for is ignored when the new space dropped
  it altogether, and makes the trial a misfit when a `when:` condition now leaves it out: its
  result depended on a value the new space says is not set.
- A trial's values carry over only when no setting that changes results changed: the sections in
  RESULT_SECTIONS, less the keys that either space searches (a value moved from a fixed setting
  into the params, or back, is judged by the fit rules instead). The sampler, the pruner, the
  constraints and the description change how the search goes on, not what a value means.
"""

from __future__ import annotations

import json
from typing import Any

from sweeper.space.params import known_hparams
from sweeper.space.runtime import Param, SearchSpace
from sweeper.text import shown

# The sections whose change makes past values incomparable: the data, how it is prepared, the
# model, how it is trained, what is measured, and how the model is compressed before measuring.
RESULT_SECTIONS = ("dataset", "preprocess", "model", "training", "objective", "objectives",
                   "compress")


def ran_with(old: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    """The settings a trial of `old` with these params trained with, as far as `old` says."""
    settings = old.hyperparameters(params)
    if old.compress is not None:
        settings.setdefault("sparsity", old.compress["sparsity"])
    for name, spec in (known_hparams(old.config["model"], old.compress is not None) or {}).items():
        settings.setdefault(name, spec.default)
    return settings


def fit(params: dict[str, Any], space: SearchSpace,
        settings: dict[str, Any] | None = None) -> tuple[dict[str, Any] | None, str]:
    """(the trial's params as the new space would have suggested them, '') or (None, why not).
    `settings` is what the trial ran with beyond its params (ran_with), where known."""
    settings = settings or {}
    fitted: dict[str, Any] = {}
    for param in space.params:
        if not param.is_active(fitted):
            if param.name in params:
                return None, f"{param.name} is no longer searched when {_condition(param)}"
            continue
        if param.name in params:
            value, source = params[param.name], ""
        elif param.name in settings:
            value, source = settings[param.name], "ran with "
        elif param.has_default:
            value, source = param.default, "default "
        else:
            return None, f"{param.name} is new and has no default:"
        if not param.contains(value):
            return None, f"{param.name}: {source}{shown(value)} is outside {param.describe()}"
        fitted[param.name] = value
    return fitted, ""


def result_changes(old: SearchSpace, new: SearchSpace) -> list[str]:
    """The changed settings that make the old trials' values incomparable, e.g.
    ['training.max_epochs: 12 -> 20']."""
    searched = {p.name for p in old.params} | {p.name for p in new.params}
    return [line for section in RESULT_SECTIONS
            for line in _changed(section, _fixed(old.config.get(section), searched),
                                 _fixed(new.config.get(section), searched))]


def space_changes(old: SearchSpace, new: SearchSpace) -> list[str]:
    """Everything that changed, one line each: params added, dropped or changed, then settings."""
    before = {p.name: p for p in old.params}
    after = {p.name: p for p in new.params}
    lines = [f"{name}: dropped" for name in before if name not in after]
    for name, param in after.items():
        if name not in before:
            lines.append(f"{name}: added ({_searched(param)})")
        elif _searched(before[name]) != _searched(param):
            lines.append(f"{name}: {_searched(before[name])} -> {_searched(param)}")
    sections = sorted(set(old.config) | set(new.config))
    return lines + [line for section in sections
                    for line in _changed(section, old.config.get(section), new.config.get(section))]


def _fixed(section, searched: set[str]):
    """A section without the keys that a space searches."""
    if not isinstance(section, dict):
        return section
    return {k: v for k, v in section.items() if k not in searched}


def _searched(param: Param) -> str:
    return param.describe() + (f" when {_condition(param)}" if param.when else "")


def _condition(param: Param) -> str:
    return ", ".join(f"{name} in {list(values)}" for name, values in param.when.items())


def _changed(key: str, old, new) -> list[str]:
    """'key.sub: old -> new' for each leaf that differs (a section absent on one side is None)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for sub in sorted(set(old) | set(new), key=str)
                for line in _changed(f"{key}.{sub}", old.get(sub), new.get(sub))]
    if old == new:
        return []
    return [f"{key}: {_value(old)} -> {_value(new)}"]


def _value(value) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, list):  # e.g. objectives: short enough to show whole
        text = json.dumps(value, default=str)
        return text if len(text) <= 60 else text[:57] + "..."
    return shown(value)
