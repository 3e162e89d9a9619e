"""The default pruner's patience with a study's first trials.

Successive halving promotes, at each rung, the best 1/reduction_factor of the trials that reached
it, and the best one so far while fewer than reduction_factor have. So a study's first trials are
judged against two or three others, and most are stopped: `sweep cnn_lr --trials 8` pruned 6 of 8
and ended with 2 fully trained models, the second at F1 0.28. A user of a short sweep wants several
finished models to compare, and the later trials want a fair field to be judged against.

AfterStartup keeps a pruner from stopping any trial until `n_startup_trials` trials of the study
have completed (as Optuna's median pruner does with its own n_startup_trials). The pruner it wraps
is still asked at every report, so successive halving records each trial's value at each rung, and
the trials that follow are judged against those of the first ones too.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState


class AfterStartup(optuna.pruners.BasePruner):
    """`pruner`, silenced until the study has `n_startup_trials` complete trials."""

    def __init__(self, pruner: optuna.pruners.BasePruner, n_startup_trials: int) -> None:
        self.pruner, self.n_startup_trials = pruner, n_startup_trials

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if not self.pruner.prune(study, trial):
            return False
        # Counted only when the wrapped pruner would stop the trial: one store read per verdict,
        # not one per report.
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return len(complete) >= self.n_startup_trials
