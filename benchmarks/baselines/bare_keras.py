"""The limit: the fixed model trained by bare Keras `fit`, no study, no per-epoch evaluation.

    python -m benchmarks.baselines.bare_keras MODELS THREADS

Trains MODELS fresh models one after another, each for the space's max_epochs, with the same
thread pool size a sweeper worker gets. Prints 'epochs N'.
"""

from __future__ import annotations

import sys


def main(models: str, threads: str) -> int:
    from sweeper.pipeline.backend import configure_backend

    configure_backend(int(threads))
    import keras

    from benchmarks.baselines import fixed_model

    space, hp, data = fixed_model.load()
    epochs = 0
    for i in range(int(models)):
        keras.utils.set_random_seed(i)
        model = fixed_model.build(space, hp, data)
        history = model.fit(data.x_train, data.y_train, batch_size=int(hp["batch_size"]),
                            epochs=space.max_epochs, verbose=0, shuffle=True)
        epochs += len(history.history["loss"])
        keras.backend.clear_session()
    print(f"epochs {epochs}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
