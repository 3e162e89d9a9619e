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
            "epochs": t.user_attrs.get("sweeper.epochs_run", 0),
            "timeline": t.user_attrs.get("sweeper.timeline", {})}


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

    # Reported, not judged: a quick run leaves it out.
    compiled = {} if quick else {b: _ours(6, cache, b, VARIED)["trials"]
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


KERAS_FLOOR = ("build", "fit setup", "train-step trace", "prediction trace")


def _keras_floor(t: dict) -> dict:
    """What Keras itself costs a trial beyond its steady epochs: building and compiling the
    model, fit's set-up before the first batch, and tracing the train step and the prediction
    (the first epoch's and first F1's excess over later ones)."""
    s, timeline, n = t["seconds"], t["timeline"], max(t["epochs"], 1)
    later = (s["epochs"] - s["first_epoch"]) / (n - 1) if n > 1 else s["first_epoch"]
    return {"build": s.get("build", 0.0),
            "fit setup": timeline["first_batch"] - timeline["fit"],
            "train-step trace": max(s["first_epoch"] - later, 0.0),
            "prediction trace": max(s.get("f1", 0.0) - n * s.get("last_f1", 0.0), 0.0)}


def slot_waits(trials: list[dict]) -> list[dict]:
    """Per pair of consecutive trials of one worker: the slot's wait from the end of the first's
    last epoch to the second's first batch, and what of it Keras needs (the first's last
    validation prediction and its test evaluation, the second's build and fit set-up); the rest
    is sweeper's own. A worker's first trial, which also imports the backend, is never the
    second of a pair."""
    waits = []
    for runs in _by_worker(trials):
        for before, t in zip(runs, runs[1:]):
            if not (before["timeline"].get("trained") and t["timeline"].get("first_batch")):
                continue
            gap = t["timeline"]["first_batch"] - before["timeline"]["trained"]
            keras = {"last validation prediction": before["seconds"].get("last_f1", 0.0),
                     "test evaluation": before["seconds"].get("evaluate", 0.0),
                     "build": t["seconds"].get("build", 0.0),
                     "fit setup": t["timeline"]["first_batch"] - t["timeline"]["fit"]}
            waits.append({"gap": gap, "keras": keras, "own": gap - sum(keras.values())})
    return waits


def trial_overhead(trials: list[dict], by_backend: dict[str, list[dict]] | None = None) -> Row:
    """Where a slot waits between two trials, split into what Keras needs and what sweeper adds
    (judged); Keras's own floor per trial (reported); and, from `by_backend` (the trials of a
    sweep under each Keras backend), what compiling each new model costs."""
    waits = slot_waits(trials)
    own = common.median(w["own"] for w in waits)
    gap = common.median(w["gap"] for w in waits)
    keras_in_gap = {k: common.median(w["keras"][k] for w in waits) for k in waits[0]["keras"]} \
        if waits else {}
    floor = [_keras_floor(t) for t in _after_first(trials)]
    floor_parts = {k: common.median(f[k] for f in floor) for k in KERAS_FLOOR}
    compiling = {b: compile_seconds(ts) for b, ts in (by_backend or {}).items()}
    return Row(4, "between two trials: the slot's wait from one trial's last epoch to the next "
                  "one's first batch (fixed CNN, 2 CPU workers)",
               f"sweeper's own: median {own:.3f}s (of a {gap:.3f}s wait, {len(waits)} waits)",
               "Keras in the wait: " + ", ".join(f"{k} {v:.3f}s" for k, v in keras_in_gap.items()),
               "Keras's floor per trial (reported): " + ", ".join(
                   f"{k} {v:.3f}s" for k, v in floor_parts.items())
               + ("; compiling each new model (in its first epoch; then per epoch): "
                  + ", ".join(f"{b} {c:.2f}s ({e:.2f}s)" for b, (c, e) in compiling.items())
                  if compiling else ""),
               "sweeper's own part of the wait: median <= 0.05 s", bool(waits) and own <= 0.05,
               {"waits": waits, "keras_in_gap_s": keras_in_gap, "keras_floor_s": floor_parts,
                "compile_s_by_backend": {b: round(c, 3) for b, (c, _) in compiling.items()},
                "epoch_s_by_backend": {b: round(e, 3) for b, (_, e) in compiling.items()},
                "trials_by_backend": by_backend or {}})
