"""Per-trial artifacts through Optuna's artifact API: a confusion matrix, a per-class table and,
for the best k trials only, the trained model.

Artifacts live in a file-system artifact store (default storage/artifacts/) that optuna-dashboard
shows beside each trial. Model files are large, so only the k best completed trials keep theirs:
a model that drops out of the top k is replaced, under the same artifact id, by a short text
saying which trial pushed it out, and its id is listed in the study's `sweeper.evicted_models`
attribute. So no trial ever links to a file that is gone. Optuna's API cannot edit a finished
trial's artifact list, so the entry is rewritten in place (storage.rewrite_trial_system_attr).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sweeper import defaults, keys
from sweeper.paths import private_folder
from sweeper.pipeline.confusion import confusion_png, per_class_csv
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
    """Called at the end of a completed trial, while it can still be written to."""
    from optuna.artifacts import upload_artifact

    folder = artifact_dir()
    store = artifact_store(folder)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        png = tmp / f"confusion_matrix_trial_{trial.number}.png"
        confusion_png(y_true, y_pred, class_names, png, f"trial {trial.number} (test split)")
        upload_artifact(artifact_store=store, file_path=str(png), study_or_trial=trial,
                        mimetype="image/png")
        table = tmp / f"per_class_trial_{trial.number}.csv"
        table.write_text(per_class_csv(y_true, y_pred, class_names))
        upload_artifact(artifact_store=store, file_path=str(table), study_or_trial=trial,
                        mimetype="text/csv")
        keep = int(trial.study.user_attrs.get(keys.KEEP_MODELS, defaults.KEEP_MODELS))
        if keep > 0 and _in_top(trial, value, keep, direction):
            path = tmp / f"model_trial_{trial.number}.keras"
            model.save(path)
            artifact_id = upload_artifact(artifact_store=store, file_path=str(path),
                                          study_or_trial=trial,
                                          mimetype="application/octet-stream")
            trial.set_user_attr(keys.MODEL_ARTIFACT, artifact_id)
            _evict_beyond_top(trial.study, store, folder, keep, direction,
                              _Kept(trial.number, value, artifact_id, keys.trial_id(trial)))


@dataclass(frozen=True)
class _Kept:
    """A trial whose model file is kept."""

    number: int
    value: float
    artifact_id: str
    trial_id: int

    @property
    def values(self) -> list[float]:  # ranked as trials are (sweeper.trials)
        return [self.value]


def _kept_models(study, direction: str) -> list[_Kept]:
    """The completed trials whose model file is kept, best first."""
    import optuna

    evicted = set(study.user_attrs.get(keys.EVICTED_MODELS, []))
    kept = [_Kept(t.number, t.values[0], t.user_attrs[keys.MODEL_ARTIFACT], keys.trial_id(t))
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.user_attrs.get(keys.MODEL_ARTIFACT)
            and t.user_attrs[keys.MODEL_ARTIFACT] not in evicted]
    return best_first(kept, direction)


def evicted_note(number: int, value: float, keep: int, pushed_out_by: int) -> str:
    return (f"The model file of trial {number} (objective {value:.4f}) was deleted when trial "
            f"{pushed_out_by} entered the best {keep}: only the best {keep} trials keep their "
            "model (sweeper sweep --keep-models). Its params and seed are stored on the trial; "
            "`sweeper best --export` and `sweeper retrain --params` rebuild a model from them.\n")


def _replace_with_note(study, store, kept: _Kept, keep: int, pushed_out_by: int) -> None:
    """The model file becomes a short note, and the trial's artifact entry says so (a text file)
    instead of linking to a model that is gone."""
    from sweeper.storage.rdb import rewrite_trial_system_attr

    note = evicted_note(kept.number, kept.value, keep, pushed_out_by)
    store.write(kept.artifact_id, io.BytesIO(note.encode()))  # the model's bytes are gone
    meta = {"artifact_id": kept.artifact_id, "filename": f"model_trial_{kept.number}.evicted.txt",
            "mimetype": "text/plain", "encoding": None}
    rewrite_trial_system_attr(keys.storage_of(study), kept.trial_id,
                              keys.ARTIFACT_PREFIX + kept.artifact_id, json.dumps(meta))


def _in_top(trial, value: float, keep: int, direction: str) -> bool:
    kept = _kept_models(trial.study, direction)
    if len(kept) < keep:
        return True
    worst = kept[keep - 1].value
    return value > worst if direction == "maximize" else value < worst


def _evict_beyond_top(study, store, folder: Path, keep: int, direction: str,
                      newest: _Kept) -> None:
    from sweeper.storage.locks import file_lock

    # One evictor at a time, so two workers never both remove and both record.
    with file_lock(folder / ".evict.lock"):
        extra = best_first(_kept_models(study, direction) + [newest], direction)[keep:]
        if not extra:
            return
        for kept in extra:
            _replace_with_note(study, store, kept, keep, pushed_out_by=newest.number)
        evicted = list(study.user_attrs.get(keys.EVICTED_MODELS, [])) + [k.artifact_id for k in extra]
        study.set_user_attr(keys.EVICTED_MODELS, sorted(set(evicted)))
