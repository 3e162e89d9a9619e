"""How busy each worker slot was: the share of a window of time during which a trial was RUNNING
on it, and the idle gaps between its trials.

A slot's idle time is its GPU's idle time, so this measures what a GPU would feel even where there
is none. Gaps are told apart: between two trials of one worker process (the cost of a trial's
start and end), and at a worker's replacement (recycling, a crash), where the next trial ran in
another process. Everything is read from the trials themselves (their slot, process, start and end).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from sweeper import keys
from sweeper.trials import epochs_reached, ran_here


@dataclass(frozen=True)
class Run:
    """One trial on one slot."""

    slot: str
    pid: object
    start: float
    end: float


@dataclass
class SlotUse:
    slot: str
    busy_s: float  # time with a trial running, inside the window
    window_s: float
    trials: int
    gaps: list[float] = field(default_factory=list)  # between trials of one worker process
    replacement_gaps: list[float] = field(default_factory=list)  # where the process changed

    @property
    def occupancy(self) -> float:
        return self.busy_s / self.window_s if self.window_s > 0 else 0.0

    @property
    def all_gaps(self) -> list[float]:
        return self.gaps + self.replacement_gaps


def slot_name(trial) -> str:
    """A slot: its machine and worker id, with its GPU where it has one."""
    gpu = trial.user_attrs.get(keys.CUDA_VISIBLE_DEVICES)
    name = f"{trial.user_attrs.get(keys.HOST, '?')} w{trial.user_attrs.get(keys.WORKER, '?')}"
    return f"{name} (GPU {gpu})" if gpu else name


def runs_of(trials, now: float) -> list[Run]:
    """The trials that ran on a slot; one still running ends `now`."""
    runs = []
    for t in trials:
        if t.datetime_start is None or keys.WORKER not in t.user_attrs or not ran_here(t):
            continue  # never started, not run by a sweeper worker, or run in another study
        end = t.datetime_complete.timestamp() if t.datetime_complete else now
        runs.append(Run(slot_name(t), t.user_attrs.get(keys.PID), t.datetime_start.timestamp(),
                        end))
    return runs


def slot_use(runs: list[Run], start: float | None = None, end: float | None = None) -> list[SlotUse]:
    """Per slot, over [start, end]; by default from the slot's first trial start to its last
    trial end: what comes before is start-up, what comes after is the wait for other slots'
    last trials once the budget is spent."""
    uses = []
    for slot in sorted({r.slot for r in runs}):
        mine = sorted((r for r in runs if r.slot == slot), key=lambda r: r.start)
        begin = mine[0].start if start is None else start
        until = max(r.end for r in mine) if end is None else end
        use = SlotUse(slot, busy_s=_busy(mine, begin, until), window_s=max(0.0, until - begin),
                      trials=len(mine))
        for before, after in zip(mine, mine[1:]):
            gap = max(0.0, after.start - before.end)
            (use.gaps if after.pid == before.pid else use.replacement_gaps).append(gap)
        uses.append(use)
    return uses


def _busy(runs: list[Run], begin: float, end: float) -> float:
    """Time inside [begin, end] covered by at least one run (overlaps counted once)."""
    busy, reach = 0.0, begin
    for run in runs:
        lo, hi = max(run.start, reach), min(run.end, end)
        if hi > lo:
            busy += hi - lo
        reach = max(reach, min(run.end, end))
    return busy


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]


def slot_hours(trials, max_epochs: int, now: float) -> tuple[float, float]:
    """(slot-hours the trials used, slot-hours pruning saved): a pruned trial would have run
    its remaining epochs at the pace of those it ran."""
    used = saved = 0.0
    for t in trials:
        if t.datetime_start is None or not ran_here(t):
            continue
        seconds = (t.datetime_complete.timestamp() if t.datetime_complete else now) - \
            t.datetime_start.timestamp()
        used += seconds
        ran = t.user_attrs.get(keys.EPOCHS_RUN)
        if t.state.name == "PRUNED" and ran:
            saved += seconds / ran * max(0, max_epochs - (epochs_reached(t) or ran))
    return used / 3600, saved / 3600


def describe(uses: list[SlotUse]) -> list[str]:
    """One line per slot: occupancy, then gaps within a worker and at replacements."""
    lines = []
    for use in uses:
        line = (f"  {use.slot:<24} busy {use.occupancy:6.1%} of {use.window_s:.0f}s, "
                f"{use.trials} trials; gaps {_gaps(use.gaps)}")
        if use.replacement_gaps:
            line += f"; at replacements {_gaps(use.replacement_gaps)}"
        lines.append(line)
    return lines


def _gaps(gaps: list[float]) -> str:
    if not gaps:
        return "none"
    return (f"median {statistics.median(gaps):.2f}s, p99 {percentile(gaps, 99):.2f}s, "
            f"max {max(gaps):.2f}s")
