"""Row 12: what a cut costs. The shipped cnn_lr space trained 30 epochs a trial (no pruning, so
every trial trains them all), at the default checkpoint cadence: one sweep never cut, and the same
sweep cut three times, each time run again with the same command: SIGTERM to the sweep (a stop
request, as Ctrl-C or Slurm's time limit), a worker SIGKILLed (a crash: nothing written at the
kill), the controller SIGKILLed (its workers see it gone: a stop request). Per cut trial, the
epochs trained again: those after its checkpoint, plus the one in progress (counted whole,
even where a stop finished it: nothing in the store tells whether one was in progress)."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import yaml

from benchmarks import common
from benchmarks.common import Row

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2
EPOCHS = 30
CUT_AT = 10  # epochs a running trial has trained (in its run) before each cut


def space_text() -> str:
    space = yaml.safe_load((ROOT / "search_spaces" / "cnn_lr.yaml").read_text())
    space["training"]["max_epochs"] = EPOCHS
    space["pruner"] = "none"
    return yaml.safe_dump(space, sort_keys=False)


def resume_after_cuts(quick: bool) -> Row:
    import optuna

    from sweeper import keys
    from sweeper.space.schema import CHECKPOINT_EVERY_S
    from sweeper.trials import resumed

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    trials = 4 if quick else 8
    work = common.workdir("row12")
    (work / "resume_cnn.yaml").write_text(space_text())

    def command(store: str) -> list[str]:
        return [common.python(), "-m", "sweeper", "sweep", "resume_cnn.yaml", "--workers",
                str(WORKERS), "--trials", str(trials), "--storage", f"sqlite:///{work / store}"]

    uncut_wall, results = common.run_processes([command("uncut.db")], cwd=work)
    common.check(results, "the uncut sweep")
    cut_started = time.monotonic()
    stop_s, killed = _cut_three_ways(work, command("cut.db"))
    done = subprocess.run(command("cut.db"), cwd=work, env=common.child_env(),
                          capture_output=True, text=True)
    common.check([done], "the last run of the cut sweep")
    cut_wall = time.monotonic() - cut_started
    uncut = optuna.load_study(study_name="resume_cnn", storage=f"sqlite:///{work / 'uncut.db'}")
    cut = optuna.load_study(study_name="resume_cnn", storage=f"sqlite:///{work / 'cut.db'}")
    left = list((work / "storage" / "checkpoints").rglob("*.npz"))
    shutil.rmtree(work, ignore_errors=True)

    by_number = {t.number: t for t in cut.trials}
    redone: dict[str, list[int]] = {"stop": [], "kill": []}
    interval_epochs: list[int] = []
    for retry in cut.trials:
        history = retry.system_attrs.get(keys.RETRY_HISTORY)
        if not history:
            continue
        original = by_number[history[-1]]
        start = (retry.user_attrs.get(keys.RESUMED_FROM) or {}).get("epoch", 0)
        # By number, not by the reason the trial was closed with: when the controller is killed
        # before it saw its worker die, the next run closes that trial with another reason.
        kind = "kill" if original.number == killed else "stop"
        redone[kind].append(len(original.intermediate_values) - start + 1)
        if kind == "kill":
            interval_epochs.append(math.ceil(CHECKPOINT_EVERY_S / _epoch_s(retry, keys)))
    cost = [_checkpoint_share(t, keys) for t in uncut.trials if t.state.name == "COMPLETE"]
    cost_all = sum(c[0] for c in cost) / max(sum(c[1] for c in cost), 1e-9)
    count, saved_s = resumed(cut.trials)
    trained = {name: sum(_epochs_trained(t, keys) for t in study.trials)
               for name, study in (("uncut", uncut), ("cut", cut))}
    stop_median = common.median(redone["stop"]) if redone["stop"] else float("nan")
    kill_max = max(redone["kill"], default=0)
    interval = max(interval_epochs, default=0)
    met = (bool(redone["stop"]) and stop_median <= 1 and bool(redone["kill"])
           and kill_max <= interval + 1 and cost_all <= 0.02 and not left
           and sum(t.state.name == "COMPLETE" for t in cut.trials) == trials)
    details = {"uncut_wall_s": uncut_wall, "cut_wall_s": cut_wall, "redone": redone,
               "interval_epochs": interval_epochs, "checkpoint_cost": cost_all,
               "checkpoint_cost_per_trial": [c[0] / c[1] for c in cost if c[1]],
               "resumed": count, "saved_s": saved_s, "epochs_trained": trained,
               "stop_to_exit_s": stop_s, "checkpoints_left": len(left),
               "default_cadence_s": CHECKPOINT_EVERY_S}
    return Row(12, f"a cut trial resumes: {trials} trials x {EPOCHS} epochs (cnn_lr, no pruning), "
                   f"{WORKERS} workers, cut by SIGTERM, a worker's SIGKILL, the controller's "
                   "SIGKILL",
               f"epochs redone per cut: stop median {stop_median:g} ({redone['stop']}), kill "
               f"{redone['kill']}; {trained['cut']} epochs in all; checkpoints cost "
               f"{cost_all:.2%} of training",
               f"never cut: {trained['uncut']} epochs; from epoch 1 each cut would redo "
               f"everything it reached",
               f"{count} resumed, {saved_s:.0f}s of training not redone; SIGTERM to exit "
               f"{stop_s:.1f}s; {len(left)} checkpoints left",
               f"median <= 1 after a stop; <= the cadence ({CHECKPOINT_EVERY_S:g}s: "
               f"{interval} epochs) + 1 after a kill; cost <= 2%", met, details)


def _cut_three_ways(work: Path, command: list[str]) -> tuple[float, int]:
    """Runs the cut sweep up to its third cut. Returns the seconds from SIGTERM to exit and the
    number of the trial whose worker was killed."""
    import optuna

    url = command[-1]
    sweep = _start(command, work)
    _running(sweep, url, lambda t: _this_run(t) >= CUT_AT)
    sent = time.monotonic()
    sweep.send_signal(signal.SIGTERM)
    sweep.wait(timeout=120)
    stop_s = time.monotonic() - sent
    sweep = _start(command, work)
    victim = _running(sweep, url, lambda t: _this_run(t) >= CUT_AT)
    os.kill(victim.user_attrs["sweeper.pid"], signal.SIGKILL)
    _running(sweep, url, lambda t: t.number != victim.number and _this_run(t) >= CUT_AT)
    sweep.kill()
    sweep.wait(timeout=60)
    deadline = time.time() + 60  # its workers leave on their own
    while time.time() < deadline and optuna.load_study(
            study_name="resume_cnn", storage=url).get_trials(
            states=(optuna.trial.TrialState.RUNNING,)):
        time.sleep(0.5)
    return stop_s, victim.number


def _start(command: list[str], work: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=work, env=common.child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _running(sweep: subprocess.Popen, url: str, ready):
    import optuna

    deadline = time.time() + 900
    while time.time() < deadline:
        if sweep.poll() is not None:
            raise RuntimeError("the sweep ended before the cut it waited for")
        try:
            running = optuna.load_study(study_name="resume_cnn", storage=url).get_trials(
                states=(optuna.trial.TrialState.RUNNING,))
        except Exception:  # not there yet
            running = []
        found = [t for t in running if ready(t)]
        if found:
            return found[0]
        time.sleep(0.2)
    sweep.kill()
    raise RuntimeError("no trial reached the epoch to cut at")


def _this_run(trial) -> int:
    """Epochs the trial trained in this run: those it reported, less those it resumed."""
    start = (trial.user_attrs.get("sweeper.resumed_from") or {}).get("epoch", 0)
    return len(trial.intermediate_values) - start


def _epochs_trained(trial, keys) -> int:
    start = (trial.user_attrs.get(keys.RESUMED_FROM) or {}).get("epoch", 0)
    return max(len(trial.intermediate_values) - start, 0)


def _epoch_s(trial, keys) -> float:
    seconds = trial.user_attrs.get(keys.SECONDS, {})
    ran = trial.user_attrs.get(keys.EPOCHS_RUN) or 1
    return max(seconds.get("epochs", seconds.get("train", 1.0)) / ran, 1e-3)


def _checkpoint_share(trial, keys) -> tuple[float, float]:
    seconds = trial.user_attrs.get(keys.SECONDS, {})
    return seconds.get("checkpoint", 0.0), seconds.get("train", 0.0)
