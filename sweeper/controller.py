"""The sweep: set up the study, start one worker per slot, watch them, show progress, stop cleanly.

The controller never imports TensorFlow (fast to start, cannot grab a GPU). It talks to workers
only through the store, and to their processes only with signals.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path


from sweeper.artifacts import ARTIFACT_DIR_ENV, DEFAULT_KEEP_MODELS, KEEP_MODELS_ATTR, artifact_dir
from sweeper.errors import StorageError, SweeperError, SweepFailed
from sweeper.gpus import Slot, gpu_names, threads_per_worker
from sweeper.host_workers import ran_here_and_gone, wait_for_leftovers
from sweeper.lifeline import CONTROLLER_ENV
from sweeper.paths import check_study_name, private_folder, study_folder
from sweeper.retries import fail_and_requeue, pending, queue_pending
from sweeper.space import SearchSpace
from sweeper.study_info import masked_command, record_run, write_note
from sweeper.storage import (STORAGE_ENV, SweepLock, TrialCounts, count_trials, describe_store_error,
                             mask_url, open_storage, sqlite_path, store_errors, store_problem,
                             store_reason, store_trouble)
from sweeper.worker import (BUDGET_ATTR, EXIT_DONE, EXIT_INTERRUPTED, EXIT_RECYCLE, HASH_ATTR,
                            SPACE_ATTR)

STOP_GRACE_S = 8  # SIGTERM, then SIGKILL after this: all workers are gone within 10 s
CRASH_LIMIT = 3  # crashes of one slot within CRASH_WINDOW_S stop the sweep
CRASH_WINDOW_S = 600
POLL_S = 0.5
STORE_RETRY_S = 2
NOTE_EVERY_S = 60  # the study note (best so far) shown by optuna-dashboard
CONTROLLER_ATTR = "sweeper.controller"  # who is sweeping the study now


@dataclass
class SweepOptions:
    trials: int = 40
    timeout_s: float | None = None
    heartbeat_s: int = 20
    recycle_after: int = 25
    max_worker_memory_mb: float | None = 8192
    new_study: bool = False
    keep_models: int = DEFAULT_KEEP_MODELS
    join: bool = False  # add workers to a study another controller sweeps (Slurm array tasks)
    log_dir: Path = Path("storage") / "logs"
    progress_every_s: float = 5.0


@dataclass
class _Worker:
    slot: Slot
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    crashes: list[float] = field(default_factory=list)
    done: bool = False


def prepare_study(space: SearchSpace, storage_url: str, study_name: str, trials: int,
                  keep_models: int = DEFAULT_KEEP_MODELS, join: bool = False):
    """Create the study or resume it. A study made from a different space is refused (the
    controller's --new-study picks a free name first). Joining keeps the budget the study
    already has. Returns (storage, study)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    check_study_name(study_name)
    storage = open_storage(storage_url)
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if study_name in existing:
        stored = existing[study_name].user_attrs.get(HASH_ATTR)
        if stored is None:
            raise StorageError(f"study '{study_name}' in {mask_url(storage_url)} was not made by "
                               "sweeper; pick another name with --study")
        if stored != space.fingerprint:
            raise StorageError(
                f"{space.source} changed since study '{study_name}' was created, so its trials "
                f"are not comparable; pass --new-study (make sweep ... NEW=1) to start a fresh "
                f"study, --study NAME to pick one, or restore the file")
    study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True,
                                direction=space.direction)
    if study_name not in existing:
        study.set_user_attr(SPACE_ATTR, space.text)
        study.set_user_attr(HASH_ATTR, space.fingerprint)
        study.set_user_attr("sweeper.space_name", space.name)
        study.set_user_attr("sweeper.created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    if not (join and BUDGET_ATTR in study.user_attrs):
        study.set_user_attr(BUDGET_ATTR, trials)
        study.set_user_attr(KEEP_MODELS_ATTR, keep_models)
    return storage, study


def free_study_name(base: str, existing) -> str:
    """base, else the first of base-2, base-3... not in `existing`."""
    name, n = base, 2
    while name in existing:
        name, n = f"{base}-{n}", n + 1
    return name


def study_names(storage_url: str) -> list[str]:
    import optuna

    return [s.study_name for s in optuna.get_all_study_summaries(
        open_storage(storage_url), include_best_trial=False)]


class Controller:
    def __init__(self, space: SearchSpace, storage_url: str, study_name: str, slots: list[Slot],
                 options: SweepOptions, out=sys.stdout):
        self.space, self.storage_url, self.slots, self.options = space, storage_url, slots, options
        self.study_name, self.out = study_name, out
        self.workers = [_Worker(slot) for slot in slots]
        self.stopping: str | None = None
        self.draining = False
        self.started = time.time()
        self.deadline = self.started + options.timeout_s if options.timeout_s else None
        self.sweep_lock: SweepLock | None = None

    # -- public ------------------------------------------------------------------------------

    def run(self) -> int:
        check_study_name(self.study_name)  # before anything is written
        with store_trouble(self.storage_url):
            if self.options.new_study:
                self.study_name = free_study_name(self.study_name, study_names(self.storage_url))
            if not self.options.join:
                self._take_sweep_lock()
            # An earlier run's workers, left behind by a controller killed outright, are on
            # their way out: wait for them rather than put a second worker on their GPUs.
            wait_for_leftovers(self.say)
            self.storage, self.study = prepare_study(
                self.space, self.storage_url, self.study_name, self.options.trials,
                keep_models=self.options.keep_models, join=self.options.join)
            self.options.trials = self.study.user_attrs[BUDGET_ATTR]
            if not self.options.join:  # named to whoever is refused while this one runs
                self.study.set_user_attr(CONTROLLER_ATTR, {
                    "host": socket.gethostname(), "pid": os.getpid(),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "command": masked_command(["sweeper", *sys.argv[1:]])})
            record_run(self.study, self.slots, gpu_names())
            # What an earlier run left unfinished runs again: trials of its dead workers here,
            # and retries that a full disk or a crash kept from being queued.
            self._close_trials(ran_here_and_gone, "the worker that ran it is gone")
            queue_pending(self.study, self.storage, ran_here_and_gone)
            write_note(self.study, self.storage, self.space)
            counts = count_trials(self.storage, self.study._study_id)
        self.study_name = self.study.study_name
        self.log_dir = study_folder(self.options.log_dir, self.study_name)
        private_folder(self.log_dir)
        self.finished_at_start = counts.finished
        self.say(f"study '{self.study_name}' in {mask_url(self.storage_url)}: "
                 f"{counts.finished} of {self.options.trials} trials already done"
                 + (", resuming" if counts.finished else ""))
        self.say(f"{len(self.slots)} workers: " + ", ".join(
            f"{s.worker_id}:{'GPU ' + s.cuda_visible_devices if s.cuda_visible_devices else 'CPU'}"
            for s in self.slots) + f"; logs in {self.log_dir}")
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._on_drain)
        code = None
        try:
            code = self._watch()
        finally:
            # After a normal end the workers are already leaving; give them time to do so.
            self._stop_workers(wait_first=code == 0)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.sweep_lock is not None:
                self.sweep_lock.release()
        self._summary()
        return code

    def _take_sweep_lock(self) -> None:
        """One controller per study: a second one would put twice the workers on the GPUs."""
        lock = SweepLock(self.storage_url, self.study_name)
        if lock.try_acquire():
            self.sweep_lock = lock
            return
        holder = {}
        with contextlib.suppress(KeyError):
            import optuna

            study = optuna.load_study(study_name=self.study_name, storage=open_storage(
                self.storage_url, heartbeat_s=None, create=False))
            holder = study.user_attrs.get(CONTROLLER_ATTR) or {}
        who = (f"by '{holder.get('command', 'sweeper sweep')}' (pid {holder.get('pid', '?')} on "
               f"{holder.get('host', '?')}, since {holder.get('started', '?')})") if holder else \
            "by another sweeper"
        raise StorageError(
            f"study '{self.study_name}' in {mask_url(self.storage_url)} is already being swept "
            f"{who}; wait for it, stop it (Ctrl-C there), add workers to it with --join, or "
            f"start another study with --new-study")

    def say(self, message: str) -> None:
        print(message, file=self.out, flush=True)

    # -- the loop ----------------------------------------------------------------------------

    def _watch(self) -> int:
        self._last = {"progress": 0.0, "stale_check": time.time(), "line": "", "note": time.time()}
        lost_store = store_errors()
        while True:
            if self.stopping:
                self.say(f"{self.stopping}: stopping workers")
                return EXIT_INTERRUPTED
            try:
                done = self._watch_once()
            except lost_store as e:  # the database restarts: wait for it
                if store_problem(e, midway=True):  # full disk, read-only, credentials
                    raise StorageError(describe_store_error(self.storage_url, e)) from None
                self.say(f"store unreachable ({store_reason(e)}); retrying")
                time.sleep(STORE_RETRY_S)
                continue
            if done:
                return 0
            time.sleep(POLL_S)

    def _watch_once(self) -> bool:
        """One look at the store and the workers. True when the sweep is over."""
        last = self._last
        self._check_sweep_lock()
        counts = count_trials(self.storage, self.study._study_id)
        if counts.finished >= self.options.trials and counts.running == 0 and counts.waiting == 0:
            # Over, unless a trial cut short still waits for its retry to be queued.
            queue_pending(self.study, self.storage, ran_here_and_gone)
            return not pending(self.storage, self.study._study_id)
        now = time.time()
        past_deadline = self.deadline is not None and now >= self.deadline
        self._tend_workers(counts, past_deadline)
        alive = [w for w in self.workers if w.process is not None]
        if not alive:
            if self.draining:  # other machines' trials are theirs to finish
                self.say("time limit near: workers drained")
                return True
            if (past_deadline or not counts.may_start(self.options.trials)) and not counts.running:
                if past_deadline:
                    self.say("time limit reached")
                return True
        if counts.running and now - last["stale_check"] > self.options.heartbeat_s:
            # Workers fail stale trials only when they ask for a new one; near the end there
            # may be no such ask, so the controller does it too.
            import optuna

            optuna.storages.fail_stale_trials(self.study)
            queue_pending(self.study, self.storage, ran_here_and_gone)
            last["stale_check"] = now
        if now - last["note"] > NOTE_EVERY_S:
            write_note(self.study, self.storage, self.space)
            last["note"] = now
        if now - last["progress"] >= self.options.progress_every_s:
            line = self._progress_line(counts)
            if line != last["line"]:
                self.say(line)
                last["line"] = line
            last["progress"] = now
        return False

    def _tend_workers(self, counts: TrialCounts, past_deadline: bool) -> None:
        """Start idle slots when there is work, and judge the workers that exited."""
        for worker in self.workers:
            if worker.process is not None:
                code = worker.process.poll()
                if code is None:
                    continue
                pid, worker.process = worker.process.pid, None
                if code == EXIT_DONE:
                    worker.done = True
                elif code != EXIT_RECYCLE:
                    # Its trial would stay RUNNING until its heartbeat goes stale: close it now.
                    self._close_trials(_run_by(pid), f"the worker died (exit code {code})")
                    self._on_crash(worker, code)
            if past_deadline or self.stopping or self.draining:
                continue
            if worker.done and not counts.may_start(self.options.trials):
                continue
            if counts.may_start(self.options.trials) or not worker.done:
                self._start(worker)

    def _on_crash(self, worker: _Worker, code: int) -> None:
        last = _last_line(worker.log_path)
        if code == 2:  # a user error (bad data, a full store...): restarting cannot help
            raise SweeperError(f"worker {worker.slot.worker_id} stopped: "
                               f"{last.removeprefix('sweeper: error: ')}")
        now = time.time()
        worker.crashes = [t for t in worker.crashes if now - t < CRASH_WINDOW_S] + [now]
        self.say(f"worker {worker.slot.worker_id} exited with code {code}: {last}; restarting")
        if len(worker.crashes) >= CRASH_LIMIT:
            raise SweepFailed(
                f"worker {worker.slot.worker_id} crashed {len(worker.crashes)} times in "
                f"{CRASH_WINDOW_S // 60} minutes; last: {last} (see {worker.log_path})")

    def _start(self, worker: _Worker) -> None:
        slot = worker.slot
        env = dict(os.environ)
        env.update({
            "CUDA_VISIBLE_DEVICES": slot.cuda_visible_devices,  # set before TF is imported
            STORAGE_ENV: self.storage_url,  # not in argv, where `ps` would show a password
            "SWEEPER_WORKER_ID": str(slot.worker_id),
            "PYTHONUNBUFFERED": "1",
            ARTIFACT_DIR_ENV: str(artifact_dir()),
            CONTROLLER_ENV: str(os.getpid()),  # the worker stops if this process goes
        })
        command = [sys.executable, "-m", "sweeper", "worker", "--study", self.study_name,
                   "--heartbeat", str(self.options.heartbeat_s),
                   "--recycle-after", str(self.options.recycle_after),
                   "--threads", str(threads_per_worker(len(self.slots)))]
        if self.options.max_worker_memory_mb:
            command += ["--max-memory-mb", str(int(self.options.max_worker_memory_mb))]
        if self.deadline is not None:
            command += ["--deadline", f"{self.deadline:.0f}"]
        worker.log_path = self.log_dir / f"worker-{slot.worker_id}.log"
        with open(worker.log_path, "ab") as log_file:
            # Own process group: the terminal's Ctrl-C reaches the controller, which stops
            # workers in order instead of all at once mid-write.
            worker.process = subprocess.Popen(command, env=env, stdout=log_file,
                                              stderr=subprocess.STDOUT, start_new_session=True)
        worker.done = False

    def _on_drain(self, signum, frame) -> None:
        """Slurm's warning before the time limit: workers finish their trial and start no other."""
        self.draining = True
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGUSR1)

    def _on_signal(self, signum, frame) -> None:
        if self.stopping:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.stopping = signal.Signals(signum).name

    def _stop_workers(self, wait_first: bool = False) -> None:
        """SIGTERM all workers (each fails its trial and queues it again), SIGKILL stragglers,
        then close any trial a killed worker left RUNNING."""
        running = [w for w in self.workers if w.process is not None and w.process.poll() is None]
        if wait_first:
            deadline = time.time() + STOP_GRACE_S
            for w in running:
                try:
                    w.process.wait(timeout=max(0.0, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    pass
            running = [w for w in running if w.process.poll() is None]
        for w in running:
            w.process.send_signal(signal.SIGTERM)
        deadline = time.time() + STOP_GRACE_S
        killed = []
        for w in running:
            try:
                w.process.wait(timeout=max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                w.process.kill()
                w.process.wait()
                killed.append(w.process.pid)
        for w in self.workers:
            w.process = None
        if killed and hasattr(self, "study"):
            self._close_trials(_run_by(*killed), "interrupted: the worker was killed")

    def _close_trials(self, dead, reason: str) -> None:
        """Fail the RUNNING trials for which `dead(trial)` is true and queue them again."""
        import optuna

        for trial in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if dead(trial):
                fail_and_requeue(self.study, self.storage, trial._trial_id, reason)

    def _check_sweep_lock(self) -> None:
        """A database restart ends the session that holds a server's sweep lock: take it again
        at once, so that a second sweep started after the restart is still refused."""
        if self.sweep_lock is None or self.sweep_lock.still_held():
            return
        self.sweep_lock = None
        raise StorageError(
            f"study '{self.study_name}' in {mask_url(self.storage_url)}: the database restarted "
            "and another sweep took this study over meanwhile; this one stops (its trials cut "
            "short run again)")

    # -- output ------------------------------------------------------------------------------

    def _progress_line(self, counts: TrialCounts) -> str:
        import optuna

        elapsed = time.time() - self.started
        budget = self.options.trials
        best = ""
        try:
            trial = self.study.best_trial
            best = f" | best F1 {trial.value:.4f} (trial {trial.number})"
        except ValueError:
            pass
        done_now = counts.finished - self.finished_at_start
        eta = ""
        if done_now > 0:
            eta = f" | ETA {_clock(elapsed / done_now * max(0, budget - counts.finished))}"
        running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        states = " ".join(
            f"w{t.user_attrs.get('sweeper.worker', '?')}:t{t.number}@e{len(t.intermediate_values)}"
            for t in sorted(running, key=lambda t: str(t.user_attrs.get("sweeper.worker"))))
        return (f"[{_clock(elapsed)}] {counts.finished}/{budget} done (complete {counts.complete}, "
                f"pruned {counts.pruned}, failed {counts.failed - counts.retries}) | running "
                f"{counts.running}{best}{eta}" + (f" | {states}" if states else ""))

    def _summary(self) -> None:
        import optuna

        if not hasattr(self, "study"):
            return
        counts = count_trials(self.storage, self.study._study_id)
        write_note(self.study, self.storage, self.space)
        self.say(self._progress_line(counts))
        done = [t for t in self.study.get_trials(deepcopy=False,
                                                 states=(optuna.trial.TrialState.COMPLETE,))]
        reverse = self.space.direction == "maximize"
        done.sort(key=lambda t: t.value, reverse=reverse)
        if done:
            self.say("\nbest trials (validation F1, test F1, epochs, params):")
            for t in done[:5]:
                params = ", ".join(f"{k}={_short(v)}" for k, v in t.params.items())
                self.say(f"  #{t.number:<4} {t.value:.4f}  {t.user_attrs.get('sweeper.test_f1', float('nan')):.4f}"
                         f"  {t.user_attrs.get('sweeper.epochs_run', '?'):>3}  {params}")
        where = sqlite_path(self.storage_url) or mask_url(self.storage_url)
        self.say(f"\nstudy '{self.study_name}' is in {where}")
        target = f"--study {self.study_name}" if self.study_name != self.space.name else ""
        self.say(f"inspect it: sweeper dashboard {self.space.name} {target}".rstrip()
                 + f"   (or: make dashboard SPACE={self.space.name})")
        self.say(f"report:     sweeper report {self.space.name} {target}".rstrip())


def _run_by(*pids: int):
    """Whether a trial ran in one of these worker processes of this machine."""
    host = socket.gethostname()
    return lambda trial: (trial.user_attrs.get("sweeper.pid") in pids
                          and trial.user_attrs.get("sweeper.host") == host)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _last_line(path: Path | None) -> str:
    if path is None or not path.exists():
        return "no log"
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else "no output"
