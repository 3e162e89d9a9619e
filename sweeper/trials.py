"""Finished trials, best first: the one place that knows which way 'better' points."""

from __future__ import annotations

from sweeper.errors import SweeperError


def best_first(trials: list, direction: str) -> list:
    """Trials with a value, best first; `direction` is 'maximize' or 'minimize'."""
    return sorted(trials, key=lambda t: t.value, reverse=direction == "maximize")


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

    return "maximize" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "minimize"
