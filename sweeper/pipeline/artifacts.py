"""Per-trial artifacts through Optuna's artifact API: a confusion matrix, a per-class table and,
for the best k trials only, the trained model.

Artifacts live in a file-system artifact store (default storage/artifacts/) that optuna-dashboard
shows beside each trial. Model files are large, so only the k best completed trials keep theirs:
a model that drops out of the top k is replaced, under the same artifact id, by a short text
saying which trial pushed it out, and its id is listed in the study's `sweeper.evicted_models`
attribute. So no trial ever links to a file that is gone.

A worker writes a trial's artifacts after the trial has finished, while its next trial trains
(sweeper.pipeline.bookkeeping). Optuna's API refuses a finished trial's attributes, and a
worker's copy of the study never reads a finished trial again: the entries are written, and the
kept models read, straight in the store (sweeper.storage.trial_attrs).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sweeper import defaults, keys
from sweeper.paths import private_folder
from sweeper.pipeline.confusion import confusion_png, per_class_csv
from sweeper.storage.trial_attrs import completed_with_user_attr, write_trial_attrs
from sweeper.trials import best_first

ARTIFACT_DIR_ENV = "SWEEPER_ARTIFACT_DIR"


def artifact_dir() -> Path:
    return Path(os.environ.get(ARTIFACT_DIR_ENV) or Path("storage") / "artifacts").resolve()


def artifact_store(folder: Path | None = None):
    from optuna.artifacts import FileSystemArtifactStore

    folder = Path(folder or artifact_dir())
    private_folder(folder)
    return FileSystemArtifactStore(str(folder))


def save_trial_artifacts(trial, model, y_true: np.ndarray, y_pred: np.ndarray, class_names: list,
                         value: float, direction: str) -> None:
    """Writes a completed trial's artifacts now (a worker writes them in the background:
    `trial_artifacts` then `TrialArtifacts.write`)."""
    trial_artifacts(trial, model, y_true, y_pred, class_names, value, direction).write()


def trial_artifacts(trial, model, y_true: np.ndarray, y_pred: np.ndarray, class_names: list,
                    value: float, direction: str) -> TrialArtifacts:
    """What the artifacts of a trial ending now are made of. The model is kept for its file only
    when the trial is among the best k so far: most trials' models are then freed at once."""
    storage = keys.storage_of(trial.study)
    study_id = keys.study_id(trial.study)
    study_attrs = storage.get_study_user_attrs(study_id)
    keep = int(study_attrs.get(keys.KEEP_MODELS, defaults.KEEP_MODELS))
    among_best = keep > 0 and _in_top(_kept_models(storage, study_id, direction, study_attrs),
                                      value, keep, direction)
    return TrialArtifacts(storage, study_id, keys.trial_id(trial), trial.number, value,
                          direction, keep, y_true, y_pred, class_names,
                          model if among_best else None, artifact_dir())


@dataclass
class TrialArtifacts:
    """A trial's confusion matrix, per-class table and (among the best k) model file, written to
    the artifact store in `folder`, then listed on the trial in one transaction. The trial may
    have finished by then: its entries are written straight to the store
    (sweeper.storage.trial_attrs)."""

    storage: Any
    study_id: int
    trial_id: int
    number: int
    value: float
    direction: str
    keep: int
    y_true: np.ndarray
    y_pred: np.ndarray
    class_names: list
    model: Any  # a Keras model; None: not among the best k, no model file
    folder: Path

    @property
    def name(self) -> str:
        return f"artifacts of trial {self.number}"

    def write(self) -> None:
        store = artifact_store(self.folder)
        entries: dict[str, str] = {}
        model_id = None
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            png = tmp / f"confusion_matrix_trial_{self.number}.png"
            confusion_png(self.y_true, self.y_pred, self.class_names, png,
                          f"trial {self.number} (test split)")
            _add(store, entries, png, "image/png")
            table = tmp / f"per_class_trial_{self.number}.csv"
            table.write_text(per_class_csv(self.y_true, self.y_pred, self.class_names))
            _add(store, entries, table, "text/csv")
            if self.model is not None:
                path = tmp / f"model_trial_{self.number}.keras"
                self.model.save(path)
                model_id = _add(store, entries, path, "application/octet-stream")
        # Files first, then what lists them: a crash in between leaves no link to a missing file.
        write_trial_attrs(self.storage, self.trial_id, system=entries,
                          user={keys.MODEL_ARTIFACT: model_id} if model_id else None)
        if model_id is not None:
            _evict_beyond_top(self.storage, self.study_id, store, self.folder, self.keep,
                              self.direction, _Kept(self.trial_id, self.number, self.value, model_id))


