"""Validating a space section by section against sweeper.space.schema. Everything is checked
before any worker starts or anything is written; the first problem stops with one line naming the
file, the key, what is wrong and how to fix it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeper.metrics import METRICS, BoundError, parse_bound
from sweeper.space.params import ParamChecks
from sweeper.space.runtime import SearchSpace
from sweeper.space.schema import (
    AVERAGE_CHOICES,
    BUILTIN_DATASETS,
    BUILTIN_MODELS,
    CHECKPOINT_EVERY_S,
    COMPRESS_HPARAMS,
    CONSTRAINT_SAMPLERS,
    DEFAULT_PRUNER,
    DEFAULTS,
    IMAGE_DATASETS,
    MAX_FINETUNE_EPOCHS,
    MODEL_HPARAMS,
    MULTI_OBJECTIVE_PRUNERS,
    MULTI_OBJECTIVE_SAMPLERS,
    NORMALIZE_CHOICES,
    PRUNER_ARGS,
    PRUNER_MINIMUM,
    QUANTIZE_CHOICES,
    SAMPLER_ARGS,
    TOP_LEVEL_KEYS,
    TRAINING_HPARAMS,
)
from sweeper.text import shown


class Validator(ParamChecks):
    """Turns the YAML of a space into a SearchSpace, or stops at its first problem."""

    def space(self, raw, text: str, name: str) -> SearchSpace:
        if raw is None:
            self.fail("(file)", "is empty", "write at least a params section")
        raw = self.mapping(raw, "(top level)")
        self.known_keys(raw, TOP_LEVEL_KEYS, "")
        if isinstance(raw.get("description"), (dict, list, set)):  # its text could be huge
            self.fail("description", f"must be text, got {shown(raw['description'])}",
                      "write one line of text")
        config: dict[str, Any] = {
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
        # Only when given: a key added to every config would change every stored fingerprint.
        if raw.get("compress") is not None:
            config["compress"] = self.compress(raw)
        if raw.get("objectives") is not None:
            config["objectives"] = self.objectives(raw, config)
        if raw.get("constraints") is not None:
            config["constraints"] = self.constraints(raw, config)
        params = self.params(raw, config["model"], compress="compress" in config)
        self.check_fixed_values(config)
        if config["sampler"]["name"] == "grid":
            self.check_grid(params)
        if config["model"].get("name") == "cnn" and config["dataset"].get("name") == "breast_cancer":
            self.fail("model.name", "cnn needs images, but breast_cancer is a table",
                      "use name: mlp")
        if config["objective"]["average"] == "binary" and \
                config["dataset"].get("name") in IMAGE_DATASETS:
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
        _fill_in(ds, "dataset")
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
                self.fail("dataset.image_size", f"must be [height, width], got {shown(size)}",
                          "write e.g. [32, 32]")
        if "color_mode" in ds:
            self.choice(ds["color_mode"], ("grayscale", "rgb"), "dataset.color_mode")
        if "classes" in ds:
            if len(ds["classes"]) < 2:
                self.fail("dataset.classes", "needs at least two classes", "list every class")
            for c in ds["classes"]:
                if not isinstance(c, (int, str)) or isinstance(c, bool):
                    self.fail("dataset.classes", f"class {shown(c)} is not a label",
                              "list whole numbers or names")
        return ds

    def preprocess(self, raw) -> dict:
        pre = _fill_in(self.section(raw, "preprocess"), "preprocess")
        self.choice(pre["normalize"], NORMALIZE_CHOICES, "preprocess.normalize")
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
                    model[k] = self.typed(v, known[k].kind, f"model.{k}")
                    self.hparam_value(known[k], model[k], f"model.{k}")
        else:
            self.import_path(model["function"], "model.function")
        return model

    def training(self, raw) -> dict:
        training = _fill_in(self.section(raw, "training"), "training")
        self.seed(training, "seed", "training.seed")
        if not 1 <= training["max_epochs"] <= 100000:
            self.fail("training.max_epochs", f"must be at least 1, got {training['max_epochs']}",
                      "write e.g. 20")
        every = training.get("checkpoint_every_s", CHECKPOINT_EVERY_S)
        if not 0 <= every <= 86400:
            self.fail("training.checkpoint_every_s", f"must be 0 to 86400 seconds, got {every}",
                      f"write e.g. {CHECKPOINT_EVERY_S:g} (0: after every epoch the 2% rule "
                      "allows)")
        for k, v in training.items():
            if k in TRAINING_HPARAMS:
                self.hparam_value(TRAINING_HPARAMS[k], v, f"training.{k}")
        return training

    def objective(self, raw) -> dict:
        obj = _fill_in(self.section(raw, "objective"), "objective")
        self.choice(obj["metric"], ("f1",), "objective.metric")
        self.choice(obj["average"], AVERAGE_CHOICES, "objective.average")
        self.choice(obj["direction"], ("maximize", "minimize"), "objective.direction")
        return obj

    def sampler(self, raw) -> dict:
        sampler = self.algorithm(raw, "sampler", SAMPLER_ARGS, "tpe")
        if sampler.get("population_size", 2) < 2:
            self.fail("sampler.population_size", f"must be at least 2, got "
                      f"{sampler['population_size']}", "write e.g. 50")
        for k in ("mutation_prob", "crossover_prob", "swapping_prob"):
            if k in sampler and not 0 <= sampler[k] <= 1:
                self.fail(f"sampler.{k}", f"must be between 0 and 1, got {sampler[k]}",
                          "write e.g. 0.5")
        return sampler

    def compress(self, raw) -> dict:
        spec = _fill_in(self.section(raw, "compress"), "compress")
        self.choice(spec["quantize"], QUANTIZE_CHOICES, "compress.quantize")
        self.hparam_value(COMPRESS_HPARAMS["sparsity"], spec["sparsity"], "compress.sparsity")
        if not 0 <= spec["finetune_epochs"] <= MAX_FINETUNE_EPOCHS:
            self.fail("compress.finetune_epochs", f"must be 0 to {MAX_FINETUNE_EPOCHS}, got "
                      f"{spec['finetune_epochs']}", "write e.g. 2")
        if not 1 <= spec["calibration_samples"] <= 100_000:
            self.fail("compress.calibration_samples", f"must be 1 to 100000, got "
                      f"{spec['calibration_samples']}", "write e.g. 200")
        return spec

    def objectives(self, raw, config: dict) -> list[str]:
        names = self.typed(raw["objectives"], list, "objectives")
        for name in names:
            if not isinstance(name, str):
                self.fail("objectives", f"{shown(name)} is not a metric name",
                          f"list names such as: {', '.join(METRICS)}")
            self.choice(name, tuple(METRICS), "objectives")
            self.needs_compress(name, config, "objectives")
        if len(set(names)) != len(names):
            self.fail("objectives", "names a metric twice", "list each metric once")
        if names[0] != "f1":
            self.fail("objectives", f"starts with {names[0]}, not f1",
                      "put f1 first: pruning and the ranking of trials read it")
        if len(names) > 1:
            if config["objective"]["direction"] != "maximize":
                self.fail("objective.direction", "must be maximize when there are objectives",
                          "drop objective.direction: each metric's direction is fixed")
            self.choice_for(config["sampler"]["name"], MULTI_OBJECTIVE_SAMPLERS, "sampler.name",
                            "cannot weigh several objectives")
            self.choice_for(config["pruner"]["name"], MULTI_OBJECTIVE_PRUNERS, "pruner.name",
                            "cannot prune a multi-objective study")
        return list(names)

    def constraints(self, raw, config: dict) -> list[str]:
        texts = self.typed(raw["constraints"], list, "constraints")
        bounds = []
        for text in texts:
            try:
                bound = parse_bound(text)
            except BoundError as e:
                self.fail("constraints", str(e).split("; ")[0], str(e).split("; ")[-1])
            self.needs_compress(bound.metric, config, "constraints")
            bounds.append(str(bound))
        self.choice_for(config["sampler"]["name"], CONSTRAINT_SAMPLERS, "sampler.name",
                        "cannot honour constraints")
        return bounds

    def needs_compress(self, metric: str, config: dict, key: str):
        if METRICS[metric].needs_compress and "compress" not in config:
            self.fail(key, f"{metric} is measured by the compress stage, and there is none",
                      "add a compress section (e.g. compress: {quantize: int8})")

    def choice_for(self, value: str, allowed: tuple, key: str, why: str):
        if value not in allowed:
            self.fail(key, f"{value} {why}", f"use one of: {', '.join(allowed)}")

    def pruner(self, raw, max_epochs: int) -> dict:
        pruner = self.algorithm(raw, "pruner", PRUNER_ARGS, DEFAULT_PRUNER)
        for k, low in PRUNER_MINIMUM.items():
            if k in pruner:
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

    def check_fixed_values(self, config: dict):
        if config["training"]["batch_size"] < 1:
            self.fail("training.batch_size", "must be at least 1", "write e.g. 64")


def _fill_in(section: dict, name: str) -> dict:
    """The section with the schema's defaults where it leaves keys out."""
    for key, value in DEFAULTS[name].items():
        section.setdefault(key, value)
    return section
