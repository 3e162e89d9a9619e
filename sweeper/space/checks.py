"""The small checks a space's validator is made of: each either returns the value (converted
where YAML reads it loosely) or stops with one line: the file, the key, what is wrong, the fix."""

from __future__ import annotations

import difflib
import math
from typing import NoReturn

from sweeper.space.schema import SECTION_KEYS, HParam
from sweeper.space.yaml_file import space_error
from sweeper.text import shown


class Checks:
    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, problem: str, fix: str) -> NoReturn:
        raise space_error(f"{self.source}: {key}: {problem}; {fix}")

    def mapping(self, value, key: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(key, f"must be a mapping, got {shown(value)}",
                      "write it as 'key: value' lines under it")
        for k in value:
            if not isinstance(k, str):
                self.fail(key, f"key {shown(k)} is not a name", "use text keys")
        return value

    def known_keys(self, mapping: dict, allowed, key: str):
        for k in mapping:
            if k not in allowed:
                hint = difflib.get_close_matches(k, list(allowed), n=1)
                fix = f"did you mean '{hint[0]}'?" if hint else f"known keys: {', '.join(allowed)}"
                self.fail(f"{key}.{k}" if key else k, "unknown key", fix)

    def typed(self, value, kind: type, key: str):
        """Check one scalar's type; ints are fine where floats are asked, numeric text too."""
        if kind is bool:
            if not isinstance(value, bool):
                self.fail(key, f"must be true or false, got {shown(value)}", "write true or false")
            return value
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.fail(key, f"must be a whole number, got {shown(value)}", "write e.g. 3")
            if abs(value) > 2**53:
                self.fail(key, f"{shown(value)} is too large", "use a smaller number")
            return value
        if kind is float:
            if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as text
                try:
                    value = float(value)
                except ValueError:
                    pass
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.fail(key, f"must be a number, got {shown(value)}", "write e.g. 0.001")
            if isinstance(value, float) and not math.isfinite(value):
                self.fail(key, f"must be finite, got {value}", "write a finite number")
            if abs(value) > 1e300:  # exact for ints, which math.isfinite cannot take past 1e308
                self.fail(key, f"{shown(value)} is too large", "use a smaller number")
            return float(value) if isinstance(value, float) else value
        if kind is str:
            if not isinstance(value, str) or not value:
                self.fail(key, f"must be text, got {shown(value)}", "write a word")
            return value
        if kind is list:
            if not isinstance(value, list) or not value:
                self.fail(key, f"must be a non-empty list, got {shown(value)}",
                          "write it as [a, b, ...]")
            return value
        raise AssertionError(kind)

    def choice(self, value, choices, key: str):
        if value not in choices:
            self.fail(key, f"unknown value {shown(value)}", f"use one of: {', '.join(choices)}")
        return value

    def section(self, raw: dict, name: str) -> dict:
        section = dict(self.mapping(raw.get(name), name))
        allowed = SECTION_KEYS[name]
        self.known_keys(section, allowed, name)
        for k, v in section.items():
            section[k] = self.typed(v, allowed[k], f"{name}.{k}")
        return section

    def seed(self, section: dict, name: str, key: str):
        # Seeds reach numpy, which takes 0 .. 2**32 - 1; trial and worker numbers are added later.
        if name in section and not 0 <= section[name] < 2**31:
            self.fail(key, f"must be between 0 and {2**31 - 1}, got {section[name]}",
                      "write e.g. 0")

    def fraction(self, value: float, key: str):
        if not 0 < value < 1:
            self.fail(key, f"must be between 0 and 1, got {value}", "write e.g. 0.15")

    def import_path(self, value, key: str):
        self.typed(value, str, key)
        module, _, func = value.partition(":")
        if not module or not func or not all(part.isidentifier() for part in module.split(".")) \
                or not func.isidentifier():
            self.fail(key, f"{shown(value)} is not an import path",
                      "write it as package.module:function")

    def hparam_value(self, spec: HParam, value, key: str):
        """The value of a known hyperparameter, fixed or a categorical choice, within its bounds."""
        problem = spec.problem(value)
        if problem:
            self.fail(key, *problem)
