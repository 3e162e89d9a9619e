"""Sweeps compared at equal training time (rows 7 and 10): users give a sweep a night of GPU
time, not a trial count.

The unpruned sweep runs its trials; its training time (the sum of its trials' training seconds,
each trial's first epoch, which traces the model, included) is the budget. The pruned sweep of
the same space and seeds is extended until it has spent at least that, and is judged on its first
trials (by number, the order they were asked for) whose training time comes closest to the
budget: the study as it would stand had it been stopped there."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks import common

TOLERANCE = 0.05  # the two sides' training times agree within 5%


def training_seconds(trial) -> float:
    """Seconds training epochs, fine-tuning after weight pruning included."""
    seconds = trial.user_attrs["sweeper.seconds"]
    return float(seconds["epochs"]) + float(seconds.get("compress_fine_tune", 0.0))


def finished(study) -> list:
    """Complete and pruned trials, in the order they were asked for."""
    return sorted((t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")),
                  key=lambda t: t.number)


def prefix(trials: list, budget: float) -> tuple[list, float]:
    """The first trials whose training seconds come closest to `budget`, and those seconds."""
    best_k, best_gap, total, totals = 1, float("inf"), 0.0, []
    for k, t in enumerate(trials, start=1):
        total += training_seconds(t)
        totals.append(total)
        if abs(total - budget) < best_gap:
            best_k, best_gap = k, abs(total - budget)
    return trials[:best_k], totals[best_k - 1]


def pair(work, name: str, space_of: Callable[[bool], str], trials: int) -> dict:
    """One seed: the unpruned sweep of `trials` trials, then the pruned one extended to the same
    training time. space_of(pruned) is the space's text."""
    _, study, space, url = common.sweep(work, f"{name}_unpruned", space_of(False), trials)
    unpruned = finished(study)
    budget = sum(map(training_seconds, unpruned))
    asked = trials
    while asked < 20 * trials:  # the pruned study, extended until it has trained as long
        asked = int(asked * 1.5) + 1
        _, study, _, _ = common.sweep(work, f"{name}_pruned", space_of(True), asked)
        pruned = finished(study)
        if sum(map(training_seconds, pruned)) >= budget:
            break
    cut, seconds = prefix(pruned, budget)
    return {"budget_s": round(budget, 2), "time_ratio": seconds / budget,
            "unpruned": unpruned, "pruned": cut, "pruned_trials_run": len(pruned),
            "unpruned_space": str(space), "unpruned_url": url,
            "unpruned_study": f"{name}_unpruned"}


def within_tolerance(pairs: list[dict]) -> bool:
    return all(abs(p["time_ratio"] - 1) <= TOLERANCE for p in pairs)


def time_ratios(pairs: list[dict]) -> str:
    return (f"training time {min(p['time_ratio'] for p in pairs):.3f}-"
            f"{max(p['time_ratio'] for p in pairs):.3f}x")
