"""A hand-written Optuna loop, as found in tutorials: one process, `n_jobs=2` threads, one
`fit(epochs=1)` call per epoch followed by `predict` and scikit-learn's F1, then report/prune.

    python -m benchmarks.baselines.handwritten_optuna TRIALS

Same fixed model and data as the sweeper run. Prints 'epochs N'.
"""

from __future__ import annotations

import os
import sys
import threading


def main(trials: str) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import optuna
    from sklearn.metrics import f1_score

    from benchmarks.baselines import fixed_model

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, hp, data = fixed_model.load()
    epochs = [0]
    lock = threading.Lock()

    def objective(trial):
        trial.suggest_categorical("learning_rate", [hp["learning_rate"]])
        model = fixed_model.build(space, hp, data)
        score = 0.0
        for epoch in range(space.max_epochs):
            model.fit(data.x_train, data.y_train, batch_size=int(hp["batch_size"]), epochs=1,
                      verbose=0, shuffle=True)
            predicted = np.argmax(model.predict(data.x_val, verbose=0), axis=1)
            score = f1_score(data.y_val, predicted, average="macro")
            with lock:
                epochs[0] += 1
            trial.report(score, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return score

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    study.optimize(objective, n_trials=int(trials), n_jobs=2)
    print(f"epochs {epochs[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
