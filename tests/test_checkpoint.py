"""A trial cut short resumes from its checkpoint (real TensorFlow, a real SQLite store): the retry
trains only the epochs left and ends as the trial would have ended uncut; a checkpoint that cannot
serve (unreadable, another space, another model) is ignored with its reason, and a full disk only
costs the checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

# Run in a process of its own: TensorFlow's op determinism, which exactness needs on the CPU, is
# global and stays on once set.
CUT_AND_RESUME = textwrap.dedent('''
    import json, os, sys
    import keras, numpy as np, optuna, tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from sweeper.pipeline import train
    from sweeper.pipeline.objective import run_trial
    from sweeper.pipeline.train import TrialInterrupted
    from sweeper.space import parse_space
    from sweeper.storage.rdb import open_storage, retry_callback

    space = parse_space(sys.argv[1])
    params = json.loads(sys.argv[2])
    cut_after = int(sys.argv[3])  # epochs; all of them: cut in the compress stage
    train.STOP_WAIT_S = 60  # every epoch is short: a stop finishes the epoch in progress

    def study(name):
        storage = open_storage(f"sqlite:///{os.environ['STORE_DIR']}/{name}.db")
        return optuna.create_study(storage=storage, study_name="cut", directions=space.directions)

    uncut = study("uncut")
    uncut.enqueue_trial(params)
    trial = uncut.ask()
    reference = run_trial(trial, space, {})
    # As the worker does after each trial: layer names start over (they are in the compressed
    # file, whose size is an objective).
    keras.backend.clear_session(free_memory=False)
    cut = study("cut")
    cut.enqueue_trial(params)
    trial = cut.ask()
    reported = lambda: len(trial.storage.get_trial(trial._trial_id).intermediate_values)
    try:
        run_trial(trial, space, {}, should_stop=lambda: reported() >= cut_after)
    except TrialInterrupted:
        pass
    cut.tell(trial, state=optuna.trial.TrialState.FAIL)
    retry_callback()(cut, cut.trials[0])
    keras.backend.clear_session(free_memory=False)
    retry = cut.ask()
    resumed = run_trial(retry, space, {})
    stored = cut.trials[1]
    diff = max(float(np.max(np.abs(a - b)))
               for a, b in zip(reference.model.get_weights(), resumed.model.get_weights()))
    print(json.dumps({"resumed_from": stored.user_attrs["sweeper.resumed_from"],
                      "values": [resumed.values, reference.values],
                      "epochs_run": stored.user_attrs["sweeper.epochs_run"],
                      "f1": list(stored.intermediate_values.values()),
                      "uncut_f1": list(uncut.trials[0].intermediate_values.values()),
                      "weight_diff": diff}))
''')

SPACE = """
dataset: {name: digits}
model: {name: cnn, filters: 8, conv_blocks: 2, augment_strength: 0.2, dropout: 0.2}
training: {max_epochs: 4, batch_size: 64, seed: 5, lr_schedule: cosine}
pruner: none
params:
  learning_rate: {type: float, low: 0.001, high: 0.01, log: true}
  optimizer: {type: categorical, choices: [adam, sgd]}
"""


# A user's model function, two objectives and the compress stage after training.
USER_MODEL_COMPRESSED = """
dataset: {name: digits}
model: {function: "user_models:small_dense"}
training: {max_epochs: 4, batch_size: 64, seed: 5}
objectives: [f1, size_kb]
compress: {quantize: int8, finetune_epochs: 1, calibration_samples: 50}
pruner: none
params:
  learning_rate: {type: float, low: 0.001, high: 0.01, log: true}
  sparsity: {type: float, low: 0.0, high: 0.8}
