"""What a sweep shows while it runs and when it ends.

On a terminal, a live view redrawn in place (rich): a bar for the budget, the counts, the best F1,
the time left, and a row per running trial. In logs and pipes, a plain line whenever something
changed, at most every `every_s` seconds. At the end, the best trials, where the study is and how
to look at it. The view only shows: the controller hands it snapshots of the store, so it is
tested on hand-made ones.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from sweeper import keys
from sweeper.metrics import delivered_test_f1
from sweeper.results.occupancy import slot_hours
from sweeper.storage.counts import TrialCounts
from sweeper.text import clock, short
from sweeper.trials import best_trial, epochs_reached, first_value, resumed


@dataclass(frozen=True)
class RunningTrial:
    worker: str
    number: int
    epochs: int  # epochs reported so far


@dataclass(frozen=True)
class Snapshot:
    """The study as the view needs it, read once per refresh."""

    counts: TrialCounts
    best: tuple[float, int] | None = None  # (value, trial number)
    running: tuple[RunningTrial, ...] = ()
    slot_hours: tuple[float, float] = (0.0, 0.0)  # used, saved by pruning
    resumed: tuple[int, float] = (0, 0.0)  # trials resumed from checkpoints, seconds that saved

    @classmethod
    def of(cls, study, counts: TrialCounts, max_epochs: int) -> Snapshot:
        import optuna

        top = best_trial(study)
        best = None if top is None else (first_value(top), top.number)
        trials = study.get_trials(deepcopy=False)  # finished ones come from Optuna's cache
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        rows = sorted((RunningTrial(str(t.user_attrs.get(keys.WORKER, "?")), t.number,
                                    len(t.intermediate_values)) for t in running),
                      key=lambda r: r.worker)
        return cls(counts, best, tuple(rows), slot_hours(trials, max_epochs, time.time()),
                   resumed(trials))


def time_left(elapsed: float, done_now: int, remaining: int,
              until_deadline: float | None) -> tuple[float, bool] | None:
    """(seconds, whether the time limit comes first) to the end of the sweep: the budget at the
    pace of the trials finished in this run, or the time limit, whichever comes first. None
    while nothing has finished and there is no time limit."""
    to_budget = elapsed / done_now * remaining if done_now > 0 else None
    if until_deadline is not None and (to_budget is None or until_deadline < to_budget):
        return max(0.0, until_deadline), True
    return (to_budget, False) if to_budget is not None else None


class ProgressView:
    def __init__(self, budget: int, finished_at_start: int, deadline: float | None = None,
                 out: TextIO = sys.stdout, live: bool | None = None, every_s: float = 5.0,
                 clock_fn=time.time):
        self.budget = budget
        self.finished_at_start = finished_at_start
        self.deadline = deadline
        self.out = out
        self.every_s = every_s
        self.clock = clock_fn
        self.started = clock_fn()
        self.last_line = ""
        self.last_shown = 0.0
        self.live_view: Any = None  # rich's Live while redrawing in place
        self.live = out.isatty() if live is None else live

    def say(self, message: str) -> None:
        if self.live_view is not None:
            self.live_view.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.out, flush=True)

    def show(self, snapshot: Snapshot, final: bool = False) -> None:
        """Redraws the live view, or prints a line if it changed; `final` prints it anyway."""
        if final:
            self.close()
            self.say(self.line(snapshot))
            return
        if self.live:
            self._redraw(snapshot)
            return
        now = self.clock()
        if now - self.last_shown < self.every_s:
            return
        self.last_shown = now
        line = self.line(snapshot)
        if line != self.last_line:
            self.say(line)
            self.last_line = line

    def close(self) -> None:
        if self.live_view is not None:
            self.live_view.stop()
            self.live_view = None

    # -- text ----------------------------------------------------------------------------------

    def details(self, snapshot: Snapshot) -> str:
        """How the finished trials ended, what runs, the best and the time left."""
        counts = snapshot.counts
        best = (f" | best F1 {snapshot.best[0]:.4f} (trial {snapshot.best[1]})"
                if snapshot.best else "")
        used, saved = snapshot.slot_hours
        cost = f" | {used:.2f} slot-h, pruning saved {saved:.2f}" if used else ""
        count, seconds = snapshot.resumed
        if count:
            cost += f" | {count} resumed, {seconds:.0f}s not retrained"
        return f"{counts.describe()} | running {counts.running}{best}{self._eta(counts)}{cost}"

    def line(self, snapshot: Snapshot) -> str:
        states = " ".join(f"w{r.worker}:t{r.number}@e{r.epochs}" for r in snapshot.running)
        done = f"{snapshot.counts.finished}/{self.budget} done"
        details = self.details(snapshot).replace(" | ", ") | ", 1)
        return (f"[{clock(self.clock() - self.started)}] {done} ({details}"
                + (f" | {states}" if states else ""))

    def _eta(self, counts: TrialCounts) -> str:
        now = self.clock()
        left = time_left(now - self.started, counts.finished - self.finished_at_start,
                         max(0, self.budget - counts.finished),
                         None if self.deadline is None else self.deadline - now)
        if left is None:
            return ""
        seconds, by_deadline = left
        return f" | ETA {clock(seconds)}" + (" (time limit)" if by_deadline else "")

    # -- live --------------------------------------------------------------------------------

    def _redraw(self, snapshot: Snapshot) -> None:
        if self.live_view is None:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.out, force_terminal=True)
            self.live_view = Live(console=console, refresh_per_second=2, transient=False)
            self.live_view.start()
        self.live_view.update(self._renderable(snapshot), refresh=True)

    def _renderable(self, snapshot: Snapshot):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        head = Table.grid(padding=(0, 1))
        head.add_row(Text(clock(self.clock() - self.started)),
                     ProgressBar(total=max(1, self.budget), completed=snapshot.counts.finished,
                                 width=30),
                     Text(f"{snapshot.counts.finished}/{self.budget} done"))
        parts: list[Any] = [head, Text(self.details(snapshot))]
        if snapshot.running:
            table = Table(box=None, padding=(0, 2), show_edge=False)
            for title in ("worker", "trial", "epoch"):
                table.add_column(title, justify="right")
            for row in snapshot.running:
                table.add_row(row.worker, str(row.number), str(row.epochs))
            parts.append(table)
        return Group(*parts)


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def summary_lines(best_trials: list, where: str, space_name: str, study_name: str) -> list[str]:
    """The end of a sweep: the best trials, where the study is and how to look at it."""
    lines = []
    if best_trials:
        lines.append("\nbest trials (validation F1, test F1, epochs, params):")
        for t in best_trials:
            params = ", ".join(f"{k}={short(v)}" for k, v in t.params.items())
            lines.append(f"  #{t.number:<4} {first_value(t):.4f}  "
                         f"{_or_nan(delivered_test_f1(t)):.4f}"
                         f"  {epochs_reached(t) or '?':>3}  {params}")
    target = f"--study {study_name}" if study_name != space_name else ""
    lines.append(f"\nstudy '{study_name}' is in {where}")
    lines.append(f"inspect it: sweeper dashboard {space_name} {target}".rstrip()
                 + f"   (or: make dashboard SPACE={space_name})")
    lines.append(f"report:     sweeper report {space_name} {target}".rstrip())
    return lines
