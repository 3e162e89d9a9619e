"""A controller killed outright (SIGKILL, as the out-of-memory killer or a lost login session does)
takes its workers with it, the same command run again never has two trials on one GPU slot, and
what the crash cut short runs again without costing the budget a slot."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict

import optuna
import psutil
import pytest
from conftest import _server_database, load, run_sweeper, wait_for_running

from sweeper.storage.counts import count_trials
from sweeper.storage.rdb import open_storage

pytestmark = pytest.mark.slow
State = optuna.trial.TrialState


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, project):
    if request.param == "sqlite":
        yield f"sqlite:///{project / 'storage' / 'long_cnn.db'}"
        return
    url, drop = _server_database("postgres")
    yield url
    drop()


def _alive(process: psutil.Process) -> bool:
    """Running, and not a zombie waiting to be reaped by whoever inherited it."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _overlaps(trials) -> list[str]:
    """Pairs of trials that ran at the same time on the same GPU slot of the same machine,
    judged from each trial's recorded slot and its start and end times."""
    by_slot = defaultdict(list)
    for t in trials:
        if t.datetime_start is not None and t.user_attrs.get("sweeper.cuda_visible_devices"):
            slot = (t.user_attrs["sweeper.host"], t.user_attrs["sweeper.cuda_visible_devices"])
            by_slot[slot].append(t)
    found = []
    for slot, runs in by_slot.items():
        runs.sort(key=lambda t: t.datetime_start)
        for before, after in zip(runs, runs[1:]):
            if before.datetime_complete is None or after.datetime_start < before.datetime_complete:
                found.append(f"GPU {slot[1]}: trial {before.number} ({before.datetime_start} - "
                             f"{before.datetime_complete}) and trial {after.number} (from "
                             f"{after.datetime_start})")
    return found


def test_workers_stop_with_a_killed_controller_and_a_rerun_never_doubles_a_slot(store):
    env = {**os.environ, "SWEEPER_STORAGE": store}
    command = [sys.executable, "-m", "sweeper", "sweep", "long_cnn", "--trials", "3", "--gpus",
               "0,1"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    rerun = None
    try:
        cut_short = wait_for_running(store, "long_cnn", 2, first)  # one per GPU, mid-training
        workers = psutil.Process(first.pid).children()
        assert len(workers) == 2
        first.send_signal(signal.SIGKILL)  # the controller's pid only, not its process group
        first.wait()
        killed = time.time()
        # The same command, at once: the old workers may still be leaving.
        rerun = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        while (alive := [p.pid for p in workers if _alive(p)]) and time.time() - killed < 10:
            time.sleep(0.2)
        assert not alive, f"workers {alive} outlived their controller by 10 s"
        output, _ = rerun.communicate(timeout=400)
    finally:
        for sweep in (first, rerun):
            if sweep is not None and sweep.poll() is None:
                sweep.kill()
    assert rerun.returncode == 0, output

    trials = load(store, "long_cnn").trials
    assert not _overlaps(trials), _overlaps(trials)
    cut = 0
    for trial in cut_short:  # failed with the reason, and run again
        failed = trials[trial.number]
        if failed.state == State.COMPLETE:
            continue  # its training had ended when the stop came: it finished instead
        cut += 1
        assert failed.state == State.FAIL
        assert failed.user_attrs["sweeper.fail_reason"] == (
            f"interrupted: its controller (pid {first.pid}) is gone; queued to run again")
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == trial.number]
        assert len(retries) == 1 and retries[0].state == State.COMPLETE
        assert retries[0].params == failed.params
    assert cut, "the controller was killed while both trials trained; neither was cut"
    storage = open_storage(store, create=False)
    counts = count_trials(storage, storage.get_study_id_from_name("long_cnn"))
    assert (counts.finished, counts.running, counts.waiting) == (3, 0, 0)
    assert counts.complete == 3  # long_cnn never prunes: the retries and the new trials
    # Each worker of the first run said why it stopped, closed its trial and left cleanly.
    logs = os.path.join("storage", "logs", "long_cnn")
    said = "".join(open(os.path.join(logs, name)).read() for name in os.listdir(logs))
    why = rf"its controller \(pid {first.pid}\) is gone"
    assert len(re.findall(rf"stopping: {why}", said)) == 2, said[-3000:]
    assert len(re.findall(rf"stopped \({why}\)", said)) == 2, said[-3000:]


def test_a_retry_a_full_disk_kept_from_being_queued_runs_on_the_next_sweep(project):
    """The disk fills between failing a cut-short trial and queueing its retry: the trial keeps
    its one budget slot, and the next sweep runs it again."""
    from sqlalchemy import event

    from sweeper.space import load_space
    from sweeper.worker.retries import fail_and_requeue

    url = f"sqlite:///{project / 'storage' / 'tiny_cnn.db'}"
    first = run_sweeper("sweep", "tiny_cnn", "--trials", "2", "--workers", "1")
    assert first.returncode == 0, first.stderr
    storage = open_storage(url, heartbeat_s=None, create=False)
    study = optuna.load_study(study_name="tiny_cnn", storage=storage)
    # A trial a worker of this machine was running when the store's disk filled up.
    trial = study.ask()
    params = load_space("tiny_cnn").suggest(trial)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    storage.set_trial_user_attr(trial._trial_id, "sweeper.host", socket.gethostname())
    storage.set_trial_user_attr(trial._trial_id, "sweeper.pid", int(dead.stdout))

    def disk_full_at_the_retry(conn, cursor, statement, parameters, context, executemany):
        if re.match(r"INSERT INTO trials\b", statement.strip()):
            raise sqlite3.OperationalError("database or disk is full")

    event.listen(storage.engine, "before_cursor_execute", disk_full_at_the_retry)
    with pytest.raises(Exception, match="commit|disk is full"):
        fail_and_requeue(study, storage, trial._trial_id, "interrupted: the store could not be "
                         "written")
    event.remove(storage.engine, "before_cursor_execute", disk_full_at_the_retry)
    assert storage.get_trial(trial._trial_id).state == State.FAIL
    storage.engine.dispose()

    second = run_sweeper("sweep", "tiny_cnn", "--trials", "3", "--workers", "1")
    assert second.returncode == 0, second.stdout + second.stderr
    trials = load(url, "tiny_cnn").trials
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == trial.number]
    assert len(retries) == 1 and retries[0].params == params
    assert retries[0].state in (State.COMPLETE, State.PRUNED)
    finished = [t for t in trials if t.state in (State.COMPLETE, State.PRUNED)]
    assert len(finished) == 3  # two from the first sweep, and the one the disk cut short
