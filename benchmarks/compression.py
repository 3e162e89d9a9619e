"""Row 10: a compression sweep (the shipped cnn_compress space: validation F1 of the int8 model
against its gzipped size, sparsity searched). Given the same training time (benchmarks.equal_time),
does the shipped pruner find a front as good as no pruning? And how small is an int8 file against
its float32 one, by model size: models of its best trials, retrained as they ran
(`sweeper retrain --as-trial`) without weight pruning, so only quantisation is measured."""

from __future__ import annotations

import json

import yaml

from benchmarks import common, equal_time
from benchmarks.common import Row


def _space(seed: int, pruned: bool) -> str:
    doc = yaml.safe_load((common.ROOT / "search_spaces" / "cnn_compress.yaml").read_text())
    doc["sampler"]["seed"] = doc["training"]["seed"] = seed
    if not pruned:
        doc["pruner"] = {"name": "none"}
    return yaml.safe_dump(doc, sort_keys=False)


def _front(trials: list) -> list[list[float]]:
    """(F1, size_kb) of the complete trials no other complete trial beats on both."""
    points = [list(t.values) for t in trials if t.state.name == "COMPLETE"]
    return [p for p in points
            if not any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in points)]


def _arm(trials: list, finetune: int) -> dict:
    # Fine-tuning after pruning trains too: counted, in both arms.
    epochs = sum(len(t.intermediate_values) + (finetune if t.state.name == "COMPLETE" and
                                               t.params.get("sparsity", 0) > 0 else 0)
                 for t in trials)
    return {"trials": len(trials), "epochs": epochs, "front": _front(trials),
            "pruned": sum(t.state.name == "PRUNED" for t in trials),
            "seconds": round(sum(map(equal_time.training_seconds, trials)), 2)}


def _seed(work, seed: int, trials: int) -> dict:
    pair = equal_time.pair(work, f"compress_{seed}", lambda pruned: _space(seed, pruned), trials)
    finetune = yaml.safe_load(_space(seed, True))["compress"]["finetune_epochs"]
    return {"seed": seed, "budget_s": pair["budget_s"], "time_ratio": pair["time_ratio"],
            "pruned_trials_run": pair["pruned_trials_run"],
            "pruned": _arm(pair["pruned"], finetune), "unpruned": _arm(pair["unpruned"], finetune),
            "space": pair["unpruned_space"], "url": pair["unpruned_url"],
            "study": pair["unpruned_study"]}


def hypervolume(front: list[list[float]], worst_size_kb: float) -> float:
    """Area between the front of (F1, size_kb) and the reference point (F1 0, worst_size_kb)."""
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    if not front:
        return 0.0
    losses = np.array([[-f1, size] for f1, size in front])  # both minimised
    return float(compute_hypervolume(losses, np.array([0.0, worst_size_kb])))


# The trials of each unpruned study whose int8 file is measured: the best F1, and the largest.
INT8_PICKS = {"best": [], "largest": ["--pick", "max params"]}


def _int8_costs(work, run: dict) -> list[dict]:
    numbers, costs = set(), []
    for pick, args in INT8_PICKS.items():
        name = f"{run['study']}-{pick}"
        export = work / f"{name}.yaml"
        _, results = common.run_processes([[
            common.python(), "-m", "sweeper", "best", run["space"], "--storage", run["url"],
            "--study", run["study"], *args, "--export", str(export)]],
            env=common.child_env(SWEEPER_CACHE_DIR=str(work / "cache")), cwd=work)
        common.check(results, "best --export")
        point = yaml.safe_load(export.read_text())
        if point["trial"] not in numbers:
            numbers.add(point["trial"])
            costs.append(_int8_cost(work, run, name, point))
    return costs


