"""Two controllers, one study: a second `sweeper sweep` is refused, naming the running one, unless
it asks to --join; either way the study ends with exactly its budget."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
from conftest import load, run_sweeper, wait_for_running

from sweeper.storage.counts import count_trials
from sweeper.storage.rdb import open_storage

pytestmark = pytest.mark.slow


def test_a_second_sweep_is_refused_unless_it_joins(project):
    url = f"sqlite:///{project / 'storage' / 'long_cnn.db'}"
    first = subprocess.Popen(
        [sys.executable, "-m", "sweeper", "sweep", "long_cnn", "--trials", "3", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    joined = None
    try:
        wait_for_running(url, "long_cnn", 2, first)
        second = run_sweeper("sweep", "long_cnn", "--trials", "50", "--workers", "2")
        running = load(url, "long_cnn").get_trials(states=(optuna.trial.TrialState.RUNNING,))
        # Asked to, a second sweep joins: its workers share the study's budget of 3.
        joined = subprocess.Popen(
            [sys.executable, "-m", "sweeper", "sweep", "long_cnn", "--trials", "50", "--workers",
             "1", "--join"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output, _ = first.communicate(timeout=400)
        joined_output, _ = joined.communicate(timeout=400)
    finally:
        for sweep in (first, joined):
            if sweep is not None and sweep.poll() is None:
                sweep.kill()

    assert second.returncode == 2, second.stdout + second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert "study 'long_cnn'" in lines[0] and "is already being swept by 'sweeper sweep " \
        "long_cnn --trials 3 --workers 2'" in lines[0] and f"(pid {first.pid} on " in lines[0]
    assert "--join" in lines[0]
    assert "50" not in second.stdout  # it wrote nothing: no study line, no workers
    assert {str(t.user_attrs["sweeper.worker"]) for t in running} <= {"0", "1"}

    assert first.returncode == 0, output
    assert joined.returncode == 0, joined_output
    assert "of 3 trials already done" in joined_output
    study = load(url, "long_cnn")
    assert study.user_attrs["sweeper.n_trials"] == 3, "the refused sweep changed the budget"
    storage = open_storage(url, create=False)
    counts = count_trials(storage, study._study_id)
    assert counts.finished == 3 and counts.running == 0 and counts.waiting == 0

    # Once the first has ended, the same study may be swept again.
    again = run_sweeper("sweep", "long_cnn", "--trials", "3", "--workers", "1")
    assert again.returncode == 0, again.stderr
    assert "3 of 3 trials already done" in again.stdout
