"""The real sweep under Keras's other backends, where they are installed: JAX (CI installs its CPU
wheel) and PyTorch (where present). Workers pinned to fake GPUs, per-epoch F1, pruning, the model
kept as an artifact scoring exactly the stored F1, and a resume, as under TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest
from conftest import load, run_sweeper

from sweeper.keras_backend import installed

pytestmark = pytest.mark.slow
State = optuna.trial.TrialState

# Run in a child under the backend: each complete trial's kept model, reloaded, predicts the
# validation and test splits; scikit-learn scores those predictions.
RESCORE = """
import json, sys
import keras, numpy as np, optuna
from optuna.artifacts import download_artifact
from sklearn.metrics import f1_score
from sweeper import keys
from sweeper.pipeline.artifacts import artifact_store
from sweeper.pipeline.data import load_dataset
from sweeper.space import parse_space

url, name, folder = sys.argv[1:]
study = optuna.load_study(study_name=name, storage=url)
space = parse_space(study.user_attrs[keys.SPACE_YAML])
data = load_dataset(space.config["dataset"], space.config["preprocess"])
scores = {}
for t in study.trials:
    if t.state.name != "COMPLETE":
        continue
    path = f"{folder}/model_{t.number}.keras"
    download_artifact(artifact_store=artifact_store(), file_path=path,
                      artifact_id=t.user_attrs[keys.MODEL_ARTIFACT])
    model = keras.models.load_model(path)
    scores[t.number] = [f1_score(y, np.asarray(model.predict_on_batch(x)).argmax(-1),
                                 average="macro", zero_division=0)
                        for x, y in ((data.x_val, data.y_val), (data.x_test, data.y_test))]
print(json.dumps(scores))
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_sweep_under_another_backend_pins_reports_prunes_and_resumes(project, backend):
    if not installed(backend):
        pytest.skip(f"{backend} is not installed here (`make test` installs JAX's CPU wheel; "
                    "PyTorch only where the machine has it)")
    env = {**os.environ, "KERAS_BACKEND": backend}
    url = f"sqlite:///{project / 'storage' / 'backend_cnn.db'}"
    first = run_sweeper("sweep", "backend_cnn", "--trials", "6", "--gpus", "0,1",
                        "--keep-models", "6", env=env)
    assert first.returncode == 0, first.stdout + first.stderr

    trials = load(url, "backend_cnn").trials
    assert len(trials) == 6 and {t.state for t in trials} <= {State.COMPLETE, State.PRUNED}
    seen = {(t.user_attrs["sweeper.worker"], t.user_attrs["sweeper.cuda_visible_devices"])
            for t in trials}
    assert seen == {("0", "0"), ("1", "1")}  # each worker pinned to its own GPU
    for t in trials:
        assert t.user_attrs["sweeper.backend"].split()[0] == backend
        assert t.user_attrs["sweeper.devices"] == []  # the fake GPUs do not exist: on the CPU
        epochs = t.user_attrs["sweeper.epochs_run"]
        assert sorted(t.intermediate_values) == list(range(1, epochs + 1))
        seconds = t.user_attrs["sweeper.seconds"]
        assert 0 < seconds["first_epoch"] <= seconds["epochs"]
        if t.state == State.PRUNED:
            assert epochs < 4 and t.user_attrs["sweeper.prune_reason"].startswith(
                f"pruned after epoch {epochs}")
    assert any(t.state == State.PRUNED for t in trials), "the top-quarter pruner pruned nothing"
    complete = [t for t in trials if t.state == State.COMPLETE]
    assert complete

    rescore = subprocess.run([sys.executable, "-c", RESCORE, url, "backend_cnn", str(project)],
                             capture_output=True, text=True, env=env, timeout=300, cwd=project)
    assert rescore.returncode == 0, rescore.stderr[-3000:]
    scores = json.loads(rescore.stdout.strip().splitlines()[-1])
    for t in complete:
        val_f1, test_f1 = scores[str(t.number)]
        assert t.value == pytest.approx(val_f1, abs=1e-12)
        assert t.intermediate_values[4] == pytest.approx(val_f1, abs=1e-12)
        assert t.user_attrs["sweeper.test_f1"] == pytest.approx(test_f1, abs=1e-12)

    second = run_sweeper("sweep", "backend_cnn", "--trials", "7", "--gpus", "0,1", env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "6 of 7 trials already done, resuming" in second.stdout
    resumed = load(url, "backend_cnn").trials
    assert len(resumed) == 7 and all(t.state != State.RUNNING for t in resumed)
    assert [(t.params, t.value) for t in resumed[:6]] == [(t.params, t.value) for t in trials]
    assert resumed[6].user_attrs["sweeper.backend"].split()[0] == backend


def test_a_space_that_needs_tensorflow_is_refused_under_jax(project):
    """The compress stage converts to TFLite: under JAX, `check` and `sweep` refuse it in one
    line before anything is written."""
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    for command in (["check", "tiny_compress"], ["sweep", "tiny_compress", "--trials", "2"]):
        result = run_sweeper(*command, env=env, cwd=project)
        assert result.returncode == 2, result.stdout + result.stderr
        line = result.stderr.strip()
        assert "\n" not in line and "compress section needs TensorFlow" in line
        assert "KERAS_BACKEND=tensorflow" in line
    assert not (project / "storage").exists()
