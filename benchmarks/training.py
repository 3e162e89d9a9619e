"""Rows 3 and 4: epochs per second of real training, and what a trial costs beyond its epochs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from benchmarks import common
from benchmarks.baselines.fixed_model import SPACE
from benchmarks.common import Row

VARIED = SPACE.with_name("varied_cnn.yaml")  # row 4's compile cost: every trial a new program
WORKERS = 2


def _epochs(output: str) -> int:
    found = re.findall(r"^epochs (\d+)$", output, re.M)
    return int(found[-1]) if found else 0


def _ours(trials: int, cache: str, backend: str = "tensorflow", space: Path = SPACE) -> dict:
    """The real `sweeper sweep` command, 2 CPU workers, on a fresh SQLite store."""
    import optuna

    work = common.workdir("row3")
    url = f"sqlite:///{work / 'store.db'}"
    cmd = [common.python(), "-m", "sweeper", "sweep", str(space), "--workers", str(WORKERS),
           "--trials", str(trials), "--storage", url]
    env = common.child_env(SWEEPER_CACHE_DIR=cache, KERAS_BACKEND=backend)
    wall, results = common.run_processes([cmd], env=env, cwd=work)
    common.check(results, "sweeper sweep")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=space.stem, storage=url)
    shutil.rmtree(work, ignore_errors=True)
    trials_ = [t for t in study.trials if t.state.name == "COMPLETE"]
    return {"wall": wall, "epochs": sum(t.user_attrs["sweeper.epochs_run"] for t in trials_),
            "trials": [_trial_times(t) for t in trials_]}


def _trial_times(t) -> dict:
    return {"worker": t.user_attrs.get("sweeper.pid"), "start": t.datetime_start.timestamp(),
            "end": t.datetime_complete.timestamp(), "seconds": t.user_attrs.get("sweeper.seconds", {}),
            "epochs": t.user_attrs.get("sweeper.epochs_run", 0)}


def _bare(trials: int, cache: str) -> dict:
    per = [trials // WORKERS + (i < trials % WORKERS) for i in range(WORKERS)]
    cmds = [[common.python(), "-m", "benchmarks.baselines.bare_keras", str(n), "1"] for n in per]
    wall, results = common.run_processes(cmds, env=common.child_env(SWEEPER_CACHE_DIR=cache),
                                         cwd=common.ROOT)
    common.check(results, "bare keras")
    return {"wall": wall, "epochs": sum(_epochs(r.stdout) for r in results)}


def _single(module: str, args: list[str], cache: str) -> dict:
    cmd = [common.python(), "-m", module, *args]
    wall, results = common.run_processes([cmd], env=common.child_env(SWEEPER_CACHE_DIR=cache),
                                         cwd=common.ROOT)
    common.check(results, module)
    return {"wall": wall, "epochs": _epochs(results[0].stdout)}


def training_throughput(quick: bool) -> tuple[Row, Row]:
    trials = 4 if quick else 8
    rounds = 1 if quick else 2
    cache = str(common.workdir("row3-cache"))
    runs: dict[str, list] = {"sweeper": [], "bare_keras": []}
    for _ in range(rounds):  # alternate the two closest contenders
        runs["bare_keras"].append(_bare(trials, cache))
        runs["sweeper"].append(_ours(trials, cache))
    runs["handwritten_optuna"] = [_single("benchmarks.baselines.handwritten_optuna",
                                          [str(trials)], cache)]
    try:
        import keras_tuner  # noqa: F401

        kt_dir = common.workdir("row3-kt")
        runs["kerastuner_hyperband"] = [_single("benchmarks.baselines.kerastuner_hyperband",
                                                [str(kt_dir)], cache)]
    except ImportError:
        runs["kerastuner_hyperband"] = []
    rate = {name: max((r["epochs"] / r["wall"] for r in rs), default=None)
            for name, rs in runs.items()}
    ours = rate["sweeper"]
    vs = {name: ours / r if r else None for name, r in rate.items() if name != "sweeper"}
    met = (vs["bare_keras"] >= 0.9 and vs["handwritten_optuna"] >= 1.5
           and vs["kerastuner_hyperband"] is not None and vs["kerastuner_hyperband"] >= 2)
    kt = f"{vs['kerastuner_hyperband']:.2f}x KerasTuner" if vs["kerastuner_hyperband"] else "KerasTuner n/a"
    row3 = Row(3, f"training: fixed CNN on digits, {trials} trials x 20 epochs, 2 CPU workers",
               f"{ours:.2f} epochs/s",
               ", ".join(f"{n} {r:.2f}" for n, r in rate.items() if r and n != "sweeper"),
               f"{common.pct(vs['bare_keras'])} of bare Keras, "
               f"{vs['handwritten_optuna']:.2f}x hand-written, {kt}",
               ">= 90% of bare; >= 1.5x hand-written; >= 2x KerasTuner", met,
               {"epochs_per_s": rate, "runs": runs})
    best = max(runs["sweeper"], key=lambda r: r["epochs"] / r["wall"])
    # What compiling each new model costs under each Keras backend installed here: a space whose
    # trials differ in a value compiled into the program (fixed_cnn's are all alike, and JAX
    # would compile only the first, finding the rest in its cache).
    from sweeper.keras_backend import installed

    compiled = {b: _ours(4 if quick else 6, cache, b, VARIED)["trials"]
                for b in ("tensorflow", "jax", "torch") if installed(b)}
    return row3, trial_overhead(best["trials"], compiled)


def compile_seconds(trials: list[dict]) -> tuple[float, float]:
    """Medians per trial of (its first epoch beyond a later one: tracing and compiling the new
    model's train step and first prediction; a later epoch). Each worker's first trial is left
    out: it also starts the backend."""
    costs, epochs = [], []
    for t in _after_first(trials):
        s = t["seconds"]
        if t["epochs"] > 1 and "first_epoch" in s:
            later = (s["epochs"] - s["first_epoch"]) / (t["epochs"] - 1)
            costs.append(s["first_epoch"] - later)
            epochs.append(later)
    return common.median(costs), common.median(epochs)


def _by_worker(trials: list[dict]) -> list[list[dict]]:
    """Each worker's trials, in the order they started."""
    by_worker: dict = {}
    for t in sorted(trials, key=lambda t: t["start"]):
        by_worker.setdefault(t["worker"], []).append(t)
    return list(by_worker.values())


def _after_first(trials: list[dict]) -> list[dict]:
    return [t for runs in _by_worker(trials) for t in runs[1:]]


def trial_overhead(trials: list[dict], by_backend: dict[str, list[dict]] | None = None) -> Row:
    """Per trial: everything that is not training epochs, including the gap before it (asking the
    store for the trial) in the same worker. A worker's first trial also pays for importing
    TensorFlow and is left out. Beside it, from `by_backend` (the trials of a sweep under each
    Keras backend), the part of a first epoch that is compiling (in "training epochs" above)."""
    parts: dict[str, list[float]] = {}
    totals = []
    for runs in _by_worker(trials):
        for before, t in zip(runs, runs[1:]):
            s = t["seconds"]
            wall = t["end"] - t["start"]
            known = {k: s.get(k, 0.0) for k in ("preprocess", "build", "f1", "report", "evaluate",
                                                 "artifacts")}
            known["fit setup"] = (s.get("train", 0.0) - s.get("epochs", 0.0) - s.get("f1", 0.0)
                                  - s.get("report", 0.0))
            known["store: ask before trial"] = t["start"] - before["end"]
            known["store: attrs, tell, cleanup"] = (wall - s.get("epochs", 0.0) - sum(
                v for k, v in known.items() if not k.startswith("store")))
            total = sum(known.values())
            totals.append(total)
            for k, v in known.items():
                parts.setdefault(k, []).append(v)
            parts.setdefault("epochs (training)", []).append(s.get("epochs", 0.0))
    med = common.median(totals)
    medians = {k: round(common.median(v), 4) for k, v in parts.items()}
    biggest = sorted(((v, k) for k, v in medians.items() if k != "epochs (training)"), reverse=True)[:3]
    compiling = {b: compile_seconds(ts) for b, ts in (by_backend or {}).items()}
    return Row(4, "fixed overhead per trial (not training epochs)", f"median {med:.3f}s",
               f"training {medians.get('epochs (training)', 0):.2f}s per trial",
               f"{med / max(medians.get('epochs (training)', 1e-9), 1e-9):.1%} of training; top: "
               + ", ".join(f"{k} {v:.3f}s" for v, k in biggest) + "; compiling each new model "
               "(in its first epoch; then per epoch): "
               + ", ".join(f"{b} {c:.2f}s ({e:.2f}s)" for b, (c, e) in compiling.items()),
               "median <= 0.15 s", med <= 0.15,
               {"median_parts_s": medians, "trials": len(totals),
                "compile_s_by_backend": {b: round(c, 3) for b, (c, _) in compiling.items()},
                "epoch_s_by_backend": {b: round(e, 3) for b, (_, e) in compiling.items()},
                "trials_by_backend": by_backend or {}})
