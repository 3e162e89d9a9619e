"""A sweeper worker whose trials only sleep: what orchestration costs, without TensorFlow.

    python -m benchmarks.sleep_worker URL STUDY SECONDS_PER_TRIAL EPOCHS

It opens the study as a real worker does (`sweeper.worker.loop.open_study`: same store settings,
heartbeats, sampler and pruner) and runs the real worker loop (`sweeper.worker.loop.run_trials`) on
a study made by `sweeper.sweep.studies.prepare_study`; only the objective differs: it sleeps
SECONDS_PER_TRIAL in EPOCHS steps, reporting a value after each.
"""

from __future__ import annotations

import os
import socket
import sys
import time

SPACE_YAML = """\
description: sleep-only objective for the orchestration benchmark
dataset: {name: digits}
model: {name: mlp}
training: {max_epochs: %(epochs)d}
sampler: {name: %(sampler)s, seed: 0}
pruner: {name: none}
params:
  dropout: {type: float, low: 0.0, high: 0.5}
"""


def sleep_space(epochs: int, sampler: str = "random"):
    from sweeper.space import parse_space

    return parse_space(SPACE_YAML % {"epochs": epochs, "sampler": sampler}, source="bench-sleep")


def sleep_objective(seconds: float, epochs: int):
    worker = {"worker": os.environ.get("SWEEPER_WORKER_ID", str(os.getpid())),
              "host": socket.gethostname(), "pid": os.getpid()}

    def objective(trial) -> float:
        import optuna

        for key, value in worker.items():
            trial.set_user_attr("sweeper." + key, value)
        x = trial.suggest_float("dropout", 0.0, 0.5)
        for epoch in range(1, epochs + 1):
            time.sleep(seconds / epochs)
            trial.report(x * epoch / epochs, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x

    return objective


def main(url: str, study_name: str, seconds: str, epochs: str) -> int:
    import optuna

    from sweeper.worker.loop import open_study, run_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study, _, budget = open_study(url, study_name, worker_id=str(os.getpid()))
    return run_trials(study, sleep_objective(float(seconds), int(epochs)), budget,
                      recycle_after=None)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
