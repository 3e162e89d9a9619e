"""A real multi-objective sweep with a compress stage (tests/spaces/tiny_compress.yaml: F1 against
int8 size, sparsity searched, a size constraint): it resumes, prunes with reasons, stores every
measure, and the dashboard, the report, `best --pick` and `retrain` show and use its front."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import optuna
import pytest
import yaml
from conftest import (
    ROOT,
    TEST_SPACES,
    _server_database,
    free_port,
    get_json,
    load,
    run_sweeper,
    start_dashboard,
)

from sweeper import keys

pytestmark = pytest.mark.slow
State = optuna.trial.TrialState
LABELS = ["val F1 (macro)", "size KiB (gzipped)"]
MEASURES = (keys.PARAMS, keys.NONZERO_PARAMS, keys.SPARSITY, keys.FLOAT_BYTES,
            keys.COMPRESSED_BYTES, keys.COMPRESSED_GZIP_BYTES, keys.LATENCY_MS,
            keys.LATENCY_BATCH_MS, keys.FLOAT_LATENCY_MS, keys.FLOAT_LATENCY_BATCH_MS,
            keys.FLOAT_VAL_F1, keys.COMPRESSED_VAL_F1, keys.COMPRESSED_TEST_F1)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def compress_swept(request, tmp_path_factory, shared_cache):
    """tiny_compress swept in two runs: 4 trials, then resumed to 10 (2 workers each)."""
    folder = tmp_path_factory.mktemp(f"compress-{request.param}")
    shutil.copytree(ROOT / "search_spaces", folder / "search_spaces")
    shutil.copy(TEST_SPACES / "tiny_compress.yaml", folder / "search_spaces")
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEPER_STORAGE",
                                                              "CUDA_VISIBLE_DEVICES")}
    env.update(SWEEPER_CACHE_DIR=str(shared_cache), PYTHONPATH=str(ROOT))
    drop = None
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'storage' / 'tiny_compress.db'}"
    else:
        url, drop = _server_database("postgres")
    env["SWEEPER_STORAGE"] = url
    runs = [run_sweeper("sweep", "tiny_compress", "--trials", str(n), "--workers", "2",
                        env=env, cwd=folder) for n in (4, 10)]
    yield folder, env, url, runs
    if drop is not None:
        drop()


def test_a_multi_objective_sweep_resumes_prunes_and_measures(compress_swept):
    folder, env, url, runs = compress_swept
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
    assert "0 of 4 trials already done" in runs[0].stdout
    assert "4 of 10 trials already done" in runs[1].stdout  # resumed, not started over
    study = load(url, "tiny_compress")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == LABELS
    trials = study.get_trials()
    assert len(trials) == 10 and all(t.state in (State.COMPLETE, State.PRUNED) for t in trials)
    complete = [t for t in trials if t.state == State.COMPLETE]
    pruned = [t for t in trials if t.state == State.PRUNED]
    assert complete and pruned, [t.state for t in trials]
    for t in pruned:  # judged on per-epoch F1, which stays visible; never on the front
        assert t.values is None
        assert t.user_attrs[keys.PRUNE_REASON].startswith("pruned after epoch ")
        assert t.intermediate_values
    for t in complete:
        assert set(MEASURES) <= set(t.user_attrs), set(MEASURES) - set(t.user_attrs)
        f1, size_kb = t.values
        assert f1 == t.user_attrs[keys.COMPRESSED_VAL_F1]
        assert size_kb == t.user_attrs[keys.COMPRESSED_GZIP_BYTES] / 1024
        assert sorted(t.intermediate_values) == [1, 2, 3, 4]
        # the constraint size_kb <= 40 reached the samplers, which read it from the trial
        assert t.constraints == {"size_kb <= 40": pytest.approx(size_kb - 40)}
    assert {t.number for t in study.best_trials} <= {t.number for t in complete}


def test_the_dashboard_labels_the_pareto_front(compress_swept, tmp_path):
    folder, env, url, _ = compress_swept
    port = free_port()
    dashboard = start_dashboard(folder, env, port)
    try:
        study = get_json(f"http://127.0.0.1:{port}/api/studies/1")
        assert study["directions"] == ["maximize", "minimize"]
        assert study["objective_names"] == LABELS
        assert study["best_trials"]  # the front the dashboard's Pareto plot draws
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            pytest.skip("no chromium here (.ci/run installs Debian's chromium); the API above "
                        "was checked")
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000",
                 "--virtual-time-budget=15000"]
        page = f"http://127.0.0.1:{port}/dashboard/studies/1"
        dom = subprocess.run([chromium, *flags, "--dump-dom", page], capture_output=True,
                             text=True, timeout=120, check=True).stdout
    finally:
        dashboard.terminate()
        dashboard.wait(10)
    assert "Pareto Front" in dom
    for label in LABELS:  # the plot's axes, drawn by the browser from the study's metric names
        assert f">{label}</text>" in dom, label


def test_report_best_pick_and_retrain_use_the_front(compress_swept, tmp_path):
    folder, env, url, _ = compress_swept
    report = run_sweeper("report", "tiny_compress", "--out", str(tmp_path / "report"), env=env,
                         cwd=folder)
    assert report.returncode == 0, report.stderr
    assert "Pareto front:" in report.stdout
    assert (tmp_path / "report" / "pareto_front.png").stat().st_size > 10_000
    assert "pareto front" in (tmp_path / "report" / "report.html").read_text()

    study = load(url, "tiny_compress")
    sizes = sorted(t.values[1] for t in study.best_trials)
    limit = sizes[len(sizes) // 2]  # a bound some points of the front meet
    picked = tmp_path / "point.yaml"
    best = run_sweeper("best", "tiny_compress", "--pick", f"max f1 where size_kb <= {limit}",
                       "--export", str(picked), env=env, cwd=folder)
    assert best.returncode == 0, best.stderr
    point = yaml.safe_load(picked.read_text())
    fits = [t for t in study.trials if t.state == State.COMPLETE and t.values[1] <= limit]
    assert point["trial"] == max(fits, key=lambda t: t.values[0]).number
    assert point["metrics"]["size_kb"] <= limit

    # The point with the best F1: a weak model's F1 swings with the last bits of its weights.
    best = run_sweeper("best", "tiny_compress", "--pick", "max f1", "--export", str(picked),
                       env=env, cwd=folder)
    assert best.returncode == 0, best.stderr
    point = yaml.safe_load(picked.read_text())
    retrain = run_sweeper("retrain", "tiny_compress", "--params", str(picked), "--as-trial",
                          "--out", str(tmp_path / "model"), env=env, cwd=folder, timeout=600)
    assert retrain.returncode == 0, retrain.stderr
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    compressed = metrics["compressed"]
    assert abs(compressed["compressed_val_f1"] - point["metrics"]["f1"]) <= 0.01
    assert abs(compressed["test"]["f1"] - point["compressed_test_f1"]) <= 0.01
    for name in ("model", "float_model"):
        path = tmp_path / "model" / os.path.basename(compressed[name])
        assert path.stat().st_size > 0
    assert os.path.getsize(tmp_path / "model" / os.path.basename(compressed["model"])) == \
        compressed["compressed_bytes"]


@pytest.mark.parametrize("pick, told", [
    ("max accuracy", "'accuracy' is not a metric"),
    ("max f1 where size_kb <= 0.001", "no completed trial"),
    ("best f1", "is not a pick"),
])
def test_a_bad_pick_is_one_line(compress_swept, pick, told):
    folder, env, _, _ = compress_swept
    result = run_sweeper("best", "tiny_compress", "--pick", pick, env=env, cwd=folder)
    assert result.returncode == 2
    assert told in result.stderr and len(result.stderr.strip().splitlines()) == 1
