"""A process that prepares a dataset the way a sweeper worker does and trains one epoch on it.

    python -m benchmarks.cache_worker SPACE_YAML MODE

MODE 'mmap' uses the cache as workers do (memory-mapped arrays); 'copy' makes private copies,
as loading without the cache would. Prints a JSON line with the load time and its memory
(USS: pages only this process holds), then waits for a line on stdin before exiting, so the
benchmark can measure a second worker while the first still holds the data.
"""

from __future__ import annotations

import json
import sys
import time


def main(space_yaml: str, mode: str) -> int:
    import psutil

    from sweeper.pipeline.backend import configure_backend

    configure_backend(1)
    import keras
    import numpy as np

    from sweeper.pipeline import train
    from sweeper.pipeline.data import Dataset, load_dataset
    from sweeper.space import parse_space

    space = parse_space(open(space_yaml).read(), source=space_yaml)

    def train_one_epoch(data):
        model = keras.Sequential([keras.Input(data.input_shape), keras.layers.Flatten(),
                                  keras.layers.Dense(data.num_classes, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(**train.training_input(data, 2048, 0, 1), epochs=1, verbose=0)

    # Warm up on a few rows first, so what Keras itself allocates is not counted as data.
    rows = np.zeros((64, 8, 8, 1), dtype=np.float32)
    labels = np.arange(64) % 10
    train_one_epoch(Dataset(rows, labels, rows, labels, rows, labels, list(range(10)), {}))
    me = psutil.Process()
    before = me.memory_full_info().uss
    started = time.perf_counter()
    data = load_dataset(space.config["dataset"], space.config["preprocess"])
    load_s = time.perf_counter() - started
    if mode == "copy":
        data = Dataset(**{k: np.array(v) if isinstance(v, np.ndarray) else v
                          for k, v in vars(data).items()})
    train_one_epoch(data)
    info = me.memory_full_info()
    print(json.dumps({"load_s": load_s, "cached": data.report.get("cached"),
                      "uss_added_mb": (info.uss - before) / 2**20,
                      "dataset_mb": sum(getattr(data, k).nbytes for k in
                                        ("x_train", "y_train", "x_val", "y_val", "x_test",
                                         "y_test")) / 2**20}), flush=True)
    sys.stdin.readline()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
