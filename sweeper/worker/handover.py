"""A slot passes from one worker process to the next without an idle gap and without overlap.

A worker is replaced every N trials (TensorFlow keeps memory across trials), past its memory cap,
or after a crash. A fresh process needs seconds before it can train (TensorFlow's import, the
store, the data, the backend); on a fast GPU that would leave the slot idle for several trials'
worth of time at every replacement. So the next worker is started early and warms up while the
current one trains, then waits. It takes the slot the moment the current one lets go.

- The slot is a file lock (flock): a worker trains only while it holds it, so two workers never
  train on one slot, whatever the controller does; the kernel drops it if the holder dies. The
  waiting worker takes it within POLL_S of its release. A GPU slot's lock is its host-wide lease
  (sweeper.leases), which every sweep and user of the machine respects; a CPU slot's lives beside
  the logs. The markers below always live beside the logs: they are this sweep's own.
- The current worker asks for its successor by creating a marker file when it is close enough to
  its replacement: when its remaining trials would take less than twice its own start-up time (the
  pace of the study's last trials tells it before its own first one), or its memory is near its
  cap. The controller's pool starts the successor when it sees the marker. So a short sweep, which
  never reaches a replacement, starts no extra process.
- A worker left only waiting for its study's last trials, run by other workers, lends its slot
  meanwhile: another sweep's worker may train there. It takes the slot back, waiting as long as
  that takes, if a trial is queued again (a dead worker's, say).
- A warm successor says so with another marker. A worker due for replacement whose successor is
  not warm yet runs another trial instead of leaving its slot idle. A start-up is slower on a busy
  machine (twice as slow, measured, while two workers train on two cores), and short trials make
  a worker due within seconds, so the wait is bounded in time, not in trials: the worker leaves
  anyway once it has run twice its trial count and its successor has had SUCCESSOR_GRACE of this
  worker's own start-ups to warm up (it probably died starting). Past its memory cap it leaves at
  once.
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

from sweeper.leases import Lease, holders

SLOT_LOCK_ENV = "SWEEPER_SLOT_LOCK"
SLOT_MARKERS_ENV = "SWEEPER_SLOT_MARKERS"  # where the markers live, when not beside the lock
SLOT_HOLDER_ENV = "SWEEPER_SLOT_HOLDER"  # "study packing": what a lease's holder file says
POLL_S = 0.01  # how soon a waiting successor notices the slot is free
MEMORY_WARNING = 0.9  # of the memory cap: past it, the next trial may well be the last
SUCCESSOR_GRACE = 4  # start-ups a successor may take to warm up before it is given up on


def lock_path(folder: Path, worker_id: int, owner: int) -> Path:
    """A slot of one controller (`owner`, its pid): the controllers of a Slurm array on one node
    share a log folder and each numbers its slots from 0, on GPUs of their own."""
    return folder / f"slot-{worker_id}.{owner}.lock"


def successor_marker(lock: Path) -> Path:
    return Path(f"{lock}.next")


def ready_marker(lock: Path) -> Path:
    return Path(f"{lock}.ready")


def clear_markers(markers: Path) -> None:
    """The slot's markers and its own lock file, once no worker uses them (or left by an earlier
    run). A host-wide lease is never removed: another sweep may be waiting on it."""
    for path in (successor_marker(markers), ready_marker(markers), markers):
        path.unlink(missing_ok=True)


def successor_wanted(lock: Path) -> bool:
    """Whether the slot's worker asked for its successor (the marker is consumed)."""
    marker = successor_marker(lock)
    try:
        marker.unlink()
        return True
    except FileNotFoundError:
        return False


class SlotLock:
    """This worker's hold on its slot: `path` is the lock (a host-wide lease for a GPU slot),
    `markers` where this sweep's markers of the slot live."""

    def __init__(self, path: Path, markers: Path | None = None, study: str = "",
                 packing: int = 1):
        self.path, self.markers = path, markers or path
        self.lease = Lease(path, study, packing)
        self.asked_at: float | None = None  # when the successor was asked for (monotonic)

    @classmethod
    def from_env(cls, environ=os.environ) -> SlotLock | None:
        path = environ.get(SLOT_LOCK_ENV)
        if not path:
            return None
        study, _, packing = environ.get(SLOT_HOLDER_ENV, "").partition(" ")
        markers = environ.get(SLOT_MARKERS_ENV)
        return cls(Path(path), Path(markers) if markers else None, study, int(packing or 1))

    def take(self, stop: threading.Event) -> bool:
        """Waits for the slot, saying that it is warm; False if asked to stop first."""
        if not self.lease.try_take():
            ready_marker(self.markers).touch()
            if not self.take_back(stop):
                return False
        ready_marker(self.markers).unlink(missing_ok=True)
        return True

    def take_back(self, stop: threading.Event) -> bool:
        """Waits for the slot this worker lent (see TrialLoop), or, within `take`, for its
        predecessor's; False if asked to stop first. Says nothing by itself (no marker)."""
        while not self.lease.try_take():
            if stop.wait(POLL_S):
                return False
        return True

    @property
    def held(self) -> bool:
        return self.lease.held

    def held_by_another_study(self, study: str) -> bool:
        """Whether a worker of another study holds the slot now (its own sweep's worker before
        it holds it at a handover)."""
        return any(holder.study != study for holder in holders(self.path))

    def successor_ready(self) -> bool:
        return ready_marker(self.markers).exists()

    def release(self) -> None:
        self.lease.release()  # the successor, or another sweep's worker, trains now

    @property
    def asked(self) -> bool:
        return self.asked_at is not None

    def successor_asked_s(self) -> float:
        """Seconds since the successor was asked for (0 if it was not)."""
        return 0.0 if self.asked_at is None else time.monotonic() - self.asked_at

    def ask_for_successor(self) -> None:
        if self.asked_at is None:
            successor_marker(self.markers).touch()
            self.asked_at = time.monotonic()


def time_to_ask(trials_left: int | None, trial_s: float | None, startup_s: float,
                memory_mb: float, max_memory_mb: float | None) -> bool:
    """Whether the successor should start warming up now: the trials left before replacement
    take less than twice a start-up (a start-up under load is slower than ours was), or memory
    is near its cap. Without a measured trial yet, only if the trials left are very few."""
    if max_memory_mb and memory_mb >= MEMORY_WARNING * max_memory_mb:
        return True
    if trials_left is None:
        return False
    if trial_s is None:
        return trials_left <= 1
    return trials_left <= math.ceil(2 * startup_s / max(trial_s, 0.01)) + 1


def give_up_on_successor(ran: int, recycle_after: int, asked_s: float, startup_s: float) -> bool:
    """Whether a worker due for replacement leaves although its successor is not warm yet: only
    once it has run twice its trial count and the successor has had SUCCESSOR_GRACE of this
    worker's start-ups (`startup_s`) since it was asked for (`asked_s`)."""
    return ran >= 2 * recycle_after and asked_s >= SUCCESSOR_GRACE * startup_s
