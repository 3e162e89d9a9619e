"""The worker processes of one sweep on this machine: one per slot, each pinned to its GPU.

A worker is a plain `sweeper worker` process with CUDA_VISIBLE_DEVICES set in its environment
before TensorFlow loads, so it sees its own GPU only; the store URL travels in the environment too
(`ps` would show a password on the command line). The pool starts a worker where a slot is idle and
work is left, replaces one that asks for it (recycling) or dies, stops the sweep when one keeps
crashing or reports a user error, warns all of them before a time limit, and stops them in order.

A worker close to its replacement asks for its successor, which the pool starts at once: it warms
up beside the current worker and takes the slot the moment it is free (sweeper.worker.handover), so a
replacement leaves no idle gap, and a crash of the current worker none either when a successor is
already warm.

The pool knows processes, not trials: when a worker dies, `close_trials` (the controller's) fails
and requeues what it was running. Processes come from `spawn` (subprocess.Popen), which the tests
replace with fakes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sweeper.errors import SweeperError, SweepFailed
from sweeper.gpus import GPU_FRACTION_ENV, GPU_MEMORY_ENV, Slot
from sweeper.leases import holders, is_held
from sweeper.storage.url import STORAGE_ENV
from sweeper.worker.exits import EXIT_DONE, EXIT_RECYCLE
from sweeper.worker.handover import (
    SLOT_HOLDER_ENV,
    SLOT_LOCK_ENV,
    SLOT_MARKERS_ENV,
    clear_markers,
    lock_path,
    successor_marker,
    successor_wanted,
)
from sweeper.worker.lifeline import CONTROLLER_ENV

STOP_GRACE_S = 8  # SIGTERM, then SIGKILL after this: all workers are gone within 10 s
CRASH_LIMIT = 3  # crashes of one slot within CRASH_WINDOW_S stop the sweep
CRASH_WINDOW_S = 600
USER_ERROR_EXIT = 2  # the worker met bad data or model code: restarting cannot help


@dataclass
class Worker:
    slot: Slot
    markers: Path  # this sweep's own file of the slot, beside the logs (sweeper.worker.handover)
    process: subprocess.Popen | None = None  # the worker of the slot
    successor: subprocess.Popen | None = None  # the next one, warming up or waiting
    log_path: Path | None = None
    crashes: list[float] = field(default_factory=list)
    done: bool = False  # left because no work was left for it
    waiting: str | None = None  # why the slot has no worker: another sweep holds its GPU

    @property
    def lock(self) -> Path:
        """The slot: only the worker holding it trains. A GPU slot's host-wide lease, else this
        sweep's own file."""
        return self.slot.lease or self.markers


