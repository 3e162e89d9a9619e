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
