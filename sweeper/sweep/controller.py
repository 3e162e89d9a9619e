"""The sweep's policy: set up the study, keep one worker per slot busy until the budget is spent,
keep the store tidy, stop cleanly.

The controller never imports TensorFlow (fast to start, cannot grab a GPU). It talks to workers
only through the store, and to their processes only with signals (sweeper.sweep.pool). What it shows is
sweeper.sweep.progress's job.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper import defaults, keys
from sweeper.errors import StorageError
from sweeper.gpus import Slot, gpu_names, threads_per_worker
from sweeper.paths import check_study_name, private_folder, study_folder
from sweeper.pipeline.artifacts import ARTIFACT_DIR_ENV, artifact_dir
from sweeper.pipeline.checkpoint import remove_finished
from sweeper.results.occupancy import describe as describe_use
from sweeper.results.occupancy import runs_of, slot_use
from sweeper.space import SearchSpace
from sweeper.storage.counts import TrialCounts, study_counts
from sweeper.storage.errors import (
    describe_store_error,
    store_errors,
    store_problem,
    store_reason,
    store_trouble,
)
from sweeper.storage.locks import StoreLock, sweep_lock
from sweeper.storage.rdb import open_storage
from sweeper.storage.url import StoreUrl, mask_url
from sweeper.sweep.host_workers import ran_here_and_gone, wait_for_leftovers
from sweeper.sweep.pool import WorkerPool, worker_command, worker_env
from sweeper.sweep.progress import ProgressView, Snapshot, summary_lines
from sweeper.sweep.studies import free_study_name, prepare_study, study_names
from sweeper.sweep.study_info import masked_command, record_run, write_note
from sweeper.sweep.warm_start import choose_study, seed_study
from sweeper.trials import best_first, describe_resumed
from sweeper.worker.exits import EXIT_INTERRUPTED
from sweeper.worker.retries import fail_and_requeue, pending, queue_pending

POLL_S = 0.5
STORE_RETRY_S = 2
NOTE_EVERY_S = 60  # the study note (best so far) shown by optuna-dashboard


@dataclass
class SweepOptions:
    trials: int = defaults.TRIALS
    timeout_s: float | None = None
    heartbeat_s: int = defaults.HEARTBEAT_S
    recycle_after: int = defaults.RECYCLE_AFTER
    max_worker_memory_mb: float | None = defaults.MAX_WORKER_MEMORY_MB
    new_study: bool = False
    warm_start: str | None = None  # seed a new study from this one ('' = the space's last study)
    keep_models: int = defaults.KEEP_MODELS
    join: bool = False  # add workers to a study another controller sweeps (Slurm array tasks)
    log_dir: Path = Path("storage") / "logs"
    progress_every_s: float = 5.0


class Controller:
    def __init__(self, space: SearchSpace, storage_url: str, study_name: str, slots: list[Slot],
                 options: SweepOptions, out=sys.stdout, live: bool | None = None):
        self.space = space
        self.storage_url = storage_url
        self.study_name = study_name
        self.slots = slots
        self.options = options
        self.started = time.time()
        self.deadline = self.started + options.timeout_s if options.timeout_s else None
        self.progress = ProgressView(options.trials, 0, self.deadline, out, live,
                                     options.progress_every_s)
        self.stopping: str | None = None  # the signal that asks the sweep to stop
        self.draining = False  # Slurm's time limit is near: no new trials
        self.sweep_lock: StoreLock | None = None
        self.storage: Any = None  # the study store and the study, once opened
        self.study: Any = None
        self.pool: WorkerPool | None = None
        self.last_upkeep = self.started
        self.last_note = self.started

    def say(self, message: str) -> None:
        self.progress.say(message)

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> int:
        check_study_name(self.study_name)  # before anything is written
        with store_trouble(self.storage_url):
            counts = self._set_up()
        log_dir = study_folder(self.options.log_dir, self.study_name)
        private_folder(log_dir)
        self.progress.budget = self.options.trials
        self.progress.finished_at_start = counts.finished
        self.say(f"study '{self.study_name}' in {mask_url(self.storage_url)}: "
                 f"{counts.finished} of {self.options.trials} trials already done"
                 + (", resuming" if counts.finished else ""))
        self.say(f"{len(self.slots)} workers: " + ", ".join(
            f"{s.worker_id}:{'GPU ' + s.cuda_visible_devices if s.cuda_visible_devices else 'CPU'}"
            for s in self.slots) + f"; logs in {log_dir}")
        self.pool = WorkerPool(self.slots, self._worker_command(),
                               worker_env(self.storage_url, {ARTIFACT_DIR_ENV: str(artifact_dir())}),
                               log_dir, self._close_trials_of, self.say,
                               holder=f"{self.study_name} {self._packing()}")
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._on_drain)
        code = None
        try:
            code = self._watch()
        finally:
            # After a normal end the workers are already leaving; give them time to do so.
            self.pool.stop(wait_first=code == 0)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.sweep_lock is not None:
                self.sweep_lock.release()
            self.progress.close()
        with store_trouble(self.storage_url):  # the note at the end can meet a full disk too
            self._summary()
        return code

    def _packing(self) -> int:
        """Workers per GPU (1 on the CPU): what this sweep's leases say, so that no sweep packs a
        GPU that another packs otherwise."""
        gpus = {s.cuda_visible_devices for s in self.slots if s.cuda_visible_devices}
        return max(1, len(self.slots) // len(gpus)) if gpus else 1

    def _set_up(self) -> TrialCounts:
        """Opens (or creates) the study, ready for workers. Returns its counts."""
        parent = None
        if self.options.warm_start is not None:
            self.study_name, parent = choose_study(self.storage_url, self.space, self.study_name,
                                                   self.options.warm_start or None, self.say)
        elif self.options.new_study:
            self.study_name = free_study_name(self.study_name, study_names(self.storage_url))
        if not self.options.join:
            self._take_sweep_lock()
        # An earlier run's workers, left behind by a controller killed outright, are on their
        # way out: wait for them rather than put a second worker on their GPUs.
        wait_for_leftovers(self.say)
        self.storage, self.study = prepare_study(
            self.space, self.storage_url, self.study_name, self.options.trials,
            keep_models=self.options.keep_models, join=self.options.join)
        self.study_name = self.study.study_name
        self.options.trials = self.study.user_attrs[keys.BUDGET]
        if not self.options.join:  # named to whoever is refused while this one runs
            self.study.set_user_attr(keys.CONTROLLER, {
                "host": socket.gethostname(), "pid": os.getpid(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": masked_command(["sweeper", *sys.argv[1:]])})
        record_run(self.study, self.slots, gpu_names())
        # What an earlier run left unfinished runs again: trials of its dead workers here, and
        # retries that a full disk or a crash kept from being queued.
        self._close_trials(ran_here_and_gone, "the worker that ran it is gone")
        queue_pending(self.study, self.storage, ran_here_and_gone)
        seed_study(self.study, self.storage_url, self.space, self.options.trials, parent, self.say)
        write_note(self.study, self.space)
        return study_counts(self.study)

    def _take_sweep_lock(self) -> None:
        """One controller per study: a second one would put twice the workers on the GPUs."""
        lock = sweep_lock(self.storage_url, self.study_name)
        if lock.acquire(wait=False):
            self.sweep_lock = lock
            return
        holder: dict = {}
        try:
            import optuna

            study = optuna.load_study(study_name=self.study_name, storage=open_storage(
                self.storage_url, heartbeat_s=None, create=False))
            holder = study.user_attrs.get(keys.CONTROLLER) or {}
        except KeyError:
            pass
        who = (f"by '{holder.get('command', 'sweeper sweep')}' (pid {holder.get('pid', '?')} on "
               f"{holder.get('host', '?')}, since {holder.get('started', '?')})") if holder else \
            "by another sweeper"
        raise StorageError(
            f"study '{self.study_name}' in {mask_url(self.storage_url)} is already being swept "
            f"{who}; wait for it, stop it (Ctrl-C there), add workers to it with --join, or "
            f"start another study with --new-study")

    def _worker_command(self) -> list[str]:
        return worker_command(self.study_name, self.options.heartbeat_s,
                              self.options.recycle_after, threads_per_worker(len(self.slots)),
                              self.options.max_worker_memory_mb, self.deadline)

    # -- the loop ------------------------------------------------------------------------------

    def _watch(self) -> int:
        while True:
            if self.stopping:
                self.say(f"{self.stopping}: stopping workers")
                return EXIT_INTERRUPTED
            try:
                if self._watch_once():
                    return 0
            except store_errors() as e:  # the database restarts: wait for it
                if store_problem(e, midway=True):  # full disk, read-only, credentials
                    raise StorageError(describe_store_error(self.storage_url, e)) from None
                self.say(f"store unreachable ({store_reason(e)}); retrying")
                time.sleep(STORE_RETRY_S)
                continue
            time.sleep(POLL_S)

    def _watch_once(self) -> bool:
        """One look at the store and the workers. True when the sweep is over."""
        self._check_sweep_lock()
        counts = study_counts(self.study)
        budget = self.options.trials
        if counts.finished >= budget and counts.running == 0 and counts.waiting == 0:
            # Over, unless a trial cut short still waits for its retry to be queued.
            queue_pending(self.study, self.storage, ran_here_and_gone)
            return not pending(self.storage, keys.study_id(self.study))
        now = time.time()
        past_deadline = self.deadline is not None and now >= self.deadline
        pool = self.pool
        assert pool is not None, "the pool starts with the run"
        pool.tend(accepting=not (past_deadline or self.stopping or self.draining),
                  work_left=counts.may_start(budget))
        if not pool.alive():
            if self.draining:  # other machines' trials are theirs to finish
                self.say("time limit near: workers drained")
                return True
            if (past_deadline or not counts.may_start(budget)) and not counts.running:
                if past_deadline:
                    self.say("time limit reached")
                return True
        self._upkeep(counts, now)
        self.progress.show(Snapshot.of(self.study, counts, self.space.max_epochs))
        return False

    def _upkeep(self, counts: TrialCounts, now: float) -> None:
        if counts.running and now - self.last_upkeep > self.options.heartbeat_s:
            # Workers fail stale trials only when they ask for a new one; near the end there
            # may be no such ask, so the controller does it too.
            import optuna

            optuna.storages.fail_stale_trials(self.study)
            queue_pending(self.study, self.storage, ran_here_and_gone)
            self.last_upkeep = now
        if now - self.last_note > NOTE_EVERY_S:
            write_note(self.study, self.space)
            self.last_note = now

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

    def _close_trials_of(self, pids: list[int], reason: str) -> None:
        """Fail and requeue the RUNNING trials of these dead worker processes of this machine."""
        host = socket.gethostname()
        self._close_trials(lambda t: t.user_attrs.get(keys.PID) in pids
                           and t.user_attrs.get(keys.HOST) == host, reason)

    def _close_trials(self, dead, reason: str) -> None:
        """Fail the RUNNING trials for which `dead(trial)` is true and queue them again."""
        import optuna

        if self.study is None:
            return
        for trial in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if dead(trial):
                fail_and_requeue(self.study, self.storage, keys.trial_id(trial), reason)

    # -- signals -----------------------------------------------------------------------------

    def _on_drain(self, signum, frame) -> None:
        """Slurm's warning before the time limit: workers checkpoint their trial and leave."""
        self.draining = True
        if self.pool is not None:
            self.pool.drain()

    def _on_signal(self, signum, frame) -> None:
        if self.stopping:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.stopping = signal.Signals(signum).name

    # -- the end -------------------------------------------------------------------------------

    def _summary(self) -> None:
        import optuna

        counts = study_counts(self.study)
        write_note(self.study, self.space)
        self.progress.show(Snapshot.of(self.study, counts, self.space.max_epochs), final=True)
        trials = self.study.get_trials(deepcopy=False)
        remove_finished(self.study_name, trials)  # those of trials cut and not yet run again stay
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        now = time.time()
        this_run = [r for r in runs_of(trials, now) if r.start >= self.started]
        if this_run:  # how busy each slot was over the sweep's wall time
            self.say(f"\nslots over this run's {now - self.started:.0f}s:")
            for line in describe_use(slot_use(this_run, start=self.started, end=now)):
                self.say(line)
        store = StoreUrl.parse(self.storage_url)
        where = store.path or store.masked
        if (resumed := describe_resumed(trials)) is not None:
            self.say(resumed)
        for line in summary_lines(best_first(done, self.space.direction)[:5], str(where),
                                  self.space.name, self.study_name):
            self.say(line)
