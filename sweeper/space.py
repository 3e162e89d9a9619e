"""Search spaces: a YAML file -> a validated SearchSpace that suggests a trial's parameters.

Everything is checked here, before any worker starts or anything is written to a store. A problem
raises SpaceError with one line: the file, the key, what is wrong and how to fix it.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sweeper.errors import SpaceError

SPACES_DIR = Path("search_spaces")

BUILTIN_DATASETS = ("digits", "breast_cancer", "mnist", "fashion_mnist", "cifar10")
BUILTIN_MODELS = ("cnn", "mlp")

# Hyperparameters the built-in code reads. A param or fixed value with another name is a typo
# unless the model is a user function, which may read any name.
TRAINING_HPARAMS = {
    "batch_size": int,
    "optimizer": str,
    "learning_rate": float,
    "momentum": float,
    "weight_decay": float,
    "lr_schedule": str,
}
MODEL_HPARAMS = {
    "cnn": {
        "conv_blocks": int,
        "filters": int,
        "kernel_size": int,
        "batch_norm": bool,
        "dropout": float,
        "dense_units": int,
        "augment_strength": float,
        "augment_flip": bool,
    },
    "mlp": {
        "hidden_layers": int,
        "units": int,
        "dropout": float,
        "activation": str,
        "batch_norm": bool,
    },
}
CHOICES = {
    "optimizer": ("adam", "adamw", "sgd", "rmsprop"),
    "lr_schedule": ("constant", "cosine", "exponential"),
    "activation": ("relu", "gelu", "tanh", "elu", "swish"),
}

# (allowed keys with their types) per section; `None` marks a free-form section.
SECTION_KEYS: dict[str, dict[str, Any]] = {
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
    "training": {"max_epochs": int, "seed": int, **TRAINING_HPARAMS},
    "objective": {"metric": str, "average": str, "direction": str},
}
TOP_LEVEL_KEYS = (
    "description", "dataset", "preprocess", "model", "training", "objective", "sampler", "pruner",
    "params",
)

NORMALIZE_CHOICES = ("unit", "symmetric", "standardize", "none")
AVERAGE_CHOICES = ("macro", "weighted", "micro", "binary")

SAMPLER_ARGS: dict[str, dict[str, type]] = {
    "tpe": {"seed": int, "n_startup_trials": int, "multivariate": bool, "group": bool,
            "constant_liar": bool},
    "random": {"seed": int},
    "cmaes": {"seed": int, "n_startup_trials": int, "sigma0": float},
    "qmc": {"seed": int, "qmc_type": str, "scramble": bool},
    "grid": {"seed": int},
}
PRUNER_ARGS: dict[str, dict[str, type]] = {
    "hyperband": {"min_resource": int, "max_resource": int, "reduction_factor": int},
    "median": {"n_startup_trials": int, "n_warmup_steps": int, "interval_steps": int,
               "n_min_trials": int},
    "percentile": {"percentile": float, "n_startup_trials": int, "n_warmup_steps": int,
                   "interval_steps": int, "n_min_trials": int},
    "successive_halving": {"min_resource": int, "reduction_factor": int,
                           "min_early_stopping_rate": int},
    "none": {},
}
PARAM_KEYS = {
    "float": ("type", "low", "high", "log", "step", "when"),
    "int": ("type", "low", "high", "log", "step", "when"),
    "categorical": ("type", "choices", "when"),
}


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

    def is_active(self, chosen: dict[str, Any]) -> bool:
        return all(name in chosen and chosen[name] in values for name, values in self.when.items())

    def suggest(self, trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log,
                                     step=self.step or 1)
        return trial.suggest_categorical(self.name, list(self.choices))

    def grid_size(self) -> int:
        if self.kind == "categorical":
            return len(self.choices)
        return int(math.floor((self.high - self.low) / (self.step or 1) + 1e-9)) + 1

    def grid_values(self) -> list:
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(self.low, self.high + 1, self.step or 1))
        return [round(self.low + i * self.step, 12) for i in range(self.grid_size())]


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
        params = [dataclasses.asdict(p) for p in self.params]
        canonical = json.dumps([self.config, params], sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def direction(self) -> str:
        return self.config["objective"]["direction"]

    @property
    def max_epochs(self) -> int:
        return self.config["training"]["max_epochs"]

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

    def make_sampler(self):
        import optuna

        spec = dict(self.config["sampler"])
        name = spec.pop("name")
        if name == "tpe":
            return optuna.samplers.TPESampler(**spec)
        if name == "random":
            return optuna.samplers.RandomSampler(**spec)
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(**spec)
        if name == "qmc":
            return optuna.samplers.QMCSampler(**spec)
        grid = {p.name: p.grid_values() for p in self.params}
        return optuna.samplers.GridSampler(grid, **spec)

    def make_pruner(self):
        import optuna

        spec = dict(self.config["pruner"])
        name = spec.pop("name")
        if name == "hyperband":
            spec.setdefault("max_resource", self.max_epochs)
            return optuna.pruners.HyperbandPruner(**spec)
        if name == "median":
            return optuna.pruners.MedianPruner(**spec)
        if name == "percentile":
            return optuna.pruners.PercentilePruner(**spec)
        if name == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(**spec)
        return optuna.pruners.NopPruner()


# ---------------------------------------------------------------------------------------------
# Loading


def space_path(name: str, spaces_dir: Path | str = SPACES_DIR) -> Path:
    """`cnn_lr` -> search_spaces/cnn_lr.yaml; a path to a .yaml file is taken as it is."""
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        return Path(name)
    return Path(spaces_dir) / f"{name}.yaml"


def available_spaces(spaces_dir: Path | str = SPACES_DIR) -> list[str]:
    folder = Path(spaces_dir)
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_space(name: str, spaces_dir: Path | str = SPACES_DIR) -> SearchSpace:
    """Read and validate a space by name (search_spaces/<name>.yaml) or by path."""
    path = space_path(name, spaces_dir)
    try:
        found = path.is_file()
    except OSError as e:  # e.g. a name longer than the file system allows
        raise _space_error(f"{path}: cannot be read ({e.strerror}); check the name") from None
    if not found:
        known = ", ".join(available_spaces(spaces_dir)) or "none"
        raise _space_error(
            f"{path}: no such search space '{name}'; known spaces: {known} "
            f"(add {path} or pick one of those)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _space_error(f"{path}: not UTF-8 text; save the file as UTF-8") from None
    except OSError as e:
        raise _space_error(
            f"{path}: cannot be read ({e.strerror}); check its permissions") from None
    return parse_space(text, source=str(path), name=path.stem)


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML (no object construction) that refuses duplicate keys instead of keeping the last."""

    def construct_object(self, node, deep=False):
        if not isinstance(node, yaml.ScalarNode):
            return super().construct_object(node, deep=deep)
        if not node.value.isascii() and any("\ud800" <= c <= "\udfff" for c in node.value):
            # "\ud800" escapes give text that no store can save (it is not UTF-8)
            raise yaml.constructor.ConstructorError(
                None, None, "a lone surrogate escape (\\uD800-\\uDFFF) is not text",
                node.start_mark)
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, KeyError, AttributeError):
            # PyYAML's scalar constructors fail like this on `2024-02-30`, `!!bool maybe`,
            # `!!timestamp soon` or an int of more than 4300 digits.
            kind = node.tag.rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(
                None, None, f"{_describe(node.value)} is not a valid {kind} (quote it if it is "
                "text)", node.start_mark) from None


