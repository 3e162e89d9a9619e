"""Row 11: a space iterated on. The shipped cnn_lr space with its learning rate held to the low
end (NARROW) is swept for 16 trials; then its range is widened to the shipped one (1e-4..3e-2).
A warm start from those 16 trials (`sweep --warm-start`) against a cold study of the widened
space, same seeds: how many trials each runs before its best validation F1 is within 0.5 points
of the cold study's final best."""

from __future__ import annotations

import yaml

from benchmarks import common
from benchmarks.common import Row

NARROW = {"low": 1.0e-4, "high": 2.0e-4}  # where the 16 first trials search
WITHIN = 0.005  # 0.5 F1 points


def _space(seed: int, narrow: bool) -> str:
    doc = yaml.safe_load((common.ROOT / "search_spaces" / "cnn_lr.yaml").read_text())
    doc["sampler"]["seed"] = doc["training"]["seed"] = seed
    if narrow:
        doc["params"]["learning_rate"].update(NARROW)
    return yaml.safe_dump(doc, sort_keys=False)


def _sweep(work, url: str, space_text: str, trials: int, *extra: str) -> float:
    """The real `sweeper sweep` of work/lr.yaml (2 CPU workers, no models kept): wall seconds."""
    space = work / "lr.yaml"
    space.write_text(space_text)
    cmd = [common.python(), "-m", "sweeper", "sweep", str(space), "--workers", "2", "--trials",
           str(trials), "--storage", url, "--keep-models", "0", *extra]
    wall, results = common.run_processes(
        [cmd], env=common.child_env(SWEEPER_CACHE_DIR=str(work.parent / "cache")), cwd=work)
    common.check(results, f"sweep {' '.join(extra) or 'lr'}")
    return wall


def _trials_to_reach(trials: list, target: float, start: float = float("-inf")) -> int | None:
    """How many of `trials` (the study's own, in the order they were asked for) ran before the
    best F1 so far, starting from `start`, reached `target`; None if it never did."""
    best = start
    if best >= target:
        return 0
    for count, trial in enumerate(trials, 1):
        if trial.values is not None and trial.state.name == "COMPLETE":
            best = max(best, trial.values[0])
        if best >= target:
            return count
    return None


def _seed_run(root, seed: int, narrow_trials: int, cold_trials: int, warm_trials: int) -> dict:
    import optuna

    from sweeper import keys

    work = root / f"seed{seed}"
    work.mkdir()
    url = f"sqlite:///{work / 'lr.db'}"
    walls = {"narrow": _sweep(work, url, _space(seed, narrow=True), narrow_trials)}
    walls["cold"] = _sweep(work, url, _space(seed, narrow=False), cold_trials, "--study", "cold")
    walls["warm"] = _sweep(work, url, _space(seed, narrow=False), warm_trials, "--warm-start", "lr")
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    cold = optuna.load_study(study_name="cold", storage=url).get_trials(states=finished)
    warm = optuna.load_study(study_name="lr-2", storage=url).get_trials(states=finished)
    imported = [t for t in warm if keys.IMPORTED_FROM in t.user_attrs]
    own = [t for t in warm if keys.IMPORTED_FROM not in t.user_attrs]
    complete = [t.values[0] for t in cold if t.state.name == "COMPLETE"]
    cold_best = max(complete)
    target = cold_best - WITHIN
    narrow_best = max((t.values[0] for t in imported if t.state.name == "COMPLETE"),
                      default=float("-inf"))
    cold_needed = _trials_to_reach(cold, target)
    warm_needed = _trials_to_reach(own, target, start=narrow_best)
    # Without the imported best: what the sampler found itself, having learned from them.
    own_needed = _trials_to_reach(own, target)
    warm_best = max([narrow_best] + [t.values[0] for t in own if t.state.name == "COMPLETE"])
    return {"seed": seed, "walls": walls, "cold_best": cold_best, "narrow_best": narrow_best,
            "warm_best": warm_best, "imported": len(imported), "cold_trials": len(cold),
            "warm_trials": len(own), "cold_needed": cold_needed, "warm_needed": warm_needed,
            "own_needed": own_needed,
            "met": warm_needed is not None and cold_needed is not None
            and warm_needed <= cold_needed / 2}


def warm_start(quick: bool) -> Row:
    seeds = [0] if quick else [0, 1, 2]
    narrow, cold, warm = (6, 10, 5) if quick else (16, 40, 20)
    root = common.workdir("row11")
    runs = [_seed_run(root, seed, narrow, cold, warm) for seed in seeds]

    def needed(run: dict, key: str) -> str:
        value = run[key]
        return f">{run['cold_trials' if key == 'cold_needed' else 'warm_trials']}" \
            if value is None else str(value)

    return Row(
        11, f"warm start after widening cnn_lr's learning rate ({NARROW['low']:g}.."
            f"{NARROW['high']:g}, {narrow} trials -> 1e-4..3e-2), {len(seeds)} seed(s): trials "
            "run until within 0.5 F1 points of the cold study's final best",
        "warm start: " + "/".join(needed(r, "warm_needed") for r in runs) + " trials ("
        + "/".join(needed(r, "own_needed") for r in runs) + " by its own trials' best alone)",
        f"cold ({cold} trials): " + "/".join(needed(r, "cold_needed") for r in runs) + " trials",
        "best F1 cold " + "/".join(f"{r['cold_best']:.4f}" for r in runs) + ", warm "
        + "/".join(f"{r['warm_best']:.4f}" for r in runs) + ", the imported trials "
        + "/".join(f"{r['narrow_best']:.4f}" for r in runs),
        "warm start within 0.5 points in <= half the cold study's trials, every seed",
        None if quick else all(r["met"] for r in runs),
        {"runs": runs, "narrow": NARROW, "within": WITHIN},
        why_unjudged="not judged (quick): one seed of 10 cold trials, which can reach the cold "
                     "best at its first trial, cannot be halved" if quick else "")
