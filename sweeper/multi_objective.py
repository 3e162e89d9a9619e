"""Multi-objective studies that still prune on per-epoch validation F1.

Optuna refuses Trial.report and Trial.should_prune in a study with several objectives
(optuna#3450). Sweeper keeps both, with F1 always the first objective:
- per-epoch F1 is written with the same storage call Trial.report makes, so optuna-dashboard and
  `sweeper report` show it as for any study;
- the space's pruner judges that F1 through the study itself, a PrunableStudy whose `direction`
  answers with F1's. Optuna's pruners (and TPE's ranking of pruned trials) read `direction`, which
  a plain multi-objective study refuses.

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
    """Trial.should_prune, also in a multi-objective study (loaded as a PrunableStudy)."""
    if len(trial.study.directions) == 1:
        return trial.should_prune()
    return trial.study.pruner.prune(trial.study, keys.latest_trial(trial))
