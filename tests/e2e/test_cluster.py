"""Cluster behaviour: a real Slurm job array on PostgreSQL, the time-limit warning, a database
restart mid-sweep, and a worker on another machine dying (heartbeats)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import optuna
import pytest
from conftest import ROOT, TEST_SPACES, _server_database, load, run_sweeper, wait_for_running

pytestmark = pytest.mark.slow
State = optuna.trial.TrialState
SLURM_SCRIPTS = ROOT / "tests" / "slurm"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A real single-node Slurm with 4 fake GPUs, started by the project's script."""
    if not shutil.which("slurmctld") or not shutil.which("sbatch"):
        pytest.skip("Slurm is not installed (.ci/run installs Debian's slurm-wlm and munge)")
    if os.geteuid() != 0:
        pytest.skip("the test Slurm runs its daemons as root (SlurmUser=root, mknod for GPUs)")
    folder = tmp_path_factory.mktemp("slurm")
    started = subprocess.run(["bash", str(SLURM_SCRIPTS / "start_slurm.sh"), str(folder), "4"],
                             capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        subprocess.run(["bash", str(SLURM_SCRIPTS / "stop_slurm.sh"), str(folder)])
        pytest.skip(f"Slurm could not start here: {started.stderr.strip()[-300:]}")
    yield started.stdout.strip()
    subprocess.run(["bash", str(SLURM_SCRIPTS / "stop_slurm.sh"), str(folder)], timeout=60)


def test_slurm_array_runs_pinned_workers_on_postgres(project, slurm, monkeypatch):
    url, drop = _server_database("postgres")
    # A password the server (trust auth) ignores: it must never show up anywhere.
    from sqlalchemy.engine import make_url

    url = make_url(url).set(password="notasecret").render_as_string(hide_password=False)
    monkeypatch.setenv("SLURM_CONF", slurm)
    try:
        result = run_sweeper("slurm", "long_cnn", "--nodes", "4", "--gpus-per-node", "1",
                             "--time", "00:10:00", "--trials", "8", "--storage", url, "--submit")
        assert result.returncode == 0, result.stdout + result.stderr
        job_id = result.stdout.split("submitted job ")[1].split()[0]
        deadline = time.time() + 400
        while time.time() < deadline:
            queued = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True,
                                    text=True).stdout.strip()
            if not queued:
                break
            time.sleep(2)
        else:
            subprocess.run(["scancel", job_id])
            pytest.fail("the job array did not finish in time")
        folder = project / "storage" / "slurm" / "long_cnn"
        logs = {p.name: p.read_text() for p in folder.glob(f"{job_id}_*.log")}
        assert len(logs) == 4, logs
        trials = load(url, "long_cnn").trials
        finished = [t for t in trials if t.state in (State.COMPLETE, State.PRUNED)]
        assert len(finished) == 8, "\n".join(logs.values())[-3000:]
        assert not [t for t in trials if t.state in (State.RUNNING, State.WAITING)]
        # Each array task ran its worker on the GPU Slurm gave it, and each did some of the work.
        devices = {t.user_attrs["sweeper.cuda_visible_devices"] for t in finished}
        assert devices == {"0", "1", "2", "3"}, "\n".join(logs.values())[-3000:]
        everything = result.stdout + result.stderr + (folder / "sweep.sbatch").read_text()
        everything += "".join(logs.values())
        everything += "".join(p.read_text() for p in (project / "storage").rglob("*.log"))
        assert "notasecret" not in everything
        assert "notasecret" not in str(load(url, "long_cnn").user_attrs)
    finally:
        drop()


# Trials of ~200 epochs (tens of seconds here): whenever the time limit comes, a trial is in its
# middle; three of them outlast a one-minute job.
SLURM_CUT_SPACE = (TEST_SPACES / "resume_cnn.yaml").read_text().replace(
    "max_epochs: 40", "max_epochs: 200")


def _wait_for_job(job_id: str, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True,
                              text=True).stdout.strip():
            return
        time.sleep(2)
    pytest.fail(f"job {job_id} did not end in {seconds:.0f}s")


def test_a_job_cut_by_its_time_limit_is_resumed_by_the_next(project, slurm, monkeypatch):
    """A one-minute job: Slurm's warning (or, late, its SIGTERM at the limit) cuts the trial in
    flight, which writes its checkpoint; the next job resumes it at the epoch it reached."""
    (project / "search_spaces" / "slurm_cut.yaml").write_text(SLURM_CUT_SPACE)
    url, drop = _server_database("postgres")
    monkeypatch.setenv("SLURM_CONF", slurm)
    folder = project / "storage" / "slurm" / "slurm_cut"
    budget = 4
    def submit(limit: str) -> str:
        submitted = run_sweeper("slurm", "slurm_cut", "--nodes", "1", "--gpus-per-node", "1",
                                "--time", limit, "--trials", str(budget), "--storage", url,
                                "--submit")
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        _wait_for_job(submitted.stdout.split("submitted job ")[1].split()[0], 400)
        return "".join(p.read_text() for p in folder.glob("*.log"))

    try:
        # A one-minute job may end between two trials, or in a trial's first epoch (a few
        # percent of the time): then nothing was cut with epochs done, and another is tried.
        for _ in range(3):
            logs = submit("1")
            cut = [t for t in load(url, "slurm_cut").trials
                   if t.state == State.FAIL and t.intermediate_values]
            if cut:
                break
        assert cut, logs[-3000:]
        logs = submit("00:10:00")
        trials = {t.number: t for t in load(url, "slurm_cut").trials}
        assert sum(t.state == State.COMPLETE for t in trials.values()) == budget, logs[-3000:]
        for trial in cut:
            retry = next(t for t in trials.values()
                         if (t.system_attrs.get("retry_history") or [None])[-1] == trial.number)
            reached = len(trial.intermediate_values)
            assert retry.user_attrs["sweeper.resumed_from"]["epoch"] == reached, logs[-3000:]
            assert retry.user_attrs["sweeper.epochs_run"] == 200 - reached
        assert "resumed from checkpoints" in logs
        assert not list((project / "storage" / "checkpoints").rglob("*.npz"))
    finally:
        drop()


