"""Where a trial's time went: seconds per named stage, added up (stored as sweeper.seconds)."""

from __future__ import annotations

import contextlib
import time


class Stopwatch:
    def __init__(self, *stages: str) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(stages, 0.0)

    @contextlib.contextmanager
    def stage(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
