"""KerasTuner's Hyperband on the same fixed model (one process, its defaults).

    python -m benchmarks.baselines.kerastuner_hyperband DIRECTORY

Every hyperparameter of the model is fixed; a hyperparameter the model ignores keeps KerasTuner
from running out of new combinations. Validation is KerasTuner's own (val_accuracy each epoch).
Prints 'epochs N' (every epoch trained, counted by a callback).
"""

from __future__ import annotations

import os
import sys


def main(directory: str) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import keras_tuner

    from benchmarks.baselines import fixed_model

    space, hp_fixed, data = fixed_model.load()
    epochs = [0]

    class CountEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            epochs[0] += 1

    def build(hp):
        hp.Int("unused", 0, 10**6)
        model = fixed_model.build(space, hp_fixed, data)
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"])
        return model

    tuner = keras_tuner.Hyperband(build, objective="val_accuracy", max_epochs=space.max_epochs,
                                  factor=3, directory=directory, project_name="bench", seed=0,
                                  overwrite=True)
    tuner.search(data.x_train, data.y_train, batch_size=int(hp_fixed["batch_size"]),
                 validation_data=(data.x_val, data.y_val), callbacks=[CountEpochs()], verbose=0)
    print(f"epochs {epochs[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
