"""A trial's checkpoint: where its training stood, so that the retry of a trial cut short (a stop
request, a time limit, a dead worker, controller or node) trains only the epochs left, and ends as
the trial would have ended uncut.

Keras's BackupAndRestore saves the weights, the optimizer's state and the epoch. It does not save
the seed generators' states (augmentation and dropout draw on them, and Keras names them anew in
every model), nor the validation F1 of the epochs done, and it writes its file in place. So:
- saved: every variable of the model and of its optimizer, in their order (the optimizer's step
  count is the learning-rate schedule's position; the seed generators' states are among the
  model's variables), and the epochs done with their validation F1 and losses. An epoch's data
  order is a function of the seed and the epoch (train.epoch_order): nothing of it is saved.
  Measured on the digits CNN (TensorFlow, CPU, deterministic ops): cut after 2 of 4 epochs and
  resumed, the weights equal the uncut run's to the last bit.
- written atomically: the arrays to a new file, then the state that names it, by rename. A reader
  finds whole arrays or no checkpoint.
- one per trial and its retries, under storage/checkpoints/<study>/<first trial's number>/ (beside
  the artifacts: the store's folder, which a cluster's nodes share). It is removed once its trial
  is finished for good: complete, pruned, or failed with no retry to come (remove_finished).
- a checkpoint that cannot be read, was written under another space (its fingerprint), or holds
  another model (variable count or shapes), is ignored: the retry starts from epoch 1, and says
  why.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sweeper import keys
from sweeper.paths import private_folder, study_folder
from sweeper.pipeline.artifacts import artifact_dir

STATE_FILE = "checkpoint.json"


@dataclass
class Saved:
    """What a checkpoint says of the training it holds."""

    trial: int  # the number of the trial that wrote it
    epoch: int  # epochs done
    scores: list[float] = field(default_factory=list)  # validation F1 after each of them
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0  # of training, over every run, that those epochs took


def checkpoint_root() -> Path:
    return artifact_dir().parent / "checkpoints"


def chain_start(system_attrs: dict, number: int) -> int:
    """The number of the trial that a retry retries (through retries of retries), else its own:
    a retry trains as that trial, from its checkpoint."""
    return int((system_attrs.get(keys.RETRY_HISTORY) or [number])[0])


def chain_folder(study_name: str, first: int) -> Path:
    return study_folder(checkpoint_root(), study_name) / str(first)


def remove_finished(study_name: str, trials) -> int:
    """Removes the checkpoints whose trial is finished for good: its chain's last trial is
    complete or pruned, or failed and not marked to run again (a retry still to be queued is
    marked: sweeper.worker.retries). `trials`: all of the study's. Safe at any time, beside
    running workers. Returns how many it removed."""
    folder = study_folder(checkpoint_root(), study_name)
    if not folder.is_dir():
        return 0
    last: dict[int, Any] = {}  # chain -> its latest trial (a FrozenTrial)
    for trial in trials:
        first = chain_start(trial.system_attrs, trial.number)
        if first not in last or trial.number > last[first].number:
            last[first] = trial
    removed = 0
    for chain in folder.iterdir():
        trial = last.get(int(chain.name)) if chain.name.isdigit() else None
        if trial is not None and not _may_resume(trial):
            Checkpoint(chain).remove()
            removed += 1
    return removed


def _may_resume(trial) -> bool:
    state = trial.state.name
    if state in ("RUNNING", "WAITING"):
        return True
    return state == "FAIL" and trial.user_attrs.get(keys.REQUEUE) == trial.number


def model_arrays(model) -> list[np.ndarray]:
    """Copies of every variable of the model and its optimizer, in order."""
    optimizer = getattr(model, "optimizer", None)
    variables = [*model.variables, *(optimizer.variables if optimizer is not None else [])]
    return [v.numpy() for v in variables]  # a copy each (Keras: np.array of the value)


class Checkpoint:
    """The checkpoint in `folder`: written, read into a model, removed."""

    def __init__(self, folder: Path, space_hash: str = ""):
        self.folder = Path(folder)
        self.space_hash = space_hash  # the space it was written under: another is refused

    def write(self, arrays: list[np.ndarray], saved: Saved) -> None:
        """Writes it atomically: a write cut short leaves the checkpoint before it whole."""
        private_folder(self.folder)
        name = f"arrays-{time.time_ns()}.npz"
        _write_atomically(self.folder / name,
                          lambda f: np.savez(f, *arrays))
        state = {**asdict(saved), "arrays": name, "count": len(arrays), "space": self.space_hash}
        _write_atomically(self.folder / STATE_FILE, lambda f: f.write(json.dumps(state).encode()))
        for old in self.folder.glob("arrays-*.npz"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def read(self, model) -> tuple[Saved | None, str | None]:
        """Loads it into `model` (built and compiled). (what it holds, None) when it could be
        read; (None, why not) when it could not; (None, None) when there is none."""
        state_path = self.folder / STATE_FILE
        if not state_path.exists():
            return None, None
        try:
            state = json.loads(state_path.read_text())
            with np.load(self.folder / state["arrays"]) as stored:
                arrays = [stored[f"arr_{i}"] for i in range(state["count"])]
            saved = Saved(trial=int(state["trial"]), epoch=int(state["epoch"]),
                          scores=list(state["scores"]), losses=list(state["losses"]),
                          seconds=float(state.get("seconds", 0.0)))
        except Exception as e:  # a spoiled file fails in many ways (zip, JSON, numpy, ...)
            return None, f"checkpoint in {self.folder} unreadable ({type(e).__name__}: {e})"
        if state.get("space") != self.space_hash:
            return None, (f"checkpoint in {self.folder} was written under another space "
                          f"(fingerprint {state.get('space')}, this one {self.space_hash})")
        optimizer = model.optimizer
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        variables = [*model.variables, *optimizer.variables]
        shapes = [tuple(v.shape) for v in variables]
        if shapes != [a.shape for a in arrays]:
            return None, (f"checkpoint in {self.folder} holds another model ({len(arrays)} "
                          f"variables, this one has {len(variables)} or other shapes)")
        for variable, array in zip(variables, arrays):
            variable.assign(array)
        return saved, None

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _write_atomically(path: Path, write) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
