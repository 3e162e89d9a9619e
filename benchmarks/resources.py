"""Rows 5 and 6: the dataset cache (time and shared memory) and worker memory over many trials."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from benchmarks import common
from benchmarks.common import Row

BIG_SPACE = """\
description: digits replicated to ~200 MB, for the cache benchmark
dataset: {path: %(path)s, validation_fraction: 0.1, test_fraction: 0.1}
preprocess: {normalize: unit, drop_duplicates: false}
model: {name: mlp}
training: {max_epochs: 1}
params:
  learning_rate: {type: categorical, choices: [0.001]}
"""


def _big_dataset(folder: Path, copies: int) -> Path:
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.tile(digits.images.astype(np.uint8)[..., None], (copies, 1, 1, 1))
    y = np.tile(digits.target, copies)
    path = folder / "digits_big.npz"
    np.savez(path, x_train=x, y_train=y)
    return path


def _start(space: Path, mode: str, env: dict) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([common.python(), "-m", "benchmarks.cache_worker", str(space), mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env, cwd=common.ROOT)
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise RuntimeError(f"cache worker ({mode}) exited {proc.returncode} without a result")
    return proc, json.loads(line)


def _finish(*procs: subprocess.Popen) -> None:
    for proc in procs:
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(timeout=60)


def preprocessing_cache(quick: bool) -> Row:
    work = common.workdir("row5")
    copies = 300 if quick else 450  # ~140 MB / ~200 MB of float32 images once prepared
    space = work / "big.yaml"
    space.write_text(BIG_SPACE % {"path": _big_dataset(work, copies)})
    env = common.child_env(SWEEPER_CACHE_DIR=str(work / "cache"))
    first_proc, first = _start(space, "mmap", env)  # computes and writes the cache
    _finish(first_proc)
    a, cached = _start(space, "mmap", env)
    b, second = _start(space, "mmap", env)  # a second worker while the first holds the data
    _finish(a, b)
    c, copy_a = _start(space, "copy", env)
    d, copy_b = _start(space, "copy", env)
    _finish(c, d)
    size = second["dataset_mb"]
    ratio_time = cached["load_s"] / first["load_s"]
    share = second["uss_added_mb"] / size
    return Row(5, f"dataset cache: digits x{copies} ({size:.0f} MB prepared)",
               f"cached load {cached['load_s']:.2f}s; 2nd worker +{second['uss_added_mb']:.0f} MB",
               f"first load {first['load_s']:.2f}s; private copies +{copy_b['uss_added_mb']:.0f} MB",
               f"time {common.pct(ratio_time)}; memory {common.pct(share)} of dataset",
               "cached <= 5% of first; each extra worker < 25% of dataset",
               ratio_time <= 0.05 and share < 0.25,
               {"first": first, "cached": cached, "second_worker": second,
                "copies": [copy_a, copy_b]})


TINY_SPACE = """\
description: tiny MLP trials for the worker-memory benchmark
dataset: {name: digits}
model: {name: mlp, hidden_layers: 1, units: 32}
training: {max_epochs: 2, batch_size: 128}
sampler: {name: random, seed: 0}
pruner: {name: none}
params:
  learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
"""


def _memory_run(work: Path, trials: int, recycle_after: int) -> list[float]:
    import optuna

    space = work / f"tiny_{recycle_after}.yaml"
    space.write_text(TINY_SPACE)
    url = f"sqlite:///{work / f'memory_{recycle_after}.db'}"
    cmd = [common.python(), "-m", "sweeper", "sweep", str(space), "--workers", "1", "--trials",
           str(trials), "--storage", url, "--recycle-after", str(recycle_after)]
    _, results = common.run_processes([cmd], env=common.child_env(
        SWEEPER_CACHE_DIR=str(work / "cache")), cwd=work)
    common.check(results, "memory sweep")
    study = optuna.load_study(study_name=space.stem, storage=url)
    return [t.user_attrs["sweeper.rss_mb"] for t in sorted(study.trials, key=lambda t: t.number)]


def worker_memory(quick: bool) -> Row:
    trials = 60 if quick else 200
    work = common.workdir("row6")
    without = _memory_run(work, trials, 10**6)
    recycled = _memory_run(work, trials, 25)
    growth = {"without": max(without) - without[0], "recycled": max(recycled) - recycled[0]}
    step = max(1, trials // 10)
    curve = {n: round(without[n]) for n in range(0, trials, step)} | {trials - 1: round(without[-1])}
    return Row(6, f"worker memory over {trials} trials (tiny MLP), one worker",
               f"recycled every 25: +{growth['recycled']:.0f} MB",
               f"no recycling: +{growth['without']:.0f} MB",
               "RSS MB by trial without: " + " ".join(f"{n}:{v}" for n, v in curve.items()),
               "growth <= 200 MB with recycling", growth["recycled"] <= 200,
               {"rss_mb_without": without, "rss_mb_recycled": recycled, "growth_mb": growth})