def _add(store, entries: dict, path: Path, mimetype: str) -> str:
    """Writes the file at `path` to the artifact store; its entry (as Optuna's upload_artifact
    writes it) goes into `entries`. Returns its artifact id."""
    artifact_id = str(uuid.uuid4())
    with open(path, "rb") as f:
        store.write(artifact_id, f)
    meta = {"artifact_id": artifact_id, "filename": path.name, "mimetype": mimetype,
            "encoding": None}
    entries[keys.ARTIFACT_PREFIX + artifact_id] = json.dumps(meta)
    return artifact_id


@dataclass(frozen=True)
class _Kept:
    """A trial whose model file is kept."""

    trial_id: int
    number: int
    value: float
    artifact_id: str

    @property
    def values(self) -> list[float]:  # ranked as trials are (sweeper.trials)
        return [self.value]


def _kept_models(storage, study_id: int, direction: str,
                 study_attrs: dict | None = None) -> list[_Kept]:
    """The completed trials whose model file is kept, best first, as the store holds them now
    (`study_attrs`: the study's user attributes, when just read)."""
    if study_attrs is None:
        study_attrs = storage.get_study_user_attrs(study_id)
    evicted = set(study_attrs.get(keys.EVICTED_MODELS, []))
    kept = [_Kept(m.trial_id, m.number, m.value, str(m.attr))
            for m in completed_with_user_attr(storage, study_id, keys.MODEL_ARTIFACT)
            if m.attr and m.attr not in evicted]
    return best_first(kept, direction)


def evicted_note(number: int, value: float, keep: int, pushed_out_by: int) -> str:
    return (f"The model file of trial {number} (objective {value:.4f}) was deleted when trial "
            f"{pushed_out_by} entered the best {keep}: only the best {keep} trials keep their "
            "model (sweeper sweep --keep-models). Its params and seed are stored on the trial; "
            "`sweeper best --export` and `sweeper retrain --params` rebuild a model from them.\n")


def _replace_with_note(storage, store, kept: _Kept, keep: int, pushed_out_by: int) -> None:
    """The model file becomes a short note, and the trial's artifact entry says so (a text file)
    instead of linking to a model that is gone."""
    note = evicted_note(kept.number, kept.value, keep, pushed_out_by)
    store.write(kept.artifact_id, io.BytesIO(note.encode()))  # the model's bytes are gone
    meta = {"artifact_id": kept.artifact_id, "filename": f"model_trial_{kept.number}.evicted.txt",
            "mimetype": "text/plain", "encoding": None}
    write_trial_attrs(storage, kept.trial_id,
                      system={keys.ARTIFACT_PREFIX + kept.artifact_id: json.dumps(meta)})


def _in_top(kept: list[_Kept], value: float, keep: int, direction: str) -> bool:
    if len(kept) < keep:
        return True
    worst = kept[keep - 1].value
    return value > worst if direction == "maximize" else value < worst


def _evict_beyond_top(storage, study_id: int, store, folder: Path, keep: int, direction: str,
                      newest: _Kept) -> None:
    from sweeper.storage.locks import file_lock

    # One evictor at a time, so two workers never both remove and both record.
    with file_lock(folder / ".evict.lock"):
        # The newest is listed already once its trial has finished, not yet when it runs.
        kept = {k.artifact_id: k for k in _kept_models(storage, study_id, direction) + [newest]}
        extra = best_first(list(kept.values()), direction)[keep:]
        if not extra:
            return
        for kept in extra:
            _replace_with_note(storage, store, kept, keep, pushed_out_by=newest.number)
        evicted = list(storage.get_study_user_attrs(study_id).get(keys.EVICTED_MODELS, [])) + \
            [k.artifact_id for k in extra]
        storage.set_study_user_attr(study_id, keys.EVICTED_MODELS, sorted(set(evicted)))
