"""A trial cut short resumes from its checkpoint (real TensorFlow, a real SQLite store): the retry
trains only the epochs left and ends as the trial would have ended uncut; a checkpoint of another
model is ignored with its reason."""

from __future__ import annotations

import json
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
    import numpy as np, optuna, tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from sweeper.pipeline.objective import run_trial
    from sweeper.pipeline.train import TrialInterrupted
    from sweeper.space import parse_space
    from sweeper.storage.rdb import open_storage, retry_callback

    space = parse_space(sys.argv[1])
    params = {"learning_rate": 0.005, "optimizer": "adam"}

    def study(name):
        storage = open_storage(f"sqlite:///{os.environ['STORE_DIR']}/{name}.db")
        return optuna.create_study(storage=storage, study_name="cut", direction="maximize")

    uncut = study("uncut")
    uncut.enqueue_trial(params)
    trial = uncut.ask()
    reference = run_trial(trial, space, {})
    cut = study("cut")
    cut.enqueue_trial(params)
    trial = cut.ask()
    reported = lambda: len(trial.storage.get_trial(trial._trial_id).intermediate_values)
    try:
        run_trial(trial, space, {}, should_stop=lambda: reported() >= 2)
    except TrialInterrupted:
        pass
    cut.tell(trial, state=optuna.trial.TrialState.FAIL)
    retry_callback()(cut, cut.trials[0])
    retry = cut.ask()
    resumed = run_trial(retry, space, {})
    stored = cut.trials[1]
    diff = max(float(np.max(np.abs(a - b)))
               for a, b in zip(reference.model.get_weights(), resumed.model.get_weights()))
    print(json.dumps({"resumed_from": stored.user_attrs["sweeper.resumed_from"],
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


def test_a_trial_cut_by_a_stop_request_resumes_and_ends_as_if_uncut(tmp_path, shared_cache):
    env = {"SWEEPER_CACHE_DIR": str(shared_cache), "STORE_DIR": str(tmp_path),
           "SWEEPER_ARTIFACT_DIR": str(tmp_path / "artifacts"), "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", CUT_AND_RESUME, SPACE], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["resumed_from"] == {"trial": 0, "epoch": 2}
    assert found["epochs_run"] == 2  # of 4: only those after the checkpoint
    assert found["f1"] == found["uncut_f1"] and found["weight_diff"] == 0.0, found
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
