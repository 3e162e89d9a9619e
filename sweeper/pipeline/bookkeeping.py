"""What a finished trial writes besides its measures (its artifacts: the confusion matrix, the
per-class table, the model file), written in the background while the worker's next trial trains.

Design rules:
- The slot never waits for it. A job handed over at a trial's end is held until the next trial's
  first training step has run (its train step traced: from then on TensorFlow mostly runs outside
  Python's lock), or START_AFTER_S after it was handed over when no trial trains by then (the
  budget is spent, the next trial failed early). Started at once, it would compete for Python's
  lock with the next trial's start, which the slot does wait for.
- Nothing told to the store depends on it: a trial's measures and state are written before, in
  line. A job writes its files first and their entries after, so a worker killed midway leaves at
  most a file no trial links to.
- Keras's session is never cleared while a job runs (clearing resets Keras's state in every
  thread): `quiet()` waits for the running job and holds new ones back.
- The worker leaves only once every job has run (`drain`).
- A failed job costs its trial the artifacts, said in one line, never the worker.
- A job that held a model (its file is written) frees it when done: the collection after its
  trial could not (sweeper.worker.loop).
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

START_AFTER_S = 5.0


@dataclass
class _Job:
    run: Callable[[], None]
    name: str
    holds_objects: bool
    start_by: float
    released: bool = False


class Bookkeeper:
    """One background thread running handed-over jobs one at a time, in order."""

    def __init__(self, start_after_s: float = START_AFTER_S, say: Callable[[str], None] = print):
        self.start_after_s = start_after_s
        self.say = say
        self._jobs: list[_Job] = []  # waiting or running, oldest first
        self._busy = False  # a job (or the collection after it) runs
        self._paused = 0
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def hand_over(self, run: Callable[[], None], name: str, holds_objects: bool = False) -> None:
        """Queues `run`. `holds_objects`: it keeps objects with reference cycles (a Keras model)
        alive until it has run (see `holds_objects`)."""
        with self._changed:
            self._jobs.append(_Job(run, name, holds_objects, time.monotonic() + self.start_after_s))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="sweeper-bookkeeping",
                                                daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def start(self) -> None:
        """Lets every job handed over so far run: the slot no longer waits."""
        with self._changed:
            for job in self._jobs:
                job.released = True
            self._changed.notify_all()

    @property
    def pending(self) -> int:
        with self._changed:
            return len(self._jobs)

    @property
    def holds_objects(self) -> bool:
        """Whether a job not yet run keeps objects with reference cycles alive: freezing the
        collector's view now (gc.freeze) would keep them for good."""
        with self._changed:
            return any(job.holds_objects for job in self._jobs)

    @contextlib.contextmanager
    def quiet(self):
        """Inside, no job runs: the one running is waited for, the others wait."""
        with self._changed:
            self._paused += 1
            self._changed.wait_for(lambda: not self._busy)
        try:
            yield
        finally:
            with self._changed:
                self._paused -= 1
                self._changed.notify_all()

    def drain(self) -> None:
        """Runs every job now and returns once all have run."""
        self.start()
        with self._changed:
            self._changed.wait_for(lambda: not self._jobs)

    def _next_job(self) -> _Job:
        with self._changed:
            while True:
                if self._jobs and not self._paused:
                    job = self._jobs[0]
                    wait = 0.0 if job.released else job.start_by - time.monotonic()
                    if wait <= 0:
                        self._busy = True
                        return job
                    self._changed.wait(wait)
                else:
                    self._changed.wait()

    def _work(self) -> None:
        while True:
            job = self._next_job()
            try:
                job.run()
            except Exception as e:  # the trial keeps its measures; only these files are lost
                self.say(f"{job.name}: not written ({type(e).__name__}: {e})")
            with self._changed:
                self._jobs.remove(job)
            held = job.holds_objects
            del job  # what it held is freed now
            if held:
                # Its objects could not be frozen after their trial (see `holds_objects`):
                # freed here, while a trial trains, the collection after the next trial finds
                # only that trial's.
                gc.collect()
            with self._changed:
                self._busy = False
                self._changed.notify_all()
