"""Plain Optuna, as a user would write it: one process of a parallel study on a shared store.

    python -m benchmarks.baselines.plain_optuna URL STUDY N_TRIALS SECONDS EPOCHS

`optuna.load_study(storage=URL)` with Optuna's default storage settings and `study.optimize`;
the objective is the same sleep-only one the sweeper worker runs in this benchmark. Prints the
number of trials that raised (e.g. 'database is locked') and exits 1 if the process died.
"""

from __future__ import annotations

import sys


def main(url: str, study_name: str, n_trials: str, seconds: str, epochs: str) -> int:
    import optuna

    from benchmarks.sleep_worker import sleep_objective

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=study_name, storage=url,
                              sampler=optuna.samplers.RandomSampler(),
                              pruner=optuna.pruners.NopPruner())
    study.optimize(sleep_objective(float(seconds), int(epochs)), n_trials=int(n_trials),
                   catch=(Exception,))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