def _construct_unique_mapping(loader, node, deep=False):
    if not isinstance(node, yaml.MappingNode):  # e.g. `!!map [a, b]`
        raise yaml.constructor.ConstructorError(
            None, None, f"expected a mapping, found a {node.id}", node.start_mark)
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            # Merges copy mappings into each other: nested ones grow exponentially.
            raise yaml.constructor.ConstructorError(
                None, None, "merge keys (<<) are not supported (write the keys out)",
                key_node.start_mark)
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)  # not `key in seen`: that takes a set (`!!set {a}: 1`), which add() refuses
        except TypeError:  # unhashable key such as a list
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be a plain value, not {type(key).__name__}",
                key_node.start_mark) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {_describe(key)}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def parse_space(text: str, source: str = "<space>", name: str = "space") -> SearchSpace:
    """Validate YAML text into a SearchSpace. `source` names the file in messages."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise _space_error(f"{source}: invalid YAML{where}: {problem}; fix the syntax") from None
    except ValueError as e:  # PyYAML's scanner on "\U00110000" or a %YAML version of 5000 digits
        raise _space_error(f"{source}: invalid YAML: unreadable escape or number ({e}); "
                           "fix the syntax") from None
    except RecursionError:
        raise _space_error(f"{source}: YAML nested too deeply; flatten the file") from None
    return _Validator(source).space(raw, text, name)


class _Validator:
    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, problem: str, fix: str):
        raise _space_error(f"{self.source}: {key}: {problem}; {fix}")

    # -- small checks ------------------------------------------------------------------------

    def mapping(self, value, key: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(key, f"must be a mapping, got {_describe(value)}",
                      "write it as 'key: value' lines under it")
        for k in value:
            if not isinstance(k, str):
                self.fail(key, f"key {_describe(k)} is not a name", "use text keys")
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
                self.fail(key, f"must be true or false, got {_describe(value)}", "write true or false")
            return value
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.fail(key, f"must be a whole number, got {_describe(value)}", "write e.g. 3")
            if abs(value) > 2**53:
                self.fail(key, f"{_describe(value)} is too large", "use a smaller number")
            return value
        if kind is float:
            if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as text
                try:
                    value = float(value)
                except ValueError:
                    pass
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.fail(key, f"must be a number, got {_describe(value)}", "write e.g. 0.001")
            if isinstance(value, float) and not math.isfinite(value):
                self.fail(key, f"must be finite, got {value}", "write a finite number")
            if abs(value) > 1e300:  # exact for ints, which math.isfinite cannot take past 1e308
                self.fail(key, f"{_describe(value)} is too large", "use a smaller number")
            return float(value) if isinstance(value, float) else value
        if kind is str:
            if not isinstance(value, str) or not value:
                self.fail(key, f"must be text, got {_describe(value)}", "write a word")
            return value
        if kind is list:
            if not isinstance(value, list) or not value:
                self.fail(key, f"must be a non-empty list, got {_describe(value)}",
                          "write it as [a, b, ...]")
            return value
        raise AssertionError(kind)

    def choice(self, value, choices, key: str):
        if value not in choices:
            self.fail(key, f"unknown value {_describe(value)}", f"use one of: {', '.join(choices)}")
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

    # -- sections ----------------------------------------------------------------------------

    def space(self, raw, text: str, name: str) -> SearchSpace:
        if raw is None:
            self.fail("(file)", "is empty", "write at least a params section")
        raw = self.mapping(raw, "(top level)")
        self.known_keys(raw, TOP_LEVEL_KEYS, "")
        if isinstance(raw.get("description"), (dict, list, set)):  # its text could be huge
            self.fail("description", f"must be text, got {_describe(raw['description'])}",
                      "write one line of text")
        config = {
            "description": str(raw.get("description") or ""),
            "dataset": self.dataset(raw),
            "preprocess": self.preprocess(raw),
            "model": None,
            "training": self.training(raw),
            "objective": self.objective(raw),
            "sampler": self.sampler(raw),
            "pruner": None,
        }
        config["model"] = self.model(raw)
        config["pruner"] = self.pruner(raw, config["training"]["max_epochs"])
        params = self.params(raw, config["model"])
        self.check_fixed_values(config)
        if config["sampler"]["name"] == "grid":
            self.check_grid(params)
        if config["model"].get("name") == "cnn" and config["dataset"].get("name") == "breast_cancer":
            self.fail("model.name", "cnn needs images, but breast_cancer is a table",
                      "use name: mlp")
        if config["objective"]["average"] == "binary" and config["dataset"].get("name") in (
                "digits", "mnist", "fashion_mnist", "cifar10"):
            self.fail("objective.average", "binary F1 needs a two-class dataset",
                      "use macro, weighted or micro")
        return SearchSpace(name=name, source=self.source, text=text, config=config, params=params)

    def dataset(self, raw) -> dict:
        ds = self.section(raw, "dataset")
        given = [k for k in ("name", "path", "function") if k in ds]
        if len(given) > 1:
            self.fail("dataset", f"has both {given[0]} and {given[1]}", "keep only one of them")
        if not given:
            ds["name"] = "digits"
        if "name" in ds:
            self.choice(ds["name"], BUILTIN_DATASETS, "dataset.name")
        if "function" in ds:
            self.import_path(ds["function"], "dataset.function")
        if "path" in ds:
            try:
                path = Path(ds["path"]).expanduser()
                exists = path.exists()
            except RuntimeError:  # ~name/... where there is no user `name`
                self.fail("dataset.path", f"{ds['path']}: no such home folder",
                          "write the full path")
            except OSError as e:  # e.g. a name longer than the file system allows
                self.fail("dataset.path", f"{ds['path']} cannot be checked ({e.strerror})",
                          "give a shorter, readable path")
            if not exists:
                self.fail("dataset.path", f"{path} does not exist",
                          "give the path of a .npz file or of a folder of class folders "
                          "(relative paths start from the folder you run sweeper in)")
            if path.is_file() and path.suffix != ".npz":
                self.fail("dataset.path", f"{path} is not a .npz file or a folder",
                          "save the arrays with numpy.savez or give an image folder")
        ds.setdefault("validation_fraction", 0.15)
        ds.setdefault("test_fraction", 0.15)
        ds.setdefault("split_seed", 0)
        self.seed(ds, "split_seed", "dataset.split_seed")
        for k in ("validation_fraction", "test_fraction"):
            self.fraction(ds[k], f"dataset.{k}")
        if ds["validation_fraction"] + ds["test_fraction"] >= 0.9:
            self.fail("dataset", "validation_fraction + test_fraction leaves under 10% to train on",
                      "lower them")
        if "image_size" in ds:
            size = ds["image_size"]
            if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool)
                                         and 1 <= s <= 4096 for s in size):
                self.fail("dataset.image_size", f"must be [height, width], got {_SHORT.repr(size)}",
                          "write e.g. [32, 32]")
        if "color_mode" in ds:
            self.choice(ds["color_mode"], ("grayscale", "rgb"), "dataset.color_mode")
        if "classes" in ds:
            if len(ds["classes"]) < 2:
                self.fail("dataset.classes", "needs at least two classes", "list every class")
            for c in ds["classes"]:
                if not isinstance(c, (int, str)) or isinstance(c, bool):
                    self.fail("dataset.classes", f"class {_describe(c)} is not a label",
                              "list whole numbers or names")
        return ds

    def preprocess(self, raw) -> dict:
        pre = self.section(raw, "preprocess")
        pre.setdefault("normalize", "unit")
        self.choice(pre["normalize"], NORMALIZE_CHOICES, "preprocess.normalize")
        pre.setdefault("drop_duplicates", True)
        pre.setdefault("drop_nonfinite", True)
        return pre

    def model(self, raw) -> dict:
        model = dict(self.mapping(raw.get("model"), "model"))
        given = [k for k in ("name", "function") if k in model]
        if len(given) == 2:
            self.fail("model", "has both name and function", "keep only one of them")
        if not given:
            self.fail("model", "needs a name (cnn or mlp) or a function (mypkg.models:build)",
                      "add 'name: cnn'")
        if "name" in model:
            self.typed(model["name"], str, "model.name")
            self.choice(model["name"], BUILTIN_MODELS, "model.name")
            known = MODEL_HPARAMS[model["name"]]
            self.known_keys(model, ("name", *known), "model")
            for k, v in model.items():
                if k != "name":
                    model[k] = self.typed(v, known[k], f"model.{k}")
                    self.hparam_value(k, model[k], f"model.{k}")
        else:
            self.import_path(model["function"], "model.function")
        return model

    def training(self, raw) -> dict:
        training = self.section(raw, "training")
        training.setdefault("max_epochs", 20)
        training.setdefault("seed", 0)
        self.seed(training, "seed", "training.seed")
        training.setdefault("batch_size", 64)
        training.setdefault("optimizer", "adam")
        training.setdefault("learning_rate", 1e-3)
        training.setdefault("lr_schedule", "constant")
        if not 1 <= training["max_epochs"] <= 100000:
            self.fail("training.max_epochs", f"must be at least 1, got {training['max_epochs']}",
                      "write e.g. 20")
        for k, v in training.items():
            self.hparam_value(k, v, f"training.{k}")
        return training

    def objective(self, raw) -> dict:
        obj = self.section(raw, "objective")
        obj.setdefault("metric", "f1")
        obj.setdefault("average", "macro")
        obj.setdefault("direction", "maximize")
        self.choice(obj["metric"], ("f1",), "objective.metric")
        self.choice(obj["average"], AVERAGE_CHOICES, "objective.average")
        self.choice(obj["direction"], ("maximize", "minimize"), "objective.direction")
        return obj

    def sampler(self, raw) -> dict:
        return self.algorithm(raw, "sampler", SAMPLER_ARGS, "tpe")

    def pruner(self, raw, max_epochs: int) -> dict:
        pruner = self.algorithm(raw, "pruner", PRUNER_ARGS, "hyperband")
        for k in ("min_resource", "max_resource", "reduction_factor", "n_startup_trials",
                  "n_warmup_steps", "interval_steps", "n_min_trials", "min_early_stopping_rate"):
            if k in pruner:
                low = 2 if k == "reduction_factor" else 1 if k in (
                    "min_resource", "max_resource", "interval_steps", "n_min_trials") else 0
                if pruner[k] < low:
                    self.fail(f"pruner.{k}", f"must be at least {low}, got {pruner[k]}",
                              f"write {low} or more")
        if pruner.get("min_resource", 1) > pruner.get("max_resource", max_epochs):
            self.fail("pruner.min_resource", "is larger than max_resource (or training.max_epochs)",
                      "lower min_resource")
        if "percentile" in pruner:
            if not 0 < pruner["percentile"] < 100:
                self.fail("pruner.percentile", f"must be between 0 and 100, got "
                          f"{pruner['percentile']}", "write e.g. 25")
        elif pruner["name"] == "percentile":
            self.fail("pruner.percentile", "is required for the percentile pruner", "add percentile: 25")
        return pruner

    def algorithm(self, raw, section: str, table: dict, default: str) -> dict:
        spec = raw.get(section)
        if isinstance(spec, str):  # shorthand: `sampler: random`
            spec = {"name": spec}
        spec = dict(self.mapping(spec, section))
        spec.setdefault("name", default)
        name = self.typed(spec["name"], str, f"{section}.name")
        self.choice(name, tuple(table), f"{section}.name")
        self.known_keys(spec, ("name", *table[name]), section)
        for k, v in spec.items():
            if k != "name":
                spec[k] = self.typed(v, table[name][k], f"{section}.{k}")
        self.seed(spec, "seed", f"{section}.seed")
        if spec.get("qmc_type") is not None:
            self.choice(spec["qmc_type"], ("sobol", "halton"), f"{section}.qmc_type")
        return spec

    def import_path(self, value, key: str):
        self.typed(value, str, key)
        module, _, func = value.partition(":")
        if not module or not func or not all(part.isidentifier() for part in module.split(".")) \
                or not func.isidentifier():
            self.fail(key, f"{_describe(value)} is not an import path",
                      "write it as package.module:function")

    def hparam_value(self, name: str, value, key: str):
        """Checks on the value of a known hyperparameter, fixed or a categorical choice."""
        if name in CHOICES:
            self.choice(value, CHOICES[name], key)
        elif name in ("batch_size", "filters", "dense_units", "units", "conv_blocks",
                      "hidden_layers", "kernel_size") and isinstance(value, int) and value < 1:
            self.fail(key, f"must be at least 1, got {value}", "write a positive number")
        elif name in ("dropout",) and isinstance(value, (int, float)) and not 0 <= value < 1:
            self.fail(key, f"must be in [0, 1), got {value}", "write e.g. 0.2")
        elif name in ("learning_rate",) and isinstance(value, (int, float)) and value <= 0:
            self.fail(key, f"must be positive, got {value}", "write e.g. 0.001")

    def known_hparams(self, model: dict) -> dict[str, type] | None:
        if "function" in model:
            return None
        return {**TRAINING_HPARAMS, **MODEL_HPARAMS[model["name"]]}

    def check_fixed_values(self, config: dict):
        if config["training"]["batch_size"] < 1:
            self.fail("training.batch_size", "must be at least 1", "write e.g. 64")

    # -- params ------------------------------------------------------------------------------

    def params(self, raw, model: dict) -> list[Param]:
        specs = self.mapping(raw.get("params"), "params")
        if not specs:
            self.fail("params", "is empty", "add at least one parameter to search")
        known = self.known_hparams(model)
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
            params.append(self.param(name, spec, key, params, known))
        return params

    def param(self, name: str, spec, key: str, earlier: list[Param], known) -> Param:
        spec = self.mapping(spec, key)
        kind = spec.get("type")
        if kind is None:
            self.fail(f"{key}.type", "is missing", "add type: float, int or categorical")
        self.choice(kind, tuple(PARAM_KEYS), f"{key}.type")
        self.known_keys(spec, PARAM_KEYS[kind], key)
        when = self.condition(spec.get("when"), f"{key}.when", earlier)
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                self.fail(f"{key}.choices", "must be a non-empty list", "write choices: [a, b]")
            for c in choices:
                if c is not None and not isinstance(c, (bool, int, float, str)):
                    self.fail(f"{key}.choices", f"choice {_describe(c)} is not a plain value",
                              "use numbers, text, true/false or null")
                if isinstance(c, float) and not math.isfinite(c):
                    self.fail(f"{key}.choices", f"choice {c} is not finite", "use finite numbers")
                if known and name in known and c is not None:
                    expected = known[name]
                    if expected is float and isinstance(c, str):
                        c = self.typed(c, float, f"{key}.choices")
                    self.typed(c, expected, f"{key}.choices")
                    self.hparam_value(name, c, f"{key}.choices")
            if len(set(map(repr, choices))) != len(choices):
                self.fail(f"{key}.choices", "has the same choice twice", "list each choice once")
            if known and name in known and known[name] is float:
                choices = [float(c) if isinstance(c, str) else c for c in choices]
            return Param(name, kind, choices=tuple(choices), when=when)

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
        if known and name in known:
            if known[name] is int and kind != "int":
                self.fail(f"{key}.type", f"{name} takes whole numbers", "use type: int")
            if known[name] in (bool, str):
                self.fail(f"{key}.type", f"{name} takes {known[name].__name__} values",
                          "use type: categorical with choices")
            self.hparam_value(name, low, f"{key}.low")
            self.hparam_value(name, high, f"{key}.high")
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
                        self.fail(f"{key}.{ref}", f"{_describe(v)} is not one of its choices",
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
            if p.kind != "categorical" and (p.high - p.low) / (p.step or 1) >= 1_000_000:
                self.fail(f"params.{p.name}", "has a million grid points or more",
                          "use a larger step or another sampler")
        size = math.prod(p.grid_size() for p in params)
        if size > 1_000_000:
            self.fail("params", f"the grid has {size} points", "use fewer values or another sampler")


def _space_error(message: str) -> SpaceError:
    return SpaceError(_one_line(message))


def _one_line(text: str) -> str:
    """Escapes line breaks and other control characters (from keys, values, file names)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


# Short reprs of values that may be nested deeply, or hugely through YAML aliases.
_SHORT = reprlib.Repr()
_SHORT.maxlevel = 2


def _describe(value) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, (dict, list, set)):
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
