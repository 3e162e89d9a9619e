"""Inspecting a real stored sweep: optuna-dashboard's HTTP API and a real browser, status, report,
best, retrain, and read-only commands that never create a store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import numpy as np
import optuna
import pytest
import yaml
from conftest import ROOT, TEST_SPACES, free_port, get_json, run_sweeper, start_dashboard
from PIL import Image

pytestmark = pytest.mark.slow
State = optuna.trial.TrialState


@pytest.fixture(scope="module")
def swept(tmp_path_factory, shared_cache):
    """A folder where a real 6-trial sweep of tiny_cnn ran (2 workers), keeping 2 models."""
    folder = tmp_path_factory.mktemp("swept")
    shutil.copytree(ROOT / "search_spaces", folder / "search_spaces")
    shutil.copy(TEST_SPACES / "tiny_cnn.yaml", folder / "search_spaces")
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEPER_STORAGE",
                                                              "CUDA_VISIBLE_DEVICES")}
    env.update(SWEEPER_CACHE_DIR=str(shared_cache), PYTHONPATH=str(ROOT))
    result = run_sweeper("sweep", "tiny_cnn", "--trials", "6", "--workers", "2",
                         "--keep-models", "2", env=env, cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder, env


def sweeper_in(folder, env, *args, timeout=300):
    return run_sweeper(*args, env=env, cwd=folder, timeout=timeout)


def test_dashboard_api_shows_everything_about_each_trial(swept):
    folder, env = swept
    port = free_port()
    dashboard = start_dashboard(folder, env, port, "tiny_cnn")
    try:
        studies = get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == ["tiny_cnn"]
        study = get_json(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}")
        assert "best: trial" in study["note"]["body"]
        attrs = {a["key"] for a in study["user_attrs"]}
        assert {"sweeper.space_yaml", "sweeper.versions", "sweeper.command",
                "sweeper.started", "sweeper.git_commit"} <= attrs
        complete = [t for t in study["trials"] if t["state"] == "Complete"]
        assert len(study["trials"]) == 6 and complete
        models = 0
        for trial in complete:
            keys = {a["key"] for a in trial["user_attrs"]}
            assert {"sweeper.test_f1", "sweeper.test_precision", "sweeper.test_recall",
                    "sweeper.test_accuracy", "sweeper.seconds", "sweeper.epochs_run",
                    "sweeper.loss_history", "sweeper.worker", "sweeper.host",
                    "sweeper.cuda_visible_devices"} <= keys
            assert trial["params"] and len(trial["intermediate_values"]) == 4
            names = {a["filename"] for a in trial["artifacts"]}
            assert f"confusion_matrix_trial_{trial['number']}.png" in names
            assert f"per_class_trial_{trial['number']}.csv" in names
            models += f"model_trial_{trial['number']}.keras" in names
            for artifact in trial["artifacts"]:  # every one listed can be fetched: no dead link
                url = (f"http://127.0.0.1:{port}/artifacts/{trial['study_id']}/"
                       f"{trial['trial_id']}/{artifact['artifact_id']}")
                with urllib.request.urlopen(url, timeout=10) as response:
                    head = response.read(8)
                if artifact["filename"].endswith(".png"):
                    assert head == b"\x89PNG\r\n\x1a\n"
                if artifact["filename"].endswith(".evicted.txt"):
                    assert head == b"The mode"
        assert models >= 1
        # Only the 2 best models are kept on disk, whatever was uploaded along the way.
        kept = [p for p in (folder / "storage" / "artifacts").iterdir()
                if p.is_file() and not p.name.startswith(".") and p.stat().st_size > 20000
                and p.read_bytes()[:2] == b"PK"]
        assert len(kept) <= 2
    finally:
        dashboard.terminate()
        dashboard.wait(10)


def test_browser_shows_the_study_page(swept, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium here (.ci/run installs Debian's chromium)")
    folder, env = swept
    port = free_port()
    dashboard = start_dashboard(folder, env, port, "tiny_cnn")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900",
             "--virtual-time-budget=10000"]
    page = f"http://127.0.0.1:{port}/dashboard/studies/1"
    try:
        shot = tmp_path / "study.png"
        subprocess.run([chromium, *flags, f"--screenshot={shot}", page], capture_output=True,
                       timeout=120, check=True)
        dom = subprocess.run([chromium, *flags, "--dump-dom", page], capture_output=True,
                             text=True, timeout=120, check=True).stdout
    finally:
        dashboard.terminate()
        dashboard.wait(10)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (900, 1280)
    assert pixels.std() > 10, "the screenshot is blank"
    assert "tiny_cnn" in dom


def test_status_report_best_and_retrain(swept, tmp_path):
    folder, env = swept
    status = sweeper_in(folder, env, "status", "tiny_cnn")
    assert status.returncode == 0, status.stderr
    assert "tiny_cnn" in status.stdout and "6/6 done" in status.stdout

    report = sweeper_in(folder, env, "report", "tiny_cnn", "--top", "3")
    assert report.returncode == 0, report.stderr
    assert "top 3 trials" in report.stdout and "pruning saved" in report.stdout
    assert "hyperparameter importances" in report.stdout
    out = folder / "storage" / "reports" / "tiny_cnn"
    html = (out / "report.html").read_text()
    assert "plotly" in html and "optimization history" in html
    for name in ("optimization_history", "intermediate_values", "parallel_coordinate", "slice"):
        assert Image.open(out / f"{name}.png").size[0] > 200

    exported = tmp_path / "best.yaml"
    best = sweeper_in(folder, env, "best", "tiny_cnn", "--export", str(exported))
    assert best.returncode == 0, best.stderr
    chosen = yaml.safe_load(exported.read_text())
    study = optuna.load_study(study_name="tiny_cnn",
                              storage=f"sqlite:///{folder / 'storage' / 'tiny_cnn.db'}")
    assert chosen["trial"] == study.best_trial.number
    assert chosen["params"] == study.best_trial.params
    assert chosen["hyperparameters"]["learning_rate"] == study.best_trial.params["learning_rate"]

    retrain = sweeper_in(folder, env, "retrain", "tiny_cnn", "--params", str(exported),
                         "--out", str(tmp_path / "model"))
    assert retrain.returncode == 0, retrain.stderr
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["trial"] == chosen["trial"] and metrics["seed"] == chosen["seed"]
    assert 0 <= metrics["test"]["f1"] <= 1
    assert (tmp_path / "model" / f"best_trial_{chosen['trial']}.keras").stat().st_size > 1000
    # Same seed, same data, same configuration: the test F1 is reproduced.
    again = sweeper_in(folder, env, "retrain", "tiny_cnn", "--params", str(exported),
                       "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    repeat = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert abs(repeat["test"]["f1"] - metrics["test"]["f1"]) < 0.02


@pytest.mark.parametrize("args, message", [
    (["status", "nothere"], "no study store"),
    (["report", "nothere"], "no study store"),
    (["best", "nothere"], "no study store"),
    (["retrain", "nothere"], "no study store"),
    (["dashboard", "nothere"], "no study store"),
    (["report", "tiny_cnn", "--study", "other"], "no study 'other'"),
    (["status"], "which store?"),
])
def test_read_only_commands_create_nothing(swept, args, message):
    folder, env = swept
    before = sorted(p.name for p in (folder / "storage").iterdir())
    result = sweeper_in(folder, env, *args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in (folder / "storage").iterdir()) == before


def test_best_of_a_study_without_completed_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    from sweeper.space import load_space
    from sweeper.sweep.studies import prepare_study

    prepare_study(load_space(str(TEST_SPACES / "tiny_cnn.yaml")), url, "tiny_cnn", 3)
    result = run_sweeper("best", "tiny_cnn", "--storage", url)
    assert result.returncode == 2 and "has no completed trial yet" in result.stderr


def test_dashboard_and_status_read_while_a_sweep_writes(project):
    """No 'database is locked' on either side while both use one SQLite store."""
    env = dict(os.environ)
    sweep = subprocess.Popen([sys.executable, "-m", "sweeper", "sweep", "tiny_cnn", "--trials",
                              "8", "--workers", "2"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    port = free_port()
    dashboard = None
    try:
        deadline = time.time() + 120
        while not (project / "storage" / "tiny_cnn.db").exists() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        dashboard = start_dashboard(project, env, port, "tiny_cnn")
        polls = 0
        saw_running = False
        while sweep.poll() is None and time.time() < deadline + 120:
            study = get_json(f"http://127.0.0.1:{port}/api/studies/1")
            saw_running |= any(t["state"] == "Running" for t in study["trials"])
            status = run_sweeper("status", "tiny_cnn")
            assert status.returncode == 0, status.stderr
            polls += 1
        output = sweep.communicate(timeout=120)[0]
    finally:
        if sweep.poll() is None:
            sweep.kill()
        if dashboard is not None:
            dashboard.terminate()
            dashboard.wait(10)
    assert sweep.returncode == 0, output
    assert polls >= 3 and saw_running
    assert "database is locked" not in output
    logs = "".join(p.read_text() for p in (project / "storage" / "logs").rglob("*.log"))
    assert "database is locked" not in logs


def test_an_empty_store_is_a_clear_error(tmp_path):
    from sweeper.storage.rdb import open_storage

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    open_storage(url)  # a store with Optuna's tables and no study
    for command in (["status"], ["report", "x"], ["dashboard"]):
        result = run_sweeper(*command, "--storage", url)
        assert result.returncode == 2, command
        assert "no studies in" in result.stderr or "no study" in result.stderr