class WorkerPool:
    def __init__(self, slots: list[Slot], command: list[str], env: dict[str, str],
                 log_dir: Path, close_trials: Callable[[list[int], str], None],
                 say: Callable[[str], None], spawn=subprocess.Popen, clock=time.time,
                 holder: str = ""):
        """`command` starts one worker (the same for every slot); `env` is the environment
        every worker gets, before its slot's own variables; `holder` ("study packing") what
        its leases say of it."""
        self.workers = [Worker(slot, lock_path(log_dir, slot.worker_id, os.getpid()))
                        for slot in slots]
        for worker in self.workers:
            clear_markers(worker.markers)
        self.holder = holder
        self.command = command
        self.env = env
        self.log_dir = log_dir
        self.close_trials = close_trials
        self.say = say
        self.spawn = spawn
        self.clock = clock

    def alive(self) -> list[Worker]:
        """Slots with a process (running, or exited and not yet judged)."""
        return [w for w in self.workers if w.process is not None or w.successor is not None]

    def _running(self) -> list[subprocess.Popen]:
        processes = [p for w in self.workers for p in (w.process, w.successor) if p is not None]
        return [p for p in processes if p.poll() is None]

    def tend(self, accepting: bool, work_left: bool) -> None:
        """Judges the workers that exited; a warm successor takes its slot. While the sweep
        accepts new trials, starts a worker in every idle slot (unless it left for lack of work
        and none is left: a retry queued since counts as work) and the successors asked for."""
        for worker in self.workers:
            if worker.process is not None and (code := worker.process.poll()) is not None:
                self._exited(worker, worker.process.pid, code)
                worker.process = None
            if worker.successor is not None and (code := worker.successor.poll()) is not None:
                self._exited(worker, worker.successor.pid, code)
                worker.successor = None
            if worker.process is None and worker.successor is not None:
                worker.process, worker.successor = worker.successor, None
                worker.done = False
            if not accepting:
                continue
            if worker.process is None:
                if work_left or not worker.done:
                    # Started even where another sweep holds the GPU: it warms up (imports,
                    # store, data; not the GPU) and takes the slot the moment it is free.
                    self._note_waiting(worker)
                    successor_marker(worker.markers).unlink(missing_ok=True)  # an old request
                    worker.process = self._start(worker)
            elif worker.waiting is not None:
                self._note_waiting(worker)
            elif worker.successor is None and work_left and successor_wanted(worker.markers):
                worker.successor = self._start(worker)

    def _note_waiting(self, worker: Worker) -> None:
        """Says when the slot's GPU is held by another sweep (its worker then waits warm for
        it), and when it is free again."""
        lease = worker.slot.lease
        if lease is None:
            return
        current = holders(lease)  # read once: it lists the lease folder and locks the file
        others = [h for h in current if h.pid not in self._pids()]
        held = bool(others) or (not current and worker.process is None and is_held(lease))
        if held and worker.waiting is None:
            worker.waiting = "; ".join(h.describe() for h in others) or "held"
            self.say(f"slot {worker.slot.worker_id} waits for GPU "
                     f"{worker.slot.cuda_visible_devices}: held by {worker.waiting}")
        elif not held and worker.waiting is not None:
            self.say(f"slot {worker.slot.worker_id} takes GPU {worker.slot.cuda_visible_devices}"
                     ", now free")
            worker.waiting = None

    def _pids(self) -> set[int]:
        return {p.pid for w in self.workers for p in (w.process, w.successor) if p is not None}

    def drain(self) -> None:
        """Slurm's warning before the time limit: workers checkpoint their trial and leave."""
        for process in self._running():
            process.send_signal(signal.SIGUSR1)

    def stop(self, wait_first: bool = False) -> None:
        """SIGTERM every worker (each fails its trial and queues it again), SIGKILL stragglers,
        then close any trial a killed worker left RUNNING. With wait_first, give workers that
        are leaving anyway (the sweep is over) the grace period first."""
        if wait_first:
            self._wait(self._running(), STOP_GRACE_S)
        running = self._running()
        for process in running:
            process.send_signal(signal.SIGTERM)
        killed = []
        for process in self._wait(running, STOP_GRACE_S):
            process.kill()
            process.wait()
            killed.append(process.pid)
        for worker in self.workers:
            worker.process = worker.successor = None
            clear_markers(worker.markers)
        if killed:
            self.close_trials(killed, "interrupted: the worker was killed")

    def _wait(self, processes: list[subprocess.Popen], seconds: float) -> list[subprocess.Popen]:
        """Waits until they exit or `seconds` pass; returns those still running."""
        deadline = self.clock() + seconds
        left = []
        for process in processes:
            try:
                process.wait(timeout=max(0.0, deadline - self.clock()))
            except subprocess.TimeoutExpired:
                left.append(process)
        return left

    def _exited(self, worker: Worker, pid: int, code: int) -> None:
        if code == EXIT_DONE:
            worker.done = True
        elif code != EXIT_RECYCLE:
            # Its trial would stay RUNNING until its heartbeat goes stale: close it now.
            self.close_trials([pid], f"the worker died (exit code {code})")
            self._crashed(worker, code)

    def _crashed(self, worker: Worker, code: int) -> None:
        last = last_line(worker.log_path)
        if code == USER_ERROR_EXIT:
            raise SweeperError(f"worker {worker.slot.worker_id} stopped: "
                               f"{last.removeprefix('sweeper: error: ')}")
        now = self.clock()
        worker.crashes = [t for t in worker.crashes if now - t < CRASH_WINDOW_S] + [now]
        self.say(f"worker {worker.slot.worker_id} exited with code {code}: {last}; restarting")
        if len(worker.crashes) >= CRASH_LIMIT:
            raise SweepFailed(
                f"worker {worker.slot.worker_id} crashed {len(worker.crashes)} times in "
                f"{CRASH_WINDOW_S // 60} minutes; last: {last} (see {worker.log_path})")

    def _start(self, worker: Worker) -> subprocess.Popen:
        slot = worker.slot
        env = {**self.env,
               "CUDA_VISIBLE_DEVICES": slot.cuda_visible_devices,  # set before TF is imported
               "SWEEPER_WORKER_ID": str(slot.worker_id),
               SLOT_LOCK_ENV: str(worker.lock), SLOT_MARKERS_ENV: str(worker.markers),
               SLOT_HOLDER_ENV: self.holder}
        if slot.memory_mb:  # a worker packed with others on its GPU: its share of the memory
            env[GPU_MEMORY_ENV] = str(slot.memory_mb)
        if slot.memory_fraction:  # the same share, for JAX and PyTorch (sweeper.pipeline.backend)
            env[GPU_FRACTION_ENV] = str(slot.memory_fraction)
        worker.log_path = self.log_dir / f"worker-{slot.worker_id}.log"
        worker.done = False
        with open(worker.log_path, "ab") as log_file:
            # Own process group: the terminal's Ctrl-C reaches the controller, which stops
            # workers in order instead of all at once mid-write.
            return self.spawn(self.command, env=env, stdout=log_file,
                              stderr=subprocess.STDOUT, start_new_session=True)


def worker_command(study_name: str, heartbeat_s: int, recycle_after: int, threads: int,
                   max_memory_mb: float | None, deadline: float | None) -> list[str]:
    command = [sys.executable, "-m", "sweeper", "worker", "--study", study_name,
               "--heartbeat", str(heartbeat_s), "--recycle-after", str(recycle_after),
               "--threads", str(threads)]
    if max_memory_mb:
        command += ["--max-memory-mb", str(int(max_memory_mb))]
    if deadline is not None:
        command += ["--deadline", f"{deadline:.0f}"]
    return command


def worker_env(storage_url: str, extra: dict[str, str]) -> dict[str, str]:
    """The environment every worker of this controller gets."""
    return {**os.environ,
            STORAGE_ENV: storage_url,  # not in argv, where `ps` would show a password
            "PYTHONUNBUFFERED": "1",
            CONTROLLER_ENV: str(os.getpid()),  # the worker stops if this process goes
            **extra}


def last_line(path: Path | None) -> str:
    if path is None or not path.exists():
        return "no log"
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else "no output"