def test_time_limit_warning_checkpoints_the_trials_and_leaves(project):
    """SIGUSR1 (what Slurm sends before the limit): the trials in flight are cut at once, each
    with its checkpoint written and its retry queued for the next job; no new one starts."""
    url = f"sqlite:///{project / 'storage' / 'long_cnn.db'}"
    sweep = subprocess.Popen([sys.executable, "-m", "sweeper", "sweep", "long_cnn", "--trials",
                              "20", "--workers", "2"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        running = wait_for_running(url, "long_cnn", 2, sweep)
        sweep.send_signal(signal.SIGUSR1)
        output = sweep.communicate(timeout=180)[0]
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, output
    assert "workers drained" in output
    trials = {t.number: t for t in load(url, "long_cnn").trials}
    cut = [trials[r.number] for r in running if trials[r.number].state == State.FAIL]
    assert cut, output  # the warning came while they trained (120 epochs each)
    for trial in cut:
        assert "the time limit is near; queued to run again" in \
            trial.user_attrs["sweeper.fail_reason"]
        state = project / "storage" / "checkpoints" / "long_cnn" / str(trial.number)
        assert json.loads((state / "checkpoint.json").read_text())["epoch"] == \
            len(trial.intermediate_values)  # written at the last epoch done
    waiting = [t for t in trials.values() if t.state == State.WAITING]
    assert sorted(t.system_attrs["retry_history"][-1] for t in waiting) == \
        sorted(t.number for t in cut)
    assert not [t for t in trials.values() if t.state == State.RUNNING]
    assert len(trials) < 20


def restart_postgres(down_s: float = 5) -> None:
    """Stop the server, keep it down a few seconds, start it again. A plain restart is so quick
    that workers between two store calls may never see it (a pre-pinged pool reconnects)."""
    versions = sorted(os.listdir("/etc/postgresql"))
    cluster = ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main"]
    subprocess.run([*cluster, "stop"], check=True, timeout=120, capture_output=True)
    try:
        time.sleep(down_s)
    finally:
        subprocess.run([*cluster, "start"], check=True, timeout=120, capture_output=True)


def _sweep_lock_held_within(url: str, study: str, seconds: float) -> bool:
    """Whether some session holds the sweep lock of `study` (a PostgreSQL advisory lock on a
    64-bit key: classid holds its high half, objid its low half) within `seconds`."""
    import hashlib

    import sqlalchemy

    key = int(hashlib.sha256(f"sweep:{study}".encode()).hexdigest()[:15], 16)
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    deadline = time.time() + seconds
    try:
        while time.time() < deadline:
            try:
                with engine.connect() as conn:
                    held = conn.exec_driver_sql(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND classid::bigint = %s AND objid::bigint = %s",
                        (key >> 32, key & 0xFFFFFFFF)).scalar()
                if held:
                    return True
            except sqlalchemy.exc.OperationalError:
                pass  # still starting
            time.sleep(0.5)
        return False
    finally:
        engine.dispose()


def test_sweep_survives_a_database_restart(project):
    if not shutil.which("pg_ctlcluster") or not os.path.isdir("/etc/postgresql") \
            or os.geteuid() != 0:
        pytest.skip("needs the local PostgreSQL cluster and root to restart it (pg_ctlcluster)")
    url, drop = _server_database("postgres")
    try:
        sweep = subprocess.Popen([sys.executable, "-m", "sweeper", "sweep", "long_cnn",
                                  "--trials", "4", "--workers", "2", "--heartbeat", "2",
                                  "--storage", url], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        try:
            wait_for_running(url, "long_cnn", 2, sweep)
            done_before = [t.number for t in load(url, "long_cnn").trials
                           if t.state == State.COMPLETE]
            restart_postgres()
            # The restart ended the session holding the sweep lock: the controller takes it
            # again, so a second sweep started now is still refused.
            assert _sweep_lock_held_within(url, "long_cnn", 20), "sweep lock not taken again"
            second = run_sweeper("sweep", "long_cnn", "--trials", "50", "--workers", "2",
                                 "--storage", url)
            output = sweep.communicate(timeout=400)[0]
        finally:
            if sweep.poll() is None:
                sweep.kill()
        assert second.returncode == 2, second.stdout + second.stderr
        assert "is already being swept by" in second.stderr and f"(pid {sweep.pid} " in \
            second.stderr and len(second.stderr.strip().splitlines()) == 1
        assert sweep.returncode == 0, output
        trials = load(url, "long_cnn").trials
        finished = [t for t in trials if t.state in (State.COMPLETE, State.PRUNED)]
        assert len(finished) == 4, output
        assert not [t for t in trials if t.state in (State.RUNNING, State.WAITING)]
        assert all(trials[n].state == State.COMPLETE for n in done_before)
        logs = "".join(p.read_text() for p in (project / "storage" / "logs").rglob("*.log"))
        assert "store back after" in logs or "store unreachable" in output
    finally:
        drop()
