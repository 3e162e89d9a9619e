"""Finished trials, best first: the one place that knows which way 'better' points.

'Best' is by the first objective's value (F1), also in a multi-objective study, where the rest of
the trade-off is the Pareto front's (study.best_trials)."""

from __future__ import annotations

from sweeper import keys
from sweeper.errors import SweeperError


def best_first(trials: list, direction: str) -> list:
    """Trials with a value, best first; `direction` is 'maximize' or 'minimize'."""
    return sorted(trials, key=first_value, reverse=direction == "maximize")


def first_value(trial) -> float:
    """The first objective's value (trial.value refuses a multi-objective trial)."""
    return trial.values[0]


def best_trial(study):
    """The completed trial best by the first objective, or None."""
    import optuna

    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return best_first(trials, direction_of(study))[0] if trials else None


def completed(study) -> list:
    """The study's completed trials, best first; a one-line error when there is none."""
    import optuna

    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not trials:
        raise SweeperError(f"study '{study.study_name}' has no completed trial yet; "
                           "let the sweep run longer")
    return best_first(trials, direction_of(study))


def direction_of(study) -> str:
    import optuna

    return "maximize" if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE \
        else "minimize"


def ran_here(trial) -> bool:
    """Whether the study ran the trial itself, rather than importing it from the study it was
    warm-started from (sweeper.sweep.warm_start): only trials run here used its slots and epochs."""
    return keys.IMPORTED_FROM not in trial.user_attrs


def epochs_reached(trial) -> int | None:
    """Epochs the trial's model trained in all: this run's (sweeper.epochs_run) and those a
    checkpoint carried over from the runs it resumed. None for a trial that trained none."""
    ran = trial.user_attrs.get(keys.EPOCHS_RUN)
    if ran is None:
        return None
    return ran + (trial.user_attrs.get(keys.RESUMED_FROM) or {}).get("epoch", 0)


def resumed(trials) -> tuple[int, float]:
    """(How many trials went on from a checkpoint, the seconds of training that spared them):
    each would otherwise have trained its checkpoint's epochs again."""
    count, seconds = 0, 0.0
    for t in trials:
        start = t.user_attrs.get(keys.RESUMED_FROM)
        if start:
            count += 1
            seconds += start.get("seconds", 0.0)
    return count, seconds


def describe_resumed(trials) -> str | None:
    """'2 trials resumed from checkpoints: 41s of training not done again', or None."""
    count, seconds = resumed(trials)
    if not count:
        return None
    return (f"{count} trial{'s' if count > 1 else ''} resumed from checkpoints: "
            f"{seconds:.0f}s of training not done again")