"""


@pytest.mark.parametrize("space, params, cut_after", [
    (SPACE, {"learning_rate": 0.005, "optimizer": "adam"}, 2),
    (USER_MODEL_COMPRESSED, {"learning_rate": 0.005, "sparsity": 0.5}, 2),
    (USER_MODEL_COMPRESSED, {"learning_rate": 0.005, "sparsity": 0.5}, 4),
], ids=["cnn", "user-model-multi-objective-compressed", "cut-in-the-compress-stage"])
def test_a_trial_cut_by_a_stop_request_resumes_and_ends_as_if_uncut(tmp_path, shared_cache,
                                                                     space, params, cut_after):
    env = {"SWEEPER_CACHE_DIR": str(shared_cache), "STORE_DIR": str(tmp_path),
           "SWEEPER_ARTIFACT_DIR": str(tmp_path / "artifacts"), "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "helpers")]),
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", CUT_AND_RESUME, space, json.dumps(params),
                           str(cut_after)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    resumed = found["resumed_from"]
    # Asked to stop after epoch cut_after, the trial finished the epoch it was in.
    finished = min(cut_after + 1, 4)
    assert (resumed["trial"], resumed["epoch"]) == (0, finished) and resumed["seconds"] > 0
    assert found["epochs_run"] == 4 - finished  # only those after the checkpoint
    assert found["f1"] == found["uncut_f1"] and found["weight_diff"] == 0.0, found
    assert found["values"][0] == found["values"][1]  # F1 and, compressed, the size too
    assert not list((tmp_path / "checkpoints").rglob("*.npz"))  # removed once complete


def _model(units: int):
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units),
                              keras.layers.Dropout(0.1), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def test_a_checkpoint_holds_every_variable_and_is_refused_for_another_model_or_space(tmp_path):
    import numpy as np

    from sweeper.pipeline.checkpoint import Checkpoint, Saved, model_arrays

    model = _model(3)
    model.fit(np.ones((8, 4)), np.zeros(8), epochs=1, verbose=0)  # the optimizer has a state
    Checkpoint(tmp_path, "space-a").write(model_arrays(model), Saved(7, 1, [0.5], [0.9]))
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".npz"]  # no partial file
    again = _model(3)
    saved, why = Checkpoint(tmp_path, "space-a").read(again)
    assert why is None and saved == Saved(7, 1, [0.5], [0.9])
    assert all(np.array_equal(a, b) for a, b in zip(model_arrays(model), model_arrays(again)))
    for space, units, told in (("space-b", 3, "written under another space"),
                               ("space-a", 5, "holds another model")):
        saved, why = Checkpoint(tmp_path, space).read(_model(units))
        assert saved is None and told in why
    (tmp_path / "checkpoint.json").write_text("{not json")
    saved, why = Checkpoint(tmp_path, "space-a").read(_model(3))
    assert saved is None and "unreadable" in why
    assert Checkpoint(tmp_path / "none", "space-a").read(_model(3)) == (None, None)


# One trial cut after 2 of 4 epochs; its checkpoint then spoiled two ways before the retry runs;
# then a trial whose checkpoints land on a full disk.
SPOILED = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from sweeper.pipeline import train
    from sweeper.pipeline.objective import run_trial
    from sweeper.pipeline.train import TrialInterrupted
    from sweeper.space import parse_space
    from sweeper.storage.rdb import open_storage, retry_callback

    space = parse_space(sys.argv[1])
    store = open_storage(f"sqlite:///{os.environ['STORE_DIR']}/store.db")
    found = {}

    def cut_then_retry(name, spoil, retry_space):
        study = optuna.create_study(storage=store, study_name=name, direction="maximize")
        trial = study.ask()
        reported = lambda: len(store.get_trial(trial._trial_id).intermediate_values)
        try:
            run_trial(trial, space, {}, should_stop=lambda: reported() >= 2)
        except TrialInterrupted:
            pass
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        spoil(Path(os.environ["STORE_DIR"]) / "checkpoints" / name / "0")
        retry_callback()(study, study.trials[0])
        run_trial(study.ask(), retry_space, {})
        retry = study.trials[1]
        found[name] = {"note": retry.user_attrs.get("sweeper.resume_note"),
                       "resumed": retry.user_attrs.get("sweeper.resumed_from"),
                       "epochs_run": retry.user_attrs["sweeper.epochs_run"],
                       "steps": sorted(retry.intermediate_values)}

    def garble(folder):
        for npz in folder.glob("*.npz"):
            npz.write_bytes(npz.read_bytes()[:100])

    cut_then_retry("garbled", garble, space)
    cut_then_retry("changed", lambda folder: None,
                   parse_space(sys.argv[1].replace("seed: 5", "seed: 6")))
    full = os.environ.get("FULL_DISK")
    if full:  # this study's checkpoints live on a file system with no room for one
        os.makedirs(Path(os.environ["STORE_DIR"]) / "checkpoints", exist_ok=True)
        os.symlink(full, Path(os.environ["STORE_DIR"]) / "checkpoints" / "full")
        study = optuna.create_study(storage=store, study_name="full", direction="maximize")
        often = sys.argv[1].replace("seed: 5,", "seed: 5, checkpoint_every_s: 0,")
        run_trial(study.ask(), parse_space(often), {})
        found["full"] = {"epochs_run": study.trials[0].user_attrs["sweeper.epochs_run"]}
    print(json.dumps(found))
''')


def test_a_checkpoint_that_cannot_serve_costs_only_itself(tmp_path, shared_cache):
    """Unreadable, or written under another space: the retry trains from epoch 1 and says why.
    A full disk (a real one: a tmpfs too small for a checkpoint): the trial trains to its end,
    with one line."""
    env = {"SWEEPER_CACHE_DIR": str(shared_cache), "STORE_DIR": str(tmp_path),
           "SWEEPER_ARTIFACT_DIR": str(tmp_path / "artifacts"), "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(tiny)],
        capture_output=True).returncode == 0
    if mounted:
        env["FULL_DISK"] = str(tiny)
    try:
        done = subprocess.run([sys.executable, "-c", SPOILED, SPACE], env=env,
                              capture_output=True, text=True, timeout=600)
    finally:
        if mounted:
            subprocess.run(["umount", str(tiny)], capture_output=True)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    for name, told in (("garbled", "unreadable"), ("changed", "written under another space")):
        assert told in found[name]["note"] and found[name]["resumed"] is None, found[name]
        assert found[name]["epochs_run"] == 4 and found[name]["steps"] == [1, 2, 3, 4]
        assert f"{told}" in done.stdout and "training from epoch 1" in done.stdout
    if not mounted:
        pytest.skip("the full-disk part needs root to mount a small tmpfs; the rest passed")
    assert found["full"] == {"epochs_run": 4}  # trained to its end
    lines = [line for line in done.stdout.splitlines() if "not written" in line]
    assert len(lines) == 1 and "No space left on device" in lines[0], done.stdout
