"""Zero-gap replacement with the real command: a worker close to its replacement has its successor
warm up beside it, and the successor takes the slot the moment the worker lets go. Never two
trials on one slot, and no idle gap at a replacement the successor was warm for."""

from __future__ import annotations

import itertools
import re

import optuna
import pytest
from conftest import load, run_sweeper

from sweeper.results.occupancy import runs_of, slot_use

pytestmark = pytest.mark.slow


def test_a_warm_successor_takes_the_slot_without_a_gap_or_an_overlap(project):
    done = run_sweeper("sweep", "handover_cnn", "--trials", "7", "--workers", "1",
                       "--recycle-after", "3", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    trials = load(f"sqlite:///{project / 'storage' / 'handover_cnn.db'}", "handover_cnn").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 7
    pids = [t.user_attrs["sweeper.pid"] for t in trials]
    # Replaced once its 3 trials are done, never earlier; later only while its successor is not
    # warm yet (a busy machine starts processes slowly), which tests/test_handover.py bounds.
    per_worker = [len(list(run)) for _, run in itertools.groupby(pids)]
    assert len(per_worker) == len(set(pids)) >= 2, pids  # each worker ran once, in one stretch
    assert all(n >= 3 for n in per_worker[:-1]), per_worker

    runs = sorted(runs_of(trials, now=0.0), key=lambda r: r.start)
    for before, after in zip(runs, runs[1:]):
        assert after.start >= before.end, f"two trials overlap on one slot: {before} {after}"
    use, = slot_use(runs)
    log = (project / "storage" / "logs" / "handover_cnn" / "worker-0.log").read_text()
    assert log.count("asking for the next worker of this slot to warm up") >= 1
    warm = len(re.findall(r"took its slot after waiting", log))
    assert warm >= 1, log[-3000:]  # a worker waits for its successor to be warm, so one was
    # Every successor that was warm took over at once: as many gaps as warm takeovers are short
    # (a cold start takes seconds: TensorFlow's import alone). A successor warm only once the
    # budget was taken runs no trial, and leaves no gap to measure.
    idle = log.count("done after 0 trials")
    assert sum(gap < 1.0 for gap in use.replacement_gaps) >= warm - idle, use.replacement_gaps
    assert "slots over this run's" in done.stdout and "at replacements" in done.stdout
