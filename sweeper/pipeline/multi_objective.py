"""Multi-objective studies that still prune on per-epoch validation F1.

Optuna refuses Trial.report and Trial.should_prune in a study with several objectives
(optuna#3450). Sweeper keeps both, with F1 always the first objective:
- per-epoch F1 is written with the same storage call Trial.report makes, so optuna-dashboard and
  `sweeper report` show it as for any study;
- the space's pruner judges that F1 through the study itself, a PrunableStudy whose `direction`
  answers with F1's. Optuna's pruners (and TPE's ranking of pruned trials) read `direction`, which
  a plain multi-objective study refuses;
- a trial is judged only against trials no larger than itself (by the weights it will keep,
  known once its model is built: sweeper.expected_nonzero_params). Falling behind larger models
  is no reason to stop a small one: it may still end on the front's small end. Only trials that
  models at most its size beat on F1 are hopeless for the front. Measured (make bench, row 10,
  5 seeds): judged against every trial, pruning saved 50% of the epochs but kept 84% of the
  unpruned fronts' hypervolume; judged against trials no larger, it saved 27% and kept 96%.

What keeps pruned trials from misleading the samplers: Optuna stores no values for a pruned trial
of a multi-objective study, so none is ever on the Pareto front; NSGA-II and NSGA-III draw parents
from complete trials only; TPE puts pruned trials behind every complete one, ranked by their last
F1, as it does in a single-objective study. Hyperband is refused for these studies (each of its
brackets builds a plain study of its own, which has no single direction).
"""

from __future__ import annotations

import optuna

from sweeper import keys


class PrunableStudy(optuna.Study):
    """A study whose `direction` is its first objective's (F1's), also when it has several."""

    @property
    def direction(self) -> optuna.study.StudyDirection:
        return self.directions[0]


def load_prunable_study(study_name: str, storage, sampler=None, pruner=None) -> optuna.Study:
    """The study as optuna.load_study gives it, with `direction` answering as F1's."""
    return PrunableStudy(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)


def report(trial, value: float, step: int) -> None:
    """Trial.report, also in a multi-objective study."""
    if len(trial.study.directions) == 1:
        trial.report(value, step)
    else:
        keys.record_intermediate_value(trial, step, float(value))


def should_prune(trial) -> bool:
    """Trial.should_prune, also in a multi-objective study (loaded as a PrunableStudy), where
    the trial is judged against trials no larger than itself."""
    study = trial.study
    if len(study.directions) == 1:
        return trial.should_prune()
    frozen = keys.latest_trial(trial)
    size = frozen.user_attrs.get(keys.EXPECTED_NONZERO)
    return study.pruner.prune(study if size is None else _NoLarger(study, size), frozen)


class _NoLarger:
    """The study as a pruner sees it: only the trials expected to keep at most `size` weights.
    (The pruners a multi-objective space may name read trials through get_trials only.)"""

    def __init__(self, study, size: float):
        self._study, self._size = study, size

    def __getattr__(self, name: str):
        return getattr(self._study, name)

    def _fits(self, trial) -> bool:
        return trial.user_attrs.get(keys.EXPECTED_NONZERO, float("inf")) <= self._size

    def get_trials(self, deepcopy: bool = True, states=None) -> list:
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states)
                if self._fits(t)]
