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

from sweeper.worker.handover import SlotLock, successor_marker, successor_wanted, time_to_ask

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
