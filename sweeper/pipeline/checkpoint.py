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
- one per trial and its retries, under <checkpoints>/<study>/<first trial's number>/.
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

import numpy as np

from sweeper.paths import private_folder

STATE_FILE = "checkpoint.json"


@dataclass
class Saved:
    """What a checkpoint says of the training it holds."""

    trial: int  # the number of the trial that wrote it
    epoch: int  # epochs done
    scores: list[float] = field(default_factory=list)  # validation F1 after each of them
    losses: list[float] = field(default_factory=list)


def model_arrays(model) -> list[np.ndarray]:
    """Copies of every variable of the model and its optimizer, in order."""
    optimizer = getattr(model, "optimizer", None)
    variables = [*model.variables, *(optimizer.variables if optimizer is not None else [])]
    return [np.array(v.numpy()) for v in variables]


class Checkpoint:
    """The checkpoint in `folder`: written, read into a model, removed."""

    def __init__(self, folder: Path, space_hash: str = ""):
        self.folder = Path(folder)
        self.space_hash = space_hash  # the space it was written under: another is refused

    def write(self, arrays: list[np.ndarray], saved: Saved) -> float:
        """Writes it atomically; the seconds it took."""
        started = time.perf_counter()
        private_folder(self.folder)
        name = f"arrays-{time.time_ns()}.npz"
        _write_atomically(self.folder / name,
                          lambda f: np.savez(f, *arrays))
        state = {**asdict(saved), "arrays": name, "count": len(arrays), "space": self.space_hash}
        _write_atomically(self.folder / STATE_FILE, lambda f: f.write(json.dumps(state).encode()))
        for old in self.folder.glob("arrays-*.npz"):
            if old.name != name:
                old.unlink(missing_ok=True)
        return time.perf_counter() - started

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
                          scores=list(state["scores"]), losses=list(state["losses"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
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
