"""Rows 1 and 2: what orchestration and the store cost, with objectives that only sleep."""

from __future__ import annotations

from benchmarks import common
from benchmarks.common import Row

RAY_PUBLISHED = {"trials": 10_000, "seconds": 1.0, "cpus": 16, "wall": 715.0, "ideal": 625.0}


def _prepare(url: str, trials: int, epochs: int) -> None:
    from benchmarks.sleep_worker import sleep_space
    from sweeper.sweep.studies import prepare_study

    prepare_study(sleep_space(epochs), url, "bench", trials)


def _sweeper_run(url: str, workers: int, trials: int, seconds: float, epochs: int) -> dict:
    _prepare(url, trials, epochs)
    cmd = [common.python(), "-m", "benchmarks.sleep_worker", url, "bench", str(seconds), str(epochs)]
    wall, results = common.run_processes([cmd] * workers, cwd=common.ROOT)
    return {"wall": wall, "exit_codes": [r.returncode for r in results], **_count(url, results)}


def _plain_run(url: str, workers: int, trials: int, seconds: float, epochs: int) -> dict:
    import optuna

    optuna.create_study(study_name="bench", storage=url)
    per_worker = [trials // workers + (i < trials % workers) for i in range(workers)]
    cmds = [[common.python(), "-m", "benchmarks.baselines.plain_optuna", url, "bench", str(n),
             str(seconds), str(epochs)] for n in per_worker]
    wall, results = common.run_processes(cmds, cwd=common.ROOT)
    return {"wall": wall, "exit_codes": [r.returncode for r in results], **_count(url, results)}


def _count(url: str, results) -> dict:
    """Trials by state, straight from the store, and errors seen in the workers' output."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        trials = optuna.load_study(study_name="bench", storage=url).trials
    except Exception as e:  # a store the run broke counts as errors, not as a crash of the bench
        return {"complete": 0, "failed": 0, "errors": 1, "store_error": str(e).splitlines()[0]}
    complete = sum(t.state.name == "COMPLETE" for t in trials)
    failed = sum(t.state.name == "FAIL" for t in trials)
    crashed = sum(r.returncode != 0 for r in results)
    locked = sum(r.stdout.count("database is locked") for r in results)
    return {"complete": complete, "failed": failed, "errors": failed + crashed,
            "crashed_workers": crashed, "database_is_locked": locked,
            "timeline": _timeline(trials)}


def _timeline(trials) -> dict:
    done = [t for t in trials if t.datetime_complete]
    if not done:
        return {}
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    return {"first_start": first.timestamp(), "span": (last - first).total_seconds()}


def orchestration_efficiency(quick: bool, stores: list[str]) -> Row:
    """Sweeper workers and plain Optuna processes, side by side on each store, with the same
    sleeping objective; Ray Tune's published figure stays as a reference."""
    workers, trials, seconds, epochs = (8, 160, 0.5, 5) if quick else (16, 800, 0.5, 5)
    ideal = trials * seconds / workers
    runs: dict[str, dict] = {}
    ratios = []
    for kind in stores:
        pair = {}
        for who, run_ in (("sweeper", _sweeper_run), ("plain", _plain_run)):
            with common.store(kind, common.workdir("row1")) as url:
                run = run_(url, workers, trials, seconds, epochs)
            run["efficiency"] = ideal / run["wall"]
            span = run.get("timeline", {}).get("span")
            run["efficiency_after_start"] = ideal / span if span else None
            pair[who] = run
        runs[kind] = pair
        ratios.append(pair["sweeper"]["efficiency"] / pair["plain"]["efficiency"])
    ray = RAY_PUBLISHED["ideal"] / RAY_PUBLISHED["wall"]
    complete = all(p["sweeper"]["complete"] == trials for p in runs.values())
    return Row(1, f"orchestration: {workers} workers x {trials} trials of {seconds}s, {epochs} reports",
               ", ".join(f"{k} {common.pct(p['sweeper']['efficiency'])}" for k, p in runs.items()),
               ", ".join(f"plain Optuna {k} {common.pct(p['plain']['efficiency'])}"
                         for k, p in runs.items()) + f"; Ray Tune published {common.pct(ray)}",
               f"{min(ratios):.2f}x plain Optuna" if ratios else "-",
               ">= 1.3x plain Optuna", bool(ratios) and min(ratios) >= 1.3 and complete,
               {"ideal_wall": ideal, "runs": runs, "ray_published": RAY_PUBLISHED})


def store_throughput(quick: bool, stores: list[str]) -> Row:
    sizes = {1: 60, 8: 160} if quick else {1: 100, 8: 240, 32: 320}
    epochs, results, ok, ratios = 5, {}, True, []
    for kind in stores:
        for workers, trials in sizes.items():
            pair = {}
            # Alternate who goes first from one size to the next: the machine warms up.
            order = ["sweeper", "plain"] if workers % 2 else ["plain", "sweeper"]
            for who in order:
                with common.store(kind, common.workdir("row2")) as url:
                    run = (_sweeper_run if who == "sweeper" else _plain_run)(
                        url, workers, trials, 0.0, epochs)
                run["trials_per_s"] = run["complete"] / run["wall"]
                run.pop("timeline", None)
                pair[who] = run
            results[f"{kind} W={workers}"] = pair
            ratios.append(pair["sweeper"]["trials_per_s"] / max(pair["plain"]["trials_per_s"], 1e-9))
            ok &= pair["sweeper"]["errors"] == 0 and pair["sweeper"]["complete"] == trials
            ok &= pair["sweeper"]["trials_per_s"] >= pair["plain"]["trials_per_s"]
    top = max(sizes)
    ours_errors = sum(p["sweeper"]["errors"] for k, p in results.items() if k.endswith(f"W={top}"))
    plain_errors = sum(p["plain"]["errors"] for k, p in results.items() if k.endswith(f"W={top}"))
    return Row(2, f"store: instant trials, {epochs} reports, W={'/'.join(map(str, sizes))}",
               f"{ours_errors} errors at W={top}",
               f"plain Optuna {plain_errors} errors at W={top}",
               f"trials/s {min(ratios):.2f}-{max(ratios):.2f}x plain",
               f"0 errors at W={top}; >= 1x plain", ok, results)
