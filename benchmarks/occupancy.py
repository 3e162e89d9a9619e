"""Row 9: how busy each worker slot stays over a sweep of short trials with frequent worker
replacements: the share of wall time with a trial running (after start-up), and the idle gaps."""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks import common
from benchmarks.common import Row

SPACE = Path(__file__).resolve().parent / "spaces" / "short_trials.yaml"
WORKERS, RECYCLE_AFTER = 2, 5


def slot_occupancy(quick: bool) -> Row:
    import optuna

    from sweeper.results.occupancy import runs_of, slot_use

    trials = 30 if quick else 100
    work = common.workdir("row9")
    url = f"sqlite:///{work / 'store.db'}"
    cmd = [common.python(), "-m", "sweeper", "sweep", str(SPACE), "--workers", str(WORKERS),
           "--trials", str(trials), "--recycle-after", str(RECYCLE_AFTER), "--storage", url]
    wall, results = common.run_processes([cmd], cwd=work)
    common.check(results, "sweeper sweep")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=SPACE.stem, storage=url)
    runs = runs_of(study.trials, now=0.0)
    uses = slot_use(runs)  # each slot from its first trial: start-up is not counted
    shutil.rmtree(work, ignore_errors=True)
    worst = min(u.occupancy for u in uses)
    gaps = [g for u in uses for g in u.all_gaps]
    at_replacement = [g for u in uses for g in u.replacement_gaps]
    seconds = [r.end - r.start for r in runs]
    details = {"wall": wall, "trials": len(runs), "median_trial_s": common.median(seconds),
               "slots": {u.slot: {"occupancy": u.occupancy, "window_s": u.window_s,
                                  "gaps": u.gaps, "replacement_gaps": u.replacement_gaps}
                         for u in uses}}
    return Row(9, f"slot occupancy: {WORKERS} workers, {len(runs)} trials of "
                  f"~{common.median(seconds):.1f}s, replaced every {RECYCLE_AFTER}",
               "busy " + ", ".join(common.pct(u.occupancy) for u in uses) + " after start-up",
               "-", f"max gap {max(gaps, default=0):.2f}s ({max(at_replacement, default=0):.2f}s "
                    f"at {len(at_replacement)} replacements)",
               ">= 97% busy; no gap > 0.5 s", worst >= 0.97 and max(gaps, default=0) <= 0.5,
               details)
