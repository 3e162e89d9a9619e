"""A slot passes from one worker to the next without a gap and without overlap: the slot lock held
across real processes, and when a worker asks for its successor."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT

from sweeper.worker.handover import (
    SUCCESSOR_GRACE,
    SlotLock,
    give_up_on_successor,
    ready_marker,
    successor_marker,
    successor_wanted,
    time_to_ask,
)

HOLDER = """
import sys, threading, time
from pathlib import Path
from sweeper.worker.handover import SlotLock
slot = SlotLock(Path(sys.argv[1]))
assert slot.take(threading.Event())
print("holding", flush=True)
sys.stdin.readline()  # until told to let go
slot.release()
print("released", time.time(), flush=True)
time.sleep(30)  # the process lives on, winding down: the slot is free already
"""


def test_the_next_worker_takes_the_slot_the_moment_it_is_let_go(tmp_path):
    lock = tmp_path / "slot-0.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "holding"
        successor, taken = SlotLock(lock), []
        waiter = threading.Thread(target=lambda: taken.append((successor.take(threading.Event()),
                                                               time.time())))
        waiter.start()
        time.sleep(0.5)
        assert not taken, "two workers held one slot"
        holder.stdin.write("go\n")
        holder.stdin.flush()
        released = float(holder.stdout.readline().split()[1])
        waiter.join(5)
        assert taken and taken[0][0]
        assert taken[0][1] - released < 0.1  # taken within 0.1 s, though the holder still runs
        assert holder.poll() is None
        successor.release()
    finally:
        holder.kill()
        holder.wait()


def test_a_waiting_worker_asked_to_stop_gives_up_the_wait(tmp_path):
    lock = tmp_path / "slot-0.lock"
    first = SlotLock(lock)
    assert first.take(threading.Event())
    stop = threading.Event()
    stop.set()
    assert not SlotLock(lock).take(stop)
    first.release()


def test_a_request_for_a_successor_is_made_once_and_consumed_once(tmp_path):
    lock = tmp_path / "slot-3.lock"
    slot = SlotLock(lock)
    assert not successor_wanted(lock)
    slot.ask_for_successor()
    slot.ask_for_successor()
    assert successor_marker(lock).exists()
    assert successor_wanted(lock) and not successor_wanted(lock)


@pytest.mark.parametrize("left, pace, startup, memory, cap, expected", [
    (None, 1.0, 5.0, 100, None, False),  # never recycled by count, memory fine
    (24, 3.0, 5.0, 100, None, False),  # far from its replacement
    (5, 3.0, 5.0, 100, None, True),  # 5 trials of 3 s < 2 x 5 s start-up + a trial
    (5, 1.0, 5.0, 100, None, True),  # short trials: ask at once
    (2, None, 5.0, 100, None, False),  # no pace measured yet: only on the very last trial
    (1, None, 5.0, 100, None, True),
    (20, 3.0, 5.0, 7500, 8192, True),  # memory near its cap: the next trial may be its last
    (20, 3.0, 5.0, 7000, 8192, False),
])
def test_when_to_ask_for_a_successor(left, pace, startup, memory, cap, expected):
    assert time_to_ask(left, pace, startup, memory, cap) == expected


def test_a_worker_left_waiting_for_the_last_trials_lends_its_slot_and_takes_it_back(tmp_path):
    """Only the study's last trial runs, elsewhere: the worker waiting for it lets another sweep
    train on its slot, and when that trial is queued again (its worker died), runs it only once
    it has its slot back."""
    import optuna

    from sweeper.storage.rdb import open_storage
    from sweeper.worker.exits import EXIT_DONE
    from sweeper.worker.loop import run_trials
    from sweeper.worker.retries import fail_and_requeue

    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="lend", storage=storage)
    elsewhere = study.ask()  # the budget's one trial, run by another worker
    lock = tmp_path / "gpu-0.slot0.lock"
    slot = SlotLock(lock, study="lend")
    assert slot.take(threading.Event())
    slot_held_in_trials = []

    def objective(trial):
        slot_held_in_trials.append(slot.held)
        return 1.0

    codes = []
    worker = threading.Thread(target=lambda: codes.append(run_trials(study, objective, 1,
                                                                     slot=slot)), daemon=True)
    worker.start()
    other_sweep = SlotLock(lock, study="other")
    deadline = time.monotonic() + 30
    while not other_sweep.lease.try_take() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert other_sweep.held, "the waiting worker kept its slot"
    fail_and_requeue(study, storage, elsewhere._trial_id, "its worker died")
    time.sleep(1.5)  # three looks at the store: the retry is seen, the slot is not free
    assert slot_held_in_trials == [], "a trial ran on a slot another sweep holds"
    other_sweep.release()
    worker.join(30)
    assert codes == [EXIT_DONE]
    assert slot_held_in_trials == [True]
    assert study.trials[-1].state == optuna.trial.TrialState.COMPLETE


@pytest.mark.parametrize("ran, recycle_after, asked_s, startup_s, expected", [
    (5, 5, 30.0, 5.0, False),  # due, but never before twice its trial count
    (10, 5, 19.0, 5.0, False),  # twice its count, but a busy machine may start slowly
    (10, 5, 20.0, 5.0, True),  # SUCCESSOR_GRACE start-ups: the successor probably died
    (30, 5, 19.0, 5.0, False),  # short trials: the bound is time, not trials
])
def test_when_a_worker_gives_up_on_its_successor(ran, recycle_after, asked_s, startup_s, expected):
    assert SUCCESSOR_GRACE == 4
    assert give_up_on_successor(ran, recycle_after, asked_s, startup_s) == expected


def _run_until_recycled(tmp_path, successor_warm: bool, startup_s: float):
    """A worker replaced every 2 trials of ~10 ms runs until it leaves: (its exit code, trials
    run, seconds from asking for its successor to leaving)."""
    import optuna

    from sweeper.storage.rdb import open_storage
    from sweeper.worker.loop import run_trials

    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="due", storage=storage)
    slot = SlotLock(tmp_path / "slot-0.lock", study="due")
    assert slot.take(threading.Event())
    if successor_warm:
        ready_marker(slot.markers).touch()
    ran = []

    def objective(trial):
        ran.append(trial.number)
        time.sleep(0.01)
        return 1.0

    code = run_trials(study, objective, 1000, recycle_after=2, slot=slot, startup_s=startup_s)
    return code, len(ran), slot.successor_asked_s()


def test_a_worker_due_for_replacement_runs_on_until_its_successor_is_warm_within_a_time_bound(
        tmp_path):
    """Short trials (10 ms) against a start-up of 1 s: the successor is asked for at once, and a
    worker whose successor is not warm keeps its slot busy past twice its trial count, until the
    successor has had SUCCESSOR_GRACE start-ups; one whose successor is warm leaves when due."""
    from sweeper.worker.exits import EXIT_RECYCLE

    code, ran, asked_s = _run_until_recycled(tmp_path / "cold", successor_warm=False, startup_s=1.0)
    assert code == EXIT_RECYCLE
    assert ran > 4, "it left its slot idle at twice its trial count, its successor not warm"
    assert asked_s >= SUCCESSOR_GRACE * 1.0

    code, ran, asked_s = _run_until_recycled(tmp_path / "warm", successor_warm=True, startup_s=1.0)
    assert (code, ran) == (EXIT_RECYCLE, 2)
