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


REPEATS = 3  # each comparison, alternating which side goes first; judged on the median ratio


def _order(repeat: int) -> list[str]:
    """Who goes first alternates from one repeat to the next: the machine warms up."""
    return ["sweeper", "plain"] if repeat % 2 == 0 else ["plain", "sweeper"]


def _spread(ratios: list[float]) -> str:
    return f"{common.median(ratios):.3f}x ({min(ratios):.3f}-{max(ratios):.3f})"


def orchestration_efficiency(quick: bool, stores: list[str]) -> Row:
    """Sweeper workers and plain Optuna processes, side by side on each store, with the same
    sleeping objective, REPEATS times; Ray Tune's published figure stays as a reference."""
    workers, trials, seconds, epochs = (8, 160, 0.5, 5) if quick else (16, 800, 0.5, 5)
    ideal = trials * seconds / workers
    runs: dict[str, list[dict]] = {kind: [] for kind in stores}
    ratios: dict[str, list[float]] = {kind: [] for kind in stores}
    complete = True
    for repeat in range(REPEATS):
        for kind in stores:
            pair = {}
            for who in _order(repeat):
                with common.store(kind, common.workdir("row1")) as url:
                    run = (_sweeper_run if who == "sweeper" else _plain_run)(
                        url, workers, trials, seconds, epochs)
                run["efficiency"] = ideal / run["wall"]
                span = run.get("timeline", {}).get("span")
                run["efficiency_after_start"] = ideal / span if span else None
                pair[who] = run
            runs[kind].append(pair)
            ratios[kind].append(pair["sweeper"]["efficiency"] / pair["plain"]["efficiency"])
            complete &= pair["sweeper"]["complete"] == trials

    def efficiencies(kind: str, who: str) -> str:
        return common.pct(common.median(p[who]["efficiency"] for p in runs[kind]))

    ray = RAY_PUBLISHED["ideal"] / RAY_PUBLISHED["wall"]
    medians = [common.median(r) for r in ratios.values()]
    return Row(1, f"orchestration: {workers} workers x {trials} trials of {seconds}s, {epochs} "
                  f"reports, {REPEATS} runs a side (medians)",
               ", ".join(f"{k} {efficiencies(k, 'sweeper')}" for k in stores),
               ", ".join(f"plain Optuna {k} {efficiencies(k, 'plain')}" for k in stores)
               + f"; Ray Tune published {common.pct(ray)}",
               ", ".join(f"{k} {_spread(r)}" for k, r in ratios.items()) + " of plain Optuna",
               ">= 1.0x plain Optuna on each store (median of the runs)",
               bool(medians) and min(medians) >= 1.0 and complete,
               {"ideal_wall": ideal, "runs": runs, "ratios": ratios,
                "ray_published": RAY_PUBLISHED})


def store_throughput(quick: bool, stores: list[str]) -> Row:
    sizes = {1: 60, 8: 160} if quick else {1: 100, 8: 240, 32: 320}
    epochs = 5
    results: dict[str, list[dict]] = {}
    ratios: dict[str, list[float]] = {}
    errors = 0
    for repeat in range(REPEATS):
        for kind in stores:
            for workers, trials in sizes.items():
                pair = {}
                for who in _order(repeat + workers):
                    with common.store(kind, common.workdir("row2")) as url:
                        run = (_sweeper_run if who == "sweeper" else _plain_run)(
                            url, workers, trials, 0.0, epochs)
                    run["trials_per_s"] = run["complete"] / run["wall"]
                    run.pop("timeline", None)
                    pair[who] = run
                key = f"{kind} W={workers}"
                results.setdefault(key, []).append(pair)
                ratios.setdefault(key, []).append(
                    pair["sweeper"]["trials_per_s"] / max(pair["plain"]["trials_per_s"], 1e-9))
                errors += pair["sweeper"]["errors"] + (trials - pair["sweeper"]["complete"])
    plain_errors = sum(p["plain"]["errors"] for pairs in results.values() for p in pairs)
    medians = {key: common.median(r) for key, r in ratios.items()}
    lowest = min(medians, key=medians.__getitem__)
    return Row(2, f"store: instant trials, {epochs} reports, W={'/'.join(map(str, sizes))}, "
                  f"{REPEATS} runs a side",
               f"{errors} errors in all",
               f"plain Optuna {plain_errors} errors",
               f"trials/s, median of each size and store: {min(medians.values()):.2f}-"
               f"{max(medians.values()):.2f}x plain (lowest {lowest}: {_spread(ratios[lowest])})",
               ">= 1.0x plain at every size and store (median of the runs); 0 errors",
               errors == 0 and min(medians.values()) >= 1.0,
               {"runs": results, "ratios": ratios, "medians": medians})
