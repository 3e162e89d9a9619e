"""Row 13: two sweeps of different studies on one machine, each asking for both of its 2 GPUs,
started together. Judged from every trial's recorded GPU and start/end times across both studies:
the trial-seconds in which a GPU ran two trials at once, each GPU's busy share from its first
trial to its last, and the idle gaps where a GPU passed from one sweep to the other.

No GPU is needed: the GPUs are named (`--gpus 0,1`) and the workers train on the CPU; what is
measured is what the leases let run where."""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks import common
from benchmarks.common import Row

SPACE = Path(__file__).resolve().parent / "spaces" / "short_trials.yaml"
GPUS = ("0", "1")


def gpu_sharing(quick: bool) -> Row:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    trials = 8 if quick else 20
    work = common.workdir("row13")
    names = ("first", "second")
    for name in names:  # two studies of the same space, in stores of their own
        shutil.copy(SPACE, work / f"{name}.yaml")
    env = common.child_env(SWEEPER_LEASE_DIR=str(work / "leases"))
    commands = [[common.python(), "-m", "sweeper", "sweep", f"{name}.yaml", "--gpus",
                 ",".join(GPUS), "--trials", str(trials), "--storage",
                 f"sqlite:///{work / name}.db"] for name in names]
    wall, results = common.run_processes(commands, env=env, cwd=work)
    common.check(results, "the two sweeps")
    runs = []  # (gpu, start, end, study)
    for name in names:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{work / name}.db")
        runs += [(t.user_attrs["sweeper.cuda_visible_devices"], t.datetime_start.timestamp(),
                  t.datetime_complete.timestamp(), name)
                 for t in study.trials if t.datetime_complete is not None]
    shutil.rmtree(work, ignore_errors=True)
    overlap, busy, handoffs = 0.0, {}, []
    for gpu in GPUS:
        on_gpu = sorted(r for r in runs if r[0] == gpu)
        if not on_gpu:
            busy[gpu] = 0.0
            continue
        for i, a in enumerate(on_gpu):
            for b in on_gpu[i + 1:]:
                overlap += max(0.0, min(a[2], b[2]) - max(a[1], b[1]))
        window = max(r[2] for r in on_gpu) - on_gpu[0][1]
        busy[gpu] = sum(r[2] - r[1] for r in on_gpu) / window if window else 0.0
        handoffs += [b[1] - a[2] for a, b in zip(on_gpu, on_gpu[1:]) if a[3] != b[3]]
    worst_gap = max(handoffs, default=0.0)
    met = overlap == 0 and min(busy.values()) >= 0.95 and worst_gap <= 1.0 and bool(handoffs)
    details = {"wall_s": wall, "trials_per_sweep": trials, "overlap_trial_s": overlap,
               "busy": busy, "handoff_gaps_s": handoffs,
               "per_gpu_studies": {gpu: [r[3] for r in sorted(runs) if r[0] == gpu]
                                   for gpu in GPUS}}
    return Row(13, f"GPU sharing: two sweeps of {trials} trials each, both asking for both of 2 "
                   "GPUs, started together",
               f"{overlap:.1f} trial-s on a shared GPU; busy " +
               ", ".join(f"GPU {g} {common.pct(b)}" for g, b in busy.items()),
               "without leases each GPU ran two trials at once for most of the run",
               f"{len(handoffs)} hand-offs between sweeps, largest gap {worst_gap:.2f}s",
               "0 trial-s shared; each GPU >= 95% busy; hand-off gap <= 1 s", met, details)
