"""A chosen trial's model trained again from its parameters, evaluated on the test split and saved
(`sweeper retrain`): the best trial's by default, or the ones a `sweeper best --export` file holds.

By default it trains on train+validation, for deployment. `as_trial` trains as the sweep's trial
did (training split, its seed and schedule), so its figures can be checked against the stored
ones. Where the space compresses, the model is also pruned and converted as in the sweep, and the
compressed file is written beside the float one. Keras is imported only once the store and the
parameters have been read, so a bad study or file is refused at once.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import yaml

from sweeper import keys
from sweeper.errors import SweeperError
from sweeper.paths import private_folder, study_folder
from sweeper.results.report import best_params, load_existing_study

MODELS_DIR = Path("storage") / "models"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How the model is trained again: its hyperparameters, seed, epochs and batch size, and the
    epochs its learning-rate schedule spans (the trial's schedule spans the space's max_epochs)."""

    hp: dict
    seed: int
    epochs: int
    batch_size: int
    schedule_epochs: int
    as_trial: bool


def retrain(url: str, study_name: str, params_file: Path | None = None,
            out_dir: Path | None = None, as_trial: bool = False) -> dict:
    """Train the best (or exported) configuration, evaluate on test, save model + metrics."""
    from sweeper.space import parse_space

    _, study = load_existing_study(url, study_name)
    space = parse_space(study.user_attrs[keys.SPACE_YAML], source=f"study {study_name}")
    chosen = read_params_file(params_file) if params_file else best_params(url, study_name)
    recipe = _recipe(space, chosen, as_trial)
    _set_up_backend(space, chosen, as_trial)
    data = _training_data(space, as_trial)
    started = time.perf_counter()
    model = _fit(space, data, recipe)
    folder = Path(out_dir or study_folder(MODELS_DIR, study_name))
    private_folder(folder)
    model_path = folder / f"best_trial_{chosen['trial']}.keras"
    result = {"study": study_name, "trial": chosen["trial"], "seed": recipe.seed,
              "epochs": recipe.epochs,
              "trained_on": "training split, as the trial" if as_trial else
              "training + validation splits",
              "train_rows": int(len(data.x_train)), "test_rows": int(len(data.y_test)),
              "train_seconds": round(time.perf_counter() - started, 2),
              **_evaluated(model, data, space, as_trial), "sweep_test_f1": chosen.get("test_f1"),
              "hyperparameters": recipe.hp, "model": str(model_path)}
    if space.compress is not None:
        result.update(_compress_retrained(model, data, space, recipe, chosen, folder))
    model.save(model_path)  # after compressing: its weights are pruned where the space prunes
    (folder / "metrics.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def read_params_file(path: Path) -> dict:
    """A file written by `sweeper best --export`, checked before anything is trained."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise SweeperError(f"{path}: cannot read it ({str(e).splitlines()[0]}); "
                           "write it with 'sweeper best SPACE --export FILE'") from None
    if not isinstance(data, dict) or not isinstance(data.get("hyperparameters"), dict):
        raise SweeperError(f"{path}: no 'hyperparameters' mapping; write it with "
                           "'sweeper best SPACE --export FILE'")
    return data


def _recipe(space, chosen: dict, as_trial: bool) -> Recipe:
    from sweeper.space.schema import hparam

    hp = chosen["hyperparameters"]
    epochs = int(chosen.get("epochs") or space.max_epochs)
    return Recipe(hp=hp, seed=int(chosen.get("seed") or space.config["training"]["seed"]),
                  epochs=epochs, batch_size=int(hparam(hp, "batch_size")),
                  schedule_epochs=space.max_epochs if as_trial else epochs, as_trial=as_trial)


def _set_up_backend(space, chosen: dict, as_trial: bool) -> None:
    from sweeper.keras_backend import require_backend
    from sweeper.pipeline.backend import configure_backend

    require_backend(space)
    # As the trial: the same thread count sums in the same order, so the same weights come out.
    configure_backend(chosen.get("threads") if as_trial else None)


def _training_data(space, as_trial: bool):
    """The dataset, its validation split joined to training unless trained as the trial."""
    import numpy as np

    from sweeper.pipeline.data import load_dataset

    data = load_dataset(space.config["dataset"], space.config["preprocess"])
    if as_trial:
        return data
    return dataclasses.replace(data, x_train=np.concatenate([data.x_train, data.x_val]),
                               y_train=np.concatenate([data.y_train, data.y_val]))


def _fit(space, data, recipe: Recipe):
    import keras

    from sweeper.pipeline import train
    from sweeper.pipeline.model import build_model

    keras.utils.set_random_seed(recipe.seed)
    steps = -(-len(data.x_train) // recipe.batch_size)
    model = build_model(space.config["model"], recipe.hp, data, steps, recipe.schedule_epochs)
    model.fit(**train.training_input(data, recipe.batch_size, recipe.seed, recipe.epochs),
              epochs=recipe.epochs, verbose=0)
    return model


def _evaluated(model, data, space, as_trial: bool) -> dict:
    """Test metrics, and validation F1 where trained as the trial (to compare with its own)."""
    from sweeper.pipeline import evaluate

    average = space.config["objective"]["average"]
    predicted = evaluate.predict_classes(model, data.x_test)
    found: dict = {"test": evaluate.test_metrics(data.y_test, predicted, average)}
    if as_trial:
        found["validation_f1"] = evaluate.f1(data.y_val, evaluate.predict_classes(
            model, data.x_val), average)
    return found


def _compress_retrained(model, data, space, recipe: Recipe, chosen: dict, folder: Path) -> dict:
    """The compress stage on a retrained model: both .tflite files and their figures."""
    from sweeper.pipeline import evaluate
    from sweeper.pipeline.compress import compress
    from sweeper.pipeline.objective import compress_spec

    average = space.config["objective"]["average"]
    spec = compress_spec(space.compress, recipe.hp)
    done = compress(model, data, spec, average=average, batch_size=recipe.batch_size,
                    seed=recipe.seed)
    trial = chosen["trial"]
    float_path = folder / f"best_trial_{trial}.float32.tflite"
    compressed_path = folder / f"best_trial_{trial}.{spec.quantize}.tflite"
    float_path.write_bytes(done.float_file)
    compressed_path.write_bytes(done.compressed_file)
    measured = {name.removeprefix("sweeper."): value for name, value in done.attrs.items()}
    return {"compressed": {**measured, "quantize": spec.quantize,
                           "test": evaluate.test_metrics(data.y_test, done.test_pred, average),
                           "model": str(compressed_path), "float_model": str(float_path)},
            "sweep_metrics": chosen.get("metrics"),
            "sweep_compressed_test_f1": chosen.get("compressed_test_f1")}