def _int8_cost(work, run: dict, name: str, point: dict) -> dict:
    """A trial of the unpruned study retrained as it ran, without weight pruning: the float and
    int8 files of the same trained model, and their validation F1, from retrain's metrics.json."""
    folder, export = work / f"{name}-int8", work / f"{name}.yaml"
    env = common.child_env(SWEEPER_CACHE_DIR=str(work / "cache"))
    where = ["--storage", run["url"], "--study", run["study"]]
    point["params"]["sparsity"] = point["hyperparameters"]["sparsity"] = 0.0
    export.write_text(yaml.safe_dump(point, sort_keys=False))
    _, results = common.run_processes([[common.python(), "-m", "sweeper", "retrain", run["space"],
                                        *where, "--params", str(export), "--as-trial", "--out",
                                        str(folder)]], env=env, cwd=work)
    common.check(results, "retrain --as-trial")
    metrics = json.loads((folder / "metrics.json").read_text())["compressed"]
    weights = metrics.get("params") or metrics["nonzero_params"]
    return {"trial": point["trial"], "params": point["params"], "weights": weights,
            "float_bytes": metrics["float_bytes"], "int8_bytes": metrics["compressed_bytes"],
            "size_ratio": metrics["compressed_bytes"] / metrics["float_bytes"],
            # What the file holds besides one byte per weight: names, scales, operators.
            "int8_overhead_kb": (metrics["compressed_bytes"] - weights) / 1024,
            "float_val_f1": metrics["float_val_f1"], "int8_val_f1": metrics["compressed_val_f1"],
            "f1_cost_points": 100 * (metrics["float_val_f1"] - metrics["compressed_val_f1"])}


LARGE = 20_000  # weights: from here on the int8 file's fixed part no longer dominates


def compression_sweep(quick: bool) -> Row:
    seeds = [0] if quick else list(range(5))
    trials = 8 if quick else 24
    work = common.workdir("row10")
    runs = [_seed(work, seed, trials) for seed in seeds]
    # One reference point for every front: just past the largest model on any front.
    worst = 1.01 * max(size for r in runs for arm in ("pruned", "unpruned")
                       for _, size in r[arm]["front"])
    for r in runs:
        for arm in ("pruned", "unpruned"):
            r[arm]["hypervolume"] = hypervolume(r[arm]["front"], worst)
    hv = {arm: sum(r[arm]["hypervolume"] for r in runs) / len(runs)
          for arm in ("pruned", "unpruned")}
    epochs = {arm: sum(r[arm]["epochs"] for r in runs) for arm in ("pruned", "unpruned")}
    int8 = [cost for r in runs for cost in _int8_costs(work, r)]
    large = [c for c in int8 if c["weights"] >= LARGE]
    small = [c for c in int8 if c["weights"] < LARGE]
    int8_ok = bool(large) and all(c["size_ratio"] <= 0.35 and c["f1_cost_points"] <= 0.5
                                  for c in large)
    hv_ok = hv["pruned"] >= hv["unpruned"]
    by_size = ", ".join(f"{c['weights']:,} weights {c['size_ratio']:.2f} ({c['f1_cost_points']:+.2f} "
                        f"points)" for c in sorted(int8, key=lambda c: c["weights"]))
    overhead = (f"; below {LARGE:,} weights the int8 file carries "
                f"{min(c['int8_overhead_kb'] for c in small):.1f}-"
                f"{max(c['int8_overhead_kb'] for c in small):.1f} KB besides its weights"
                if small else "")
    return Row(
        10, f"compression sweep (cnn_compress, F1 vs int8 size) at equal training time: "
            f"{len(seeds)} seeds, the unpruned sweep {trials} trials, pruned as shipped as many "
            "as the same seconds allow; int8 vs float32 by model size",
        f"pruned: {common.median(r['pruned']['trials'] for r in runs):.0f} trials (median), "
        f"{epochs['pruned']} epochs, hypervolume "
        + "/".join(f"{r['pruned']['hypervolume']:.1f}" for r in runs),
        f"unpruned: {trials} trials, {epochs['unpruned']} epochs, hypervolume "
        + "/".join(f"{r['unpruned']['hypervolume']:.1f}" for r in runs),
        f"hypervolume {hv['pruned'] / hv['unpruned']:.3f}x unpruned (mean); "
        + equal_time.time_ratios(runs) + f"; int8/float32 by weights: {by_size}{overhead}",
        "same training time within 5%; pruned hypervolume >= unpruned (mean); int8 <= 0.35 of "
        f"float32 within 0.5 F1 points for models of >= {LARGE:,} weights",
        None if quick else (hv_ok and int8_ok and equal_time.within_tolerance(runs)),
        {"runs": runs, "reference_size_kb": worst, "hypervolume_mean": hv, "int8": int8},
        why_unjudged="not judged (quick): one seed cannot judge a mean hypervolume" if quick
        else "")


def _joined(rows: list[dict], key: str) -> str:
    return "/".join(f"{row[key]:.2f}" for row in rows)
