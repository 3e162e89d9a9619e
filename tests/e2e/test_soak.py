"""A long run stays healthy: 4 workers, 300 short trials (150 on PostgreSQL, where what it adds
is the server's connection count) of which some fail, some turn NaN and many are pruned. The
controller's memory and open files stay flat, workers' memory stays bounded (they are recycled),
database connections stay flat, and the store ends with exactly the budget finished, none lost
or left RUNNING."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import optuna
import psutil
import pytest
import sqlalchemy
from conftest import _server_database, load

from sweeper.storage.counts import count_trials
from sweeper.storage.rdb import open_storage

pytestmark = pytest.mark.slow
TRIALS = {"sqlite": 300, "postgres": 150}
WORKERS = 4


def _sample(controller: psutil.Process) -> dict:
    workers = []
    for child in controller.children():
        try:
            workers.append((child.memory_info().rss / 2**20, child.num_fds()))
        except psutil.NoSuchProcess:  # a worker being recycled
            continue
    return {"time": time.time(), "rss_mb": controller.memory_info().rss / 2**20,
            "fds": controller.num_fds(), "workers": workers}


def _connections(admin_url: str, database: str) -> int:
    engine = sqlalchemy.create_engine(admin_url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sqlalchemy.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :d"), {"d": database}).scalar()
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def soak_store(request, project):
    if request.param == "sqlite":
        yield f"sqlite:///{project / 'storage' / 'soak.db'}", None, TRIALS["sqlite"]
        return
    url, drop = _server_database("postgres")
    yield url, url, TRIALS["postgres"]
    drop()


def test_soak_hundreds_of_faulty_trials(project, soak_store):
    url, server_url, trials_to_run = soak_store
    controller = subprocess.Popen(
        [sys.executable, "-m", "sweeper", "sweep", "soak", "--trials", str(trials_to_run),
         "--workers", str(WORKERS), "--storage", url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    process = psutil.Process(controller.pid)
    samples, connections = [], []
    database = sqlalchemy.engine.make_url(url).database
    try:
        while controller.poll() is None:
            time.sleep(1)
            try:
                samples.append(_sample(process))
            except psutil.NoSuchProcess:
                break
            if server_url:
                connections.append(_connections(server_url, database))
        output, _ = controller.communicate(timeout=600)
    finally:
        if controller.poll() is None:
            controller.kill()
    assert controller.returncode == 0, output[-3000:]

    # The store adds up: exactly the budget finished, nothing running or queued.
    storage = open_storage(url, create=False)
    study = load(url, "soak")
    counts = count_trials(storage, study._study_id)
    assert counts.finished == trials_to_run and counts.running == 0 and counts.waiting == 0, counts
    trials = study.trials
    injected = [t for t in trials if "injected failure" in str(t.user_attrs.get("sweeper.fail_reason"))]
    nan = [t for t in trials if "loss became nan" in str(t.user_attrs.get("sweeper.prune_reason"))]
    # Each fault is drawn at random (8% each): demand enough of each kind to have been tested.
    assert len(injected) >= 5 and len(nan) >= 5 and counts.pruned > len(nan)
    assert counts.complete >= 5

    # The controller is flat: memory and open files at the end as at the start (past start-up).
    third = len(samples) // 3
    assert third >= 20, "the run was too short to judge"
    early, late = samples[third // 2:third], samples[-third:]
    grew_mb = statistics.median(s["rss_mb"] for s in late) - statistics.median(
        s["rss_mb"] for s in early)
    assert grew_mb < 15, f"controller memory grew {grew_mb:.1f} MB"
    # +3: the files of one more store connection (a SQLite connection holds the database, its
    # WAL and its shared memory), which the controller's connection pool may open once its
    # readers overlap: bounded. A leak grows with the trials or the worker replacements.
    assert max(s["fds"] for s in late) <= max(s["fds"] for s in early) + 3, \
        "controller leaks files"

    # Workers: bounded memory (recycled every 25 trials) and open files.
    early_worker = [rss for s in early for rss, _ in s["workers"]]
    late_worker = [rss for s in late for rss, _ in s["workers"]]
    assert max(late_worker) < max(early_worker) + 150, (max(early_worker), max(late_worker))
    assert max(f for s in late for _, f in s["workers"]) <= \
        max(f for s in early for _, f in s["workers"]) + 4, "workers leak files"
    rss_at_start = [t.user_attrs["sweeper.rss_mb"] for t in sorted(trials, key=lambda t: t.number)
                    if "sweeper.rss_mb" in t.user_attrs]
    quarter = len(rss_at_start) // 4
    assert max(rss_at_start[-quarter:]) < max(rss_at_start[:quarter]) + 150

    print(f"\nsoak: {len(trials)} trials: complete {counts.complete}, pruned {counts.pruned} "
          f"(NaN {len(nan)}), failed {counts.failed} (injected {len(injected)}); controller "
          f"{grew_mb:+.1f} MB, files {max(s['fds'] for s in early)} -> "
          f"{max(s['fds'] for s in late)}; worker peak {max(early_worker):.0f} -> "
          f"{max(late_worker):.0f} MB; connections {connections and max(connections)}")
    if server_url:  # each worker's pool is small and the count does not creep up
        third = len(connections) // 3
        # Medians of the middle and the last third: past start-up, and a worker's background
        # bookkeeping holds one more connection for the moments it writes a trial's artifacts.
        assert statistics.median(connections[-third:]) <= \
            statistics.median(connections[third:2 * third]) + 2, connections
        assert max(connections) <= WORKERS * 6 + 4
    states = {t.state for t in trials}
    assert optuna.trial.TrialState.RUNNING not in states
