"""No dead links: a model evicted from the top k leaves, under the same artifact id, a short note
saying which trial pushed it out, and the real optuna-dashboard serves every artifact it lists."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import optuna
import pytest
from conftest import ROOT

from sweeper.pipeline.artifacts import artifact_dir, save_trial_artifacts
from sweeper.storage.rdb import open_storage

pytestmark = pytest.mark.slow
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _tiny_model():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return model


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except urllib.error.URLError:  # not listening yet
        return 0, b""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_evicted_model_leaves_a_note_not_a_dead_link(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEPER_ARTIFACT_DIR", str(tmp_path / "artifacts"))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="evict", storage=open_storage(url),
                                direction="maximize")
    study.set_user_attr("sweeper.keep_models", 1)
    y = np.array([0, 1, 2, 1])
    for value in (0.5, 0.7, 0.6, 0.9):  # each better one pushes out the one kept before it
        trial = study.ask()
        save_trial_artifacts(trial, _tiny_model(), y, y, ["a", "b", "c"], value, "maximize")
        study.tell(trial, value)
    assert sorted(study.user_attrs["sweeper.evicted_models"]) == sorted(
        study.trials[n].user_attrs["sweeper.model_artifact"] for n in (0, 1))
    assert "sweeper.model_artifact" not in study.trials[2].user_attrs  # never in the top 1: never saved

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SWEEPER_ARTIFACT_DIR": str(artifact_dir())}
    dashboard = subprocess.Popen([sys.executable, "-m", "sweeper", "dashboard", "--storage", url,
                                  "--port", str(port)], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while _get(f"{base}/api/meta")[0] != 200:
            assert time.time() < deadline and dashboard.poll() is None, "dashboard did not start"
            time.sleep(0.3)
        study_id = json.loads(_get(f"{base}/api/studies")[1])["study_summaries"][0]["study_id"]
        trials = json.loads(_get(f"{base}/api/studies/{study_id}")[1])["trials"]
        served = {}
        for trial in trials:
            for artifact in trial["artifacts"]:
                status, body = _get(f"{base}/artifacts/{study_id}/{trial['trial_id']}/"
                                    f"{artifact['artifact_id']}")
                assert status == 200, f"trial {trial['number']}: {artifact['filename']} -> {status}"
                served[artifact["filename"]] = body
    finally:
        dashboard.terminate()
        dashboard.wait(10)

    assert served["model_trial_3.keras"][:2] == b"PK"  # the best: a real Keras file
    assert not any(name.endswith(".keras") for name in served if name != "model_trial_3.keras")
    assert served["model_trial_0.evicted.txt"].decode().startswith(
        "The model file of trial 0 (objective 0.5000) was deleted when trial 1 entered the best 1")
    assert b"when trial 3 entered the best 1" in served["model_trial_1.evicted.txt"]
    assert len(served["model_trial_1.evicted.txt"]) < 1000


KILLED_WHILE_WRITING = """
import os, signal, sys
import numpy as np, optuna
from sweeper.pipeline import artifacts
from sweeper.pipeline.bookkeeping import Bookkeeper
from sweeper.storage.rdb import open_storage
from sweeper.storage.trial_attrs import set_user_attrs
from test_artifacts import _tiny_model

study = optuna.load_study(study_name="killed", storage=open_storage(sys.argv[1]))
trial = study.ask()
y = np.array([0, 1, 2, 1])
job = artifacts.trial_artifacts(trial, _tiny_model(), y, y, ["a", "b", "c"], 0.8, "maximize")
set_user_attrs(trial, {"sweeper.test_f1": 0.75})
study.tell(trial, 0.8)  # told: the job runs after, as in a worker
# Killed once the files are written, before the entries that list them.
artifacts.write_trial_attrs = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
keeper = Bookkeeper()
keeper.hand_over(job.write, job.name, holds_objects=True)
keeper.drain()
"""


def test_a_worker_killed_while_writing_artifacts_loses_nothing_told(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="killed", storage=open_storage(url), direction="maximize")
    folder = tmp_path / "artifacts"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
           "SWEEPER_ARTIFACT_DIR": str(folder)}
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_WRITING, url], env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert len([f for f in folder.iterdir() if not f.name.startswith(".")]) == 3  # png, csv, model

    trial = optuna.load_study(study_name="killed", storage=open_storage(url)).trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 0.8
    assert trial.user_attrs["sweeper.test_f1"] == 0.75
    # No entry lists a file: none links to anything missing, and no model is counted as kept.
    assert not [k for k in trial.system_attrs if k.startswith("artifacts:")]
    assert "sweeper.model_artifact" not in trial.user_attrs
