"""Worker processes on this machine, found in the process table.

A sweep whose controller was killed outright leaves its workers behind for a moment: they notice
within a second that their controller is gone and stop on their own (sweeper.worker.lifeline), but until
then they hold their GPUs. A sweep started here must not put a second worker on those GPUs, so it
first waits for such leftover workers to leave, at most LEFTOVER_WAIT_S, and otherwise refuses in
one line naming their pids. Waiting is what a user expects: those workers are already on their way
out, and a rerun right after a crash should just work. Leftovers of any study count (a rerun with
--new-study uses the same GPUs). Workers whose controller is alive (a `--join` sweep here) or that
were started by hand are deliberate and left alone; workers on other machines never show up here.

It also tells whether the worker process that ran a trial here is gone, so that a sweep closes a
trial such a worker left RUNNING at once instead of three heartbeats later.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from sweeper import keys
from sweeper.errors import SweeperError
from sweeper.worker.lifeline import controller_pid

LEFTOVER_WAIT_S = 30  # a leftover worker leaves within ~1 s + a batch, at worst 10 s (lifeline)
POLL_S = 0.2


@dataclass(frozen=True)
class HostWorker:
    pid: int
    study: str
    parent_pid: int
    controller_pid: int | None  # the controller that started it; None when started by hand

    @property
    def orphaned(self) -> bool:
        """Started by a controller that is gone (the kernel gave it another parent)."""
        return self.controller_pid is not None and self.parent_pid != self.controller_pid


def host_workers() -> list[HostWorker]:
    """Live `sweeper worker` processes of this user on this machine."""
    found = []
    for proc in psutil.process_iter(["pid", "ppid", "cmdline"]):
        try:
            study = _worker_study(proc.info["cmdline"] or [])
            if study is None or proc.pid == os.getpid():
                continue
            found.append(HostWorker(proc.pid, study, proc.info["ppid"],
                                    controller_pid(proc.environ())))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # gone meanwhile, or another user's process
    return found


def wait_for_leftovers(say: Callable[[str], None], wait_s: float = LEFTOVER_WAIT_S) -> None:
    """Waits until no worker whose controller is gone is alive here; refuses in one line naming
    them if some are still there after `wait_s`."""
    leftovers = [w for w in host_workers() if w.orphaned]
    if not leftovers:
        return
    studies = ", ".join(sorted({f"'{w.study}'" for w in leftovers}))
    pids = " ".join(str(w.pid) for w in leftovers)
    say(f"waiting for {len(leftovers)} worker(s) of an earlier sweep of {studies} to stop "
        f"(pid {pids}): their controller is gone")
    processes = []
    for worker in leftovers:
        try:
            processes.append(psutil.Process(worker.pid))
        except psutil.NoSuchProcess:
            pass
    # Polled: they are not our children, and one that exits may stay a zombie a while.
    deadline = time.time() + wait_s
    while (alive := [p for p in processes if _running(p)]) and time.time() < deadline:
        time.sleep(POLL_S)
    if alive:
        pids = " ".join(str(p.pid) for p in alive)
        raise SweeperError(
            f"workers of an earlier sweep of {studies} are still running on this machine "
            f"(pid {pids}) {wait_s:.0f}s after their controller went, and would share their GPUs "
            f"with new ones; stop them (kill -9 {pids}) and run the same command again")


def ran_here_and_gone(trial) -> bool:
    """Whether `trial` (a FrozenTrial) was run by a worker process of this machine that no longer
    exists (a pid reused by a newer process counts as gone)."""
    if trial.user_attrs.get(keys.HOST) != socket.gethostname():
        return False
    pid = trial.user_attrs.get(keys.PID)
    if not isinstance(pid, int):
        return False
    try:
        process = psutil.Process(pid)
        if not _running(process):
            return True
        started = trial.datetime_start
        # The worker started before its trial; a process that started after it is someone else.
        return started is not None and process.create_time() > started.timestamp() + 1
    except psutil.NoSuchProcess:
        return True


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _worker_study(args: list[str]) -> str | None:
    """The --study of a `sweeper worker` command line (`python -m sweeper worker ...` or the
    `sweeper` script), else None."""
    for i, arg in enumerate(args[1:], start=1):
        if arg == "worker" and (args[i - 1] == "sweeper" or args[i - 1].endswith("/sweeper")):
            return _option(args[i + 1:], "--study")
    return None


def _option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
    return None
