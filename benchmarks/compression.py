"""Row 10: a compression sweep (the shipped cnn_compress space: validation F1 of the int8 model
against its gzipped size, sparsity searched), pruned as shipped against unpruned, same trial
count and seeds: epochs trained and the hypervolume of each Pareto front; and what int8 costs
the best model of each unpruned study, retrained as its trial (`sweeper retrain --as-trial`)
without weight pruning, so only quantisation is measured."""

from __future__ import annotations

import json

import yaml

from benchmarks import common
from benchmarks.common import Row


def _space(seed: int, pruned: bool) -> str:
    doc = yaml.safe_load((common.ROOT / "search_spaces" / "cnn_compress.yaml").read_text())
    doc["sampler"]["seed"] = doc["training"]["seed"] = seed
    if not pruned:
        doc["pruner"] = {"name": "none"}
    return yaml.safe_dump(doc, sort_keys=False)


def _sweep(work, seed: int, pruned: bool, trials: int) -> dict:
    name = f"compress_{'pruned' if pruned else 'unpruned'}_{seed}"
    wall, study, space, url = common.sweep(work, name, _space(seed, pruned), trials)
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    finetune = yaml.safe_load(space.read_text())["compress"]["finetune_epochs"]
    # Fine-tuning after pruning trains too: counted, in both arms.
    epochs = sum(len(t.intermediate_values) + (finetune if t.state.name == "COMPLETE" and
                                               t.params.get("sparsity", 0) > 0 else 0)
                 for t in done)
    front = [list(t.values) for t in study.best_trials]
    best = max((t for t in done if t.state.name == "COMPLETE"), key=lambda t: t.values[0])
    return {"name": name, "url": url, "space": str(space), "wall": wall, "epochs": epochs,
            "front": front, "best_trial": best.number, "best_f1": best.values[0],
            "pruned": sum(t.state.name == "PRUNED" for t in done), "trials": len(done)}


def hypervolume(front: list[list[float]], worst_size_kb: float) -> float:
    """Area between the front of (F1, size_kb) and the reference point (F1 0, worst_size_kb)."""
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    if not front:
        return 0.0
    losses = np.array([[-f1, size] for f1, size in front])  # both minimised
    return float(compute_hypervolume(losses, np.array([0.0, worst_size_kb])))


def _int8_cost(work, run: dict) -> dict:
    """The best trial of a study retrained as it ran, without weight pruning: the float and int8
    files of the same trained model, and their validation F1, from retrain's metrics.json."""
    folder = work / f"{run['name']}-int8"
    export = work / f"{run['name']}-best.yaml"
    env = common.child_env(SWEEPER_CACHE_DIR=str(work / "cache"))
    _, results = common.run_processes([[common.python(), "-m", "sweeper", "best", run["space"],
                                        "--storage", run["url"], "--study", run["name"],
                                        "--export", str(export)]], env=env, cwd=work)
    common.check(results, "best --export")
    point = yaml.safe_load(export.read_text())
    point["params"]["sparsity"] = point["hyperparameters"]["sparsity"] = 0.0
    export.write_text(yaml.safe_dump(point, sort_keys=False))
    _, results = common.run_processes([[common.python(), "-m", "sweeper", "retrain", run["space"],
                                        "--storage", run["url"], "--study", run["name"],
                                        "--params", str(export), "--as-trial", "--out",
                                        str(folder)]], env=env, cwd=work)
    common.check(results, "retrain --as-trial")
    metrics = json.loads((folder / "metrics.json").read_text())["compressed"]
    return {"trial": point["trial"], "params": point["params"],
            "float_bytes": metrics["float_bytes"], "int8_bytes": metrics["compressed_bytes"],
            "size_ratio": metrics["compressed_bytes"] / metrics["float_bytes"],
            "float_val_f1": metrics["float_val_f1"], "int8_val_f1": metrics["compressed_val_f1"],
            "f1_cost_points": 100 * (metrics["float_val_f1"] - metrics["compressed_val_f1"])}


def compression_sweep(quick: bool) -> Row:
    seeds = [0] if quick else list(range(5))
    trials = 8 if quick else 24
    work = common.workdir("row10")
    runs: dict[str, list] = {"pruned": [], "unpruned": []}
    for seed in seeds:  # alternate, so both arms see the same machine conditions
        for pruned in (True, False):
            runs["pruned" if pruned else "unpruned"].append(_sweep(work, seed, pruned, trials))
    # One reference point for every front: just past the largest model any trial made.
    worst = 1.01 * max(size for arm in runs.values() for r in arm for _, size in r["front"])
    for arm in runs.values():
        for r in arm:
            r["hypervolume"] = hypervolume(r["front"], worst)
    epochs = {arm: sum(r["epochs"] for r in rs) for arm, rs in runs.items()}
    saved = 1 - epochs["pruned"] / epochs["unpruned"]
    ratios = [p["hypervolume"] / u["hypervolume"] for p, u in zip(runs["pruned"], runs["unpruned"])]
    hv_ratio = sum(ratios) / len(ratios)
    int8 = [_int8_cost(work, r) for r in runs["unpruned"]]
    size_ok = all(c["size_ratio"] <= 0.30 for c in int8)
    f1_ok = all(c["f1_cost_points"] <= 0.5 for c in int8)
    return Row(
        10, f"compression sweep (cnn_compress, F1 vs int8 size): {trials} trials, "
            f"{len(seeds)} seed(s), pruned as shipped vs none; int8 vs float32 of each best model",
        f"{epochs['pruned']} epochs, hypervolume "
        + "/".join(f"{r['hypervolume']:.1f}" for r in runs["pruned"]),
        f"{epochs['unpruned']} epochs, hypervolume "
        + "/".join(f"{r['hypervolume']:.1f}" for r in runs["unpruned"]),
        f"{common.pct(saved)} fewer epochs, hypervolume {common.pct(hv_ratio)} of unpruned "
        f"(mean); int8 file {_joined(int8, 'size_ratio')} of float32, F1 cost "
        f"{_joined(int8, 'f1_cost_points')} points",
        ">= 40% fewer epochs, hypervolume >= 95%; int8 <= 30% of float32 within 0.5 F1 points",
        saved >= 0.4 and hv_ratio >= 0.95 and size_ok and f1_ok,
        {"runs": runs, "hypervolume_ratios": ratios, "reference_size_kb": worst, "int8": int8})


def _joined(rows: list[dict], key: str) -> str:
    return "/".join(f"{row[key]:.2f}" for row in rows)
