"""One trial: preprocess -> train -> evaluate [-> compress], with everything worth knowing stored
on the trial.

Trial user attributes set here all start with `sweeper.`. The objective value is validation F1 of
the model the trial delivers: the trained model's, or the compressed model's where the space has a
compress stage. In a multi-objective space the values follow its `objectives` (sweeper.metrics).
The test metrics `sweeper.test_*` are of the trained model; the compressed model's are stored
beside them (sweeper.keys).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import SimpleNamespace

import keras
import optuna
import psutil

from sweeper import keys
from sweeper.metrics import metric_value
from sweeper.pipeline import compress, evaluate, train
from sweeper.pipeline.artifacts import trial_artifacts
from sweeper.pipeline.bookkeeping import Bookkeeper
from sweeper.pipeline.checkpoint import Checkpoint, Saved, chain_folder, chain_start
from sweeper.pipeline.data import Dataset, load_dataset
from sweeper.pipeline.model import build_model
from sweeper.pipeline.stopwatch import Stopwatch
from sweeper.space import SearchSpace
from sweeper.space.schema import hparam
from sweeper.storage.trial_attrs import set_user_attrs


@dataclass
class TrialResult:
    value: float  # the first objective's: validation F1 of the delivered model
    values: list[float]  # one per objective of the space
    test: dict
    model: keras.Model
    data: Dataset
    params: dict


def run_trial(trial: optuna.Trial, space: SearchSpace, worker_attrs: dict | None = None,
              should_stop=None, save_artifacts: bool = True,
              bookkeeper: Bookkeeper | None = None) -> TrialResult:
    """Run one trial. Raises optuna.TrialPruned when pruned or when the loss became NaN/inf,
    and train.TrialInterrupted when `should_stop()` turns true. `worker_attrs` (keyed as in
    sweeper.keys) are stored on the trial. With a `bookkeeper`, the trial's artifacts are written
    in the background once the next trial trains (and this trial's first step lets the earlier
    trial's be written); without one, before it returns."""
    config = space.config
    average = config["objective"]["average"]
    first = first_of_chain(trial)  # a retry trains as the trial it retries
    seed = config["training"]["seed"] + first
    # Resident memory at the start: what earlier trials in this process left behind.
    rss_mb = round(psutil.Process().memory_info().rss / 2**20, 1)
    params = space.suggest(trial)
    hp = space.hyperparameters(params)
    clock = Stopwatch()
    with clock.stage("preprocess"):
        data = load_dataset(config["dataset"], config["preprocess"])
    _mark_start(trial, {**(worker_attrs or {}), keys.SEED: seed, keys.RSS_MB: rss_mb,
                        keys.DATA: data.report})
    checkpoint = Checkpoint(chain_folder(trial.study.study_name, first),
                            space.fingerprint) if save_artifacts else None
    with clock.stage("build"):
        model, batch_size = _build(trial, space, hp, data, seed)
        resumed = _resume(trial, model, checkpoint)
    with clock.stage("train"):
        reporter = train.fit(model, data, trial, batch_size, space.max_epochs, average,
                             should_stop, seed, checkpoint, resumed, space.checkpoint_every_s,
                             bookkeeper.start if bookkeeper is not None else None)
    clock.seconds.update(reporter.seconds)
    clock.seconds["last_f1"] = reporter.last_f1_s
    ran = {keys.EPOCHS_RUN: len(reporter.losses) - reporter.first_epoch,
           keys.LOSS_HISTORY: [round(x, 6) for x in reporter.losses],
           keys.TIMELINE: {k: round(v, 4) for k, v in reporter.timeline.items()}}
    if reporter.stop_reason is not None:
        set_user_attrs(trial, {**ran, keys.PRUNE_REASON: reporter.stop_reason,
                               keys.SECONDS: _rounded(clock.seconds)})
        if checkpoint is not None:  # finished for good: nothing left to resume
            checkpoint.remove()
        raise optuna.TrialPruned(reporter.stop_reason)
    if reporter.saver is not None and space.compress is not None:
        reporter.saver.keep_at_epoch_end()  # a cut in the compress stage resumes after training
    try:
        with clock.stage("evaluate"):
            test_pred = evaluate.predict_classes(model, data.x_test)
            test = evaluate.test_metrics(data.y_test, test_pred, average)
        # After the trained model's test metrics: pruning weights changes the model.
        measured = _compress(model, data, space, hp, batch_size, seed, should_stop, clock)
    except BaseException:  # cut after training (in the compress stage): the retry skips it
        if reporter.saver is not None:
            reporter.saver.flush()
        raise
    values = _values_and_constraints(trial, space, reporter.scores[-1], measured)
    if save_artifacts:
        with clock.stage("artifacts"):
            artifacts = trial_artifacts(trial, model, data.y_test, test_pred, data.class_names,
                                        values[0], space.direction)
            if bookkeeper is None:
                artifacts.write()
            else:
                bookkeeper.hand_over(artifacts.write, artifacts.name,
                                     holds_objects=artifacts.model is not None)
    set_user_attrs(trial, {**ran, **{keys.TEST_PREFIX + name: metric
                                     for name, metric in test.items()},
                           **measured, keys.SECONDS: _rounded(clock.seconds)})
    if checkpoint is not None:
        checkpoint.remove()
    return TrialResult(value=values[0], values=values, test=test, model=model, data=data,
                       params=params)


def first_of_chain(trial) -> int:
    """The number of the trial a retry retries (through retries of retries), else its own."""
    return chain_start(keys.as_asked(trial).system_attrs, trial.number)


def _resume(trial, model, checkpoint: Checkpoint | None) -> Saved | None:
    """What the trial's checkpoint holds, loaded into `model`; None to train from epoch 1."""
    if checkpoint is None:
        return None
    saved, why_not = checkpoint.read(model)
    if why_not:
        print(f"{why_not}; training from epoch 1", flush=True)
        trial.set_user_attr(keys.RESUME_NOTE, why_not)
    if saved is not None:
        trial.set_user_attr(keys.RESUMED_FROM, {"trial": saved.trial, "epoch": saved.epoch,
                                                "seconds": round(saved.seconds, 3)})
    return saved


def _mark_start(trial: optuna.Trial, attrs: dict) -> None:
    """The worker's attributes, the seed, the data and the memory held at the start, in one
    write. A retry inherits the failed trial's attributes: those of one run are cleared."""
    inherited = keys.as_asked(trial).user_attrs
    set_user_attrs(trial, {**attrs, **{key: None for key in keys.PER_RUN if key in inherited}})


def _build(trial: optuna.Trial, space: SearchSpace, hp: dict, data: Dataset, seed: int):
    """The trial's model, built from its seed, and its batch size."""
    keras.utils.set_random_seed(seed)
    batch_size = int(hparam(hp, "batch_size"))
    steps = -(-len(data.x_train) // batch_size)
    model = build_model(space.config["model"], hp, data, steps, space.max_epochs)
    if space.is_multi_objective:  # what its pruner compares it with (pipeline.multi_objective)
        sparsity = compress_spec(space.compress, hp).sparsity if space.compress else 0.0
        trial.set_user_attr(keys.EXPECTED_NONZERO, round(model.count_params() * (1 - sparsity)))
    return model, batch_size


def _compress(model, data: Dataset, space: SearchSpace, hp: dict, batch_size: int, seed: int,
              should_stop, clock: Stopwatch) -> dict:
    """The compress stage's measurements, where the space compresses; else none."""
    if space.compress is None:
        return {}
    result = compress.compress(model, data, compress_spec(space.compress, hp),
                               average=space.config["objective"]["average"],
                               batch_size=batch_size, seed=seed, should_stop=should_stop)
    clock.seconds.update({f"compress_{k}": v for k, v in result.seconds.items()})
    return result.attrs


def _values_and_constraints(trial: optuna.Trial, space: SearchSpace, val_f1: float,
                            measured: dict) -> list[float]:
    """The trial's objective values, and its constraint violations set on it (what TPE and
    NSGA-II/III read)."""
    as_stored = SimpleNamespace(user_attrs=measured, values=[val_f1])  # as metrics reads trials
    for bound, violation in space.constraints_of(as_stored).items():
        trial.set_constraint(bound, violation)
    return objective_values(space, as_stored)


def compress_spec(settings: dict, hp: dict) -> compress.CompressSpec:
    """The space's compress section, with its sparsity searched when params has one."""
    return compress.CompressSpec(quantize=settings["quantize"],
                                 sparsity=float(hp.get("sparsity", settings["sparsity"])),
                                 finetune_epochs=settings["finetune_epochs"],
                                 calibration_samples=settings["calibration_samples"])


def objective_values(space: SearchSpace, trial) -> list[float]:
    """One value per objective of the space, read from the trial's measures (sweeper.metrics)."""
    values = [metric_value(name, trial) for name in space.objectives]
    return [float("nan") if v is None else v for v in values]  # NaN fails the trial


def _rounded(seconds: dict) -> dict:
    return {k: round(v, 4) for k, v in seconds.items()}


def make_objective(space: SearchSpace, worker_attrs: dict, should_stop=None,
                   bookkeeper: Bookkeeper | None = None):
    """The function given to study.optimize. Failures keep their reason on the trial. With a
    `bookkeeper`, artifacts are written in the background (its owner drains it)."""

    def objective(trial: optuna.Trial) -> float | list[float]:
        try:
            result = run_trial(trial, space, worker_attrs, should_stop, bookkeeper=bookkeeper)
            return result.values if space.is_multi_objective else result.value
        except optuna.TrialPruned:
            raise
        except Exception as e:
            trial.set_user_attr(keys.FAIL_REASON, describe_failure(e))
            raise
        finally:
            # Without collecting: the worker's loop collects once the trial has fully ended
            # (sweeper.worker.loop), when nothing of it is still referenced.
            with bookkeeper.quiet() if bookkeeper is not None else contextlib.nullcontext():
                keras.backend.clear_session(free_memory=False)

    return objective


def describe_failure(error: BaseException) -> str:
    name = type(error).__name__
    message = (str(error).strip().splitlines() or [""])[0][:300]
    if name == "ResourceExhaustedError" or "OOM" in message:
        return f"out of memory ({name}): {message}; try a smaller batch_size or model"
    return f"{name}: {message}"
