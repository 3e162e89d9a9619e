"""Row 7: what pruning saves, with the same trial count and seeds: the pruner a space gets when it
names none (what users get) against no pruning."""

from __future__ import annotations

from benchmarks import common
from benchmarks.common import Row

SPACE = """\
description: digits CNN for the pruning benchmark (%(pruner)s, seed %(seed)d)
dataset: {name: digits}
model: {name: cnn, batch_norm: true, dense_units: 32}
training: {max_epochs: %(epochs)d, batch_size: 64, seed: %(seed)d}
sampler: {name: tpe, seed: %(seed)d, n_startup_trials: 5}
%(pruner_yaml)s
params:
  learning_rate: {type: float, low: 1.0e-5, high: 1.0e-1, log: true}
  optimizer: {type: categorical, choices: [adam, sgd]}
  filters: {type: categorical, choices: [8, 16, 32]}
  conv_blocks: {type: int, low: 1, high: 2}
  dropout: {type: float, low: 0.0, high: 0.5}
"""
PRUNERS = {"default": "", "none": "pruner: {name: none}"}


def _sweep(work, pruner: str, seed: int, trials: int, epochs: int) -> dict:
    wall, study, _, _ = common.sweep(work, f"prune_{pruner}_{seed}", SPACE % {
        "pruner": pruner, "seed": seed, "epochs": epochs, "pruner_yaml": PRUNERS[pruner]}, trials)
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    return {"wall": wall, "epochs": sum(len(t.intermediate_values) for t in done),
            "best": study.best_value, "pruned": sum(t.state.name == "PRUNED" for t in done),
            "trials": len(done)}


def search_efficiency(quick: bool) -> Row:
    # The best F1 of 24 trials moves by seed alone: over 20 seeds, pruned minus unpruned had a
    # standard deviation of 2.4 points, so judging 0.5 points takes about 20 (5 would give a
    # standard error of 1.1).
    seeds = [0] if quick else list(range(20))
    trials, epochs = (12, 9) if quick else (24, 9)
    work = common.workdir("row7")
    runs: dict[str, list] = {"default": [], "none": []}
    for seed in seeds:  # alternate, so both arms see the same machine conditions
        for pruner in ("default", "none"):
            runs[pruner].append(_sweep(work, pruner, seed, trials, epochs))
    epochs_pruned = sum(r["epochs"] for r in runs["default"])
    epochs_full = sum(r["epochs"] for r in runs["none"])
    saved = 1 - epochs_pruned / epochs_full
    best_gap = [100 * (n["best"] - h["best"]) for h, n in zip(runs["default"], runs["none"])]
    mean_gap = sum(best_gap) / len(best_gap)
    return Row(7, f"pruning: {trials} trials x {epochs} epochs, {len(seeds)} seed(s), the default "
                  "pruner (successive halving) vs none",
               f"{epochs_pruned} epochs, best F1 "
               + "/".join(f"{r['best']:.4f}" for r in runs["default"]),
               f"{epochs_full} epochs, best F1 " + "/".join(f"{r['best']:.4f}" for r in runs["none"]),
               f"{common.pct(saved)} fewer epochs; pruned best F1 "
               + (f"{mean_gap:.2f} points behind" if mean_gap > 0 else f"{-mean_gap:.2f} points ahead")
               + " (mean)",
               ">= 50% fewer epochs; best within 0.5 points", saved >= 0.5 and mean_gap <= 0.5,
               {"runs": runs, "best_gap_points": best_gap})
