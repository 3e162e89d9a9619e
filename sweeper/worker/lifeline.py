"""A worker started by a controller stops when that controller is gone, however it went: SIGKILL,
the kernel's out-of-memory killer, a closed login session. Left running, such a worker keeps its GPU
busy with nobody watching it, and a rerun of the sweep would put a second worker on that GPU.

The controller names itself in each worker's environment (SWEEPER_CONTROLLER_PID). When a process
dies, the kernel hands its children to another parent (init, or a subreaper), so the worker's
parent pid changes: a daemon thread checks it every POLL_S, which needs no help from the dying
controller and works whatever killed it. It then asks the worker to stop the way SIGTERM does (the
trial is failed with its reason and queued again), and ends the process if it is still there
EXIT_GRACE_S later; the next sweep closes a trial left RUNNING by a worker that is gone.
A worker started by hand has no SWEEPER_CONTROLLER_PID and watches nothing.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

CONTROLLER_ENV = "SWEEPER_CONTROLLER_PID"
POLL_S = 0.5
EXIT_GRACE_S = 10  # the controller's own stop allows 8 s before SIGKILL; be as patient


def controller_pid(environ=os.environ) -> int | None:
    """The pid of the controller that started this process, if one did."""
    text = environ.get(CONTROLLER_ENV, "")
    return int(text) if text.isascii() and text.isdigit() else None


def controller_gone(environ=os.environ) -> str | None:
    """Why this process must stop, if the controller that started it is gone. The watch looks
    every POLL_S; the worker also asks before each trial, so that a trial ending just after the
    controller died starts no other."""
    pid = controller_pid(environ)
    if pid is None or os.getppid() == pid:
        return None
    return _gone(pid)


def watch_controller(request_stop: Callable[[str], None], exit_code: int,
                     environ=os.environ) -> threading.Thread | None:
    """Starts the watch when a controller started this process; returns its thread, else None."""
    pid = controller_pid(environ)
    if pid is None:
        return None
    thread = threading.Thread(target=_watch, args=(pid, request_stop, exit_code), daemon=True,
                              name="sweeper-lifeline")
    thread.start()
    return thread


def _watch(pid: int, request_stop: Callable[[str], None], exit_code: int) -> None:
    while os.getppid() == pid:
        time.sleep(POLL_S)
    request_stop(_gone(pid))
    time.sleep(EXIT_GRACE_S)
    print(f"{time.strftime('%H:%M:%S')} still here {EXIT_GRACE_S}s after the controller (pid "
          f"{pid}) went; exiting now", flush=True)
    sys.stdout.flush()
    os._exit(exit_code)


def _gone(pid: int) -> str:
    return f"its controller (pid {pid}) is gone"
