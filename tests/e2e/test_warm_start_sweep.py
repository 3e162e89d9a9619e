"""Real sweeps iterated on: a space swept, its learning-rate range widened and warm-started (its
trials imported, the sampler learning from them at once), then its epochs changed and
warm-started again (the best configurations queued to run again). The lineage shows in status,
report and the dashboard's study note."""

from __future__ import annotations

import os
import shutil

import optuna
import pytest
import yaml
from conftest import ROOT, TEST_SPACES, free_port, get_json, load, run_sweeper, start_dashboard

from sweeper import keys
from sweeper.space import parse_space
from sweeper.storage.counts import study_counts

pytestmark = pytest.mark.slow
State = optuna.trial.TrialState


def _write_space(folder, lr_high: float, max_epochs: int = 4) -> None:
    doc = yaml.safe_load((TEST_SPACES / "tiny_cnn.yaml").read_text())
    doc["params"]["learning_rate"] = {"type": "float", "low": 1.0e-3, "high": lr_high, "log": True}
    doc["training"]["max_epochs"] = max_epochs
    (folder / "search_spaces" / "ws.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture(scope="module")
def iterated(tmp_path_factory, shared_cache):
    """ws swept (4 trials, lr 1e-3..3e-3), refused once widened (lr up to 3e-2), warm-started
    (3 trials, one worker), then warm-started again with 3 epochs instead of 4 (2 trials)."""
    folder = tmp_path_factory.mktemp("warm")
    shutil.copytree(ROOT / "search_spaces", folder / "search_spaces")
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEPER_STORAGE",
                                                              "CUDA_VISIBLE_DEVICES")}
    env.update(SWEEPER_CACHE_DIR=str(shared_cache), PYTHONPATH=str(ROOT))
    url = f"sqlite:///{folder / 'storage' / 'ws.db'}"
    runs = {}
    _write_space(folder, 3.0e-3)
    runs["first"] = run_sweeper("sweep", "ws", "--trials", "4", "--workers", "1", env=env,
                                cwd=folder)
    _write_space(folder, 3.0e-2)
    runs["refused"] = run_sweeper("sweep", "ws", "--trials", "3", "--workers", "1", env=env,
                                  cwd=folder)
    runs["missing"] = run_sweeper("sweep", "ws", "--warm-start", "nope", env=env, cwd=folder)
    runs["warm"] = run_sweeper("sweep", "ws", "--trials", "3", "--workers", "1", "--warm-start",
                               env=env, cwd=folder)
    _write_space(folder, 3.0e-2, max_epochs=3)
    runs["rerun"] = run_sweeper("sweep", "ws", "--trials", "2", "--workers", "2", "--warm-start",
                                env=env, cwd=folder)
    return folder, env, url, runs


def test_a_changed_space_is_refused_with_the_way_on(iterated):
    folder, _, url, runs = iterated
    assert runs["first"].returncode == 0, runs["first"].stderr
    refused = runs["refused"]
    assert refused.returncode == 2 and "--warm-start" in refused.stderr, refused.stderr
    missing = runs["missing"]
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "no study 'nope'" in missing.stderr and "studies there: ws" in missing.stderr
    assert sorted(optuna.get_all_study_names(url)) == ["ws", "ws-2", "ws-3"]  # none made by those


def test_the_widened_space_imports_the_trials_and_runs_its_own_budget(iterated):
    _, _, url, runs = iterated
    assert runs["warm"].returncode == 0, runs["warm"].stderr
    assert "warm-started from 'ws' (learning_rate: float 0.001..0.003 (log) -> float " \
           "0.001..0.03 (log)): imported 4 of its 4 finished trials" in runs["warm"].stdout
    parent, study = load(url, "ws"), load(url, "ws-2")
    imported = [t for t in study.trials if keys.IMPORTED_FROM in t.user_attrs]
    own = [t for t in study.trials if keys.IMPORTED_FROM not in t.user_attrs]
    assert [(t.state, t.values, t.params, t.intermediate_values) for t in imported] == \
        [(t.state, t.values, t.params, t.intermediate_values) for t in parent.trials]
    assert len(own) == 3 and all(t.state in (State.COMPLETE, State.PRUNED) for t in own)
    counts = study_counts(study)
    assert (counts.imported, counts.finished, counts.claimed) == (4, 3, 3)


def test_the_first_trial_after_a_warm_start_is_sampled_from_what_was_imported(iterated):
    """Replayed: the worker's seeded TPE, given the 4 imported trials, proposes exactly the first
    trial the sweep ran; given none, as in a cold study, it proposes something else (its random
    start-up draw)."""
    _, _, url, _ = iterated
    study = load(url, "ws-2")
    first = study.trials[4]
    assert keys.IMPORTED_FROM not in first.user_attrs
    space = parse_space(study.user_attrs[keys.SPACE_YAML])
    # The worker's seed: the space's, + 1000 x its number (0), + the trials then in the study.
    space.config["sampler"]["seed"] += 4

    def proposed(trials) -> dict:
        replay = optuna.create_study(direction="maximize", sampler=space.make_sampler())
        for trial in trials:
            replay.add_trial(trial)
        return space.suggest(replay.ask())

    assert proposed(study.trials[:4]) == first.params
    assert proposed([]) != first.params


def test_changed_epochs_rerun_the_best_configurations_once(iterated):
    _, _, url, runs = iterated
    rerun = runs["rerun"]
    assert rerun.returncode == 0, rerun.stderr
    assert "warm-started from 'ws-2': training.max_epochs: 4 -> 3 changes results, so its " \
           "values are not comparable; queued its best 2 trials that fit to run again" in rerun.stdout
    parent, study = load(url, "ws-2"), load(url, "ws-3")
    best = sorted((t for t in parent.trials if t.state == State.COMPLETE),
                  key=lambda t: t.values[0], reverse=True)[:2]
    assert len(study.trials) == 2  # the budget: the two re-runs, and nothing else
    assert sorted((t.user_attrs[keys.RERUN_OF]["trial"], t.params["learning_rate"])
                  for t in study.trials) == \
        sorted((t.number, t.params["learning_rate"]) for t in best)
    assert all(t.state in (State.COMPLETE, State.PRUNED) and
               max(t.intermediate_values, default=0) <= 3 for t in study.trials)  # epochs 1..3


def test_the_lineage_shows_in_status_report_and_the_dashboard(iterated):
    folder, env, url, _ = iterated
    status = run_sweeper("status", "ws", env=env, cwd=folder)
    assert status.returncode == 0, status.stderr
    assert "warm-started from 'ws' (learning_rate" in status.stdout
    assert "warm-started from 'ws-2': training.max_epochs" in status.stdout
    report = run_sweeper("report", "ws", "--study", "ws-2", env=env, cwd=folder)
    assert report.returncode == 0, report.stderr
    assert "imported 4 of its 4 finished trials" in report.stdout
    assert "(imported: ws #" in report.stdout
    port = free_port()
    dashboard = start_dashboard(folder, env, port, "ws")
    try:
        studies = get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        ids = {s["study_name"]: s["study_id"] for s in studies}
        page = get_json(f"http://127.0.0.1:{port}/api/studies/{ids['ws-2']}")
    finally:
        dashboard.terminate()
        dashboard.wait(10)
    assert "warm-started from 'ws'" in page["note"]["body"]
    lineage = load(url, "ws-2").user_attrs[keys.LINEAGE]
    assert (lineage["parent"], lineage["imported"], lineage["done"]) == ("ws", 4, True)
