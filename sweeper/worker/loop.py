"""The worker: one process that runs trials of one study until the shared budget is spent.

A worker needs only the store URL and the study name: the search space travels in the study
itself. So the same worker runs under the local controller, in a Slurm job, or by hand on any
machine, and they all cooperate through the store. It sees the GPUs its environment gives it
(CUDA_VISIBLE_DEVICES) and nothing else.

This module holds the loop's policy (when to stop, what failures in a row or a lost store mean,
when to make way for a fresh process); running one trial is sweeper.worker.trial_run.
How it ends is its exit code (sweeper.worker.exits).
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import statistics
import threading
import time
import warnings

from sweeper import defaults, keys
from sweeper.errors import StorageError
from sweeper.space import parse_space
from sweeper.storage.counts import count_trials, recent_trial_seconds
from sweeper.storage.errors import (
    describe_store_error,
    store_errors,
    store_problem,
    store_reason,
    store_trouble,
)
from sweeper.storage.locks import StoreLock, budget_lock
from sweeper.storage.rdb import open_storage
from sweeper.storage.url import mask_url
from sweeper.worker.exits import EXIT_DONE, EXIT_FAILING, EXIT_INTERRUPTED, EXIT_RECYCLE
from sweeper.worker.handover import SlotLock, give_up_on_successor, time_to_ask
from sweeper.worker.lifeline import controller_gone, watch_controller
from sweeper.worker.retries import fail_and_requeue, queue_retry
from sweeper.worker.trial_run import Ending, Finished, Outcome, run_one

# Below this many free slots (or twice the trials running, when more: a cluster's workers are
# mostly inside a trial), workers take the budget lock before starting a trial, so racing
# workers cannot overshoot; above it, no race can reach the end of the budget.
LOCK_MARGIN = 64
MAX_FAILURES_IN_A_ROW = 10
LAST_TRIALS_POLL_S = 0.5  # how soon a waiting worker sees the last trials end
STORE_OUTAGE_LIMIT_S = 600
STORE_CUT_REASON = "interrupted: the store could not be written"


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


# Set by SIGTERM/SIGINT, or when the controller is gone. The handler only sets it: an exception
# raised from a signal handler can land anywhere (inside a finalizer, where Python swallows it);
# training checks it every batch.
STOP = threading.Event()
_why_stopped = ["the worker was stopped"]
# Set by SIGUSR1 (Slurm's warning before a time limit), with STOP: the running trial is cut (its
# checkpoint written, its retry queued) and the worker leaves as one that is done. Finishing the
# trial instead could not finish an hour-long trial in the minutes the warning gives.
DRAIN = threading.Event()
DRAIN_REASON = "the time limit is near"


def request_stop(reason: str) -> None:
    if not STOP.is_set():
        _why_stopped[0] = reason
        log(f"stopping: {reason}")
    STOP.set()


def interrupted_reason() -> str:
    """Why the trial cut short by STOP failed (retries.mark adds whether it runs again)."""
    return f"interrupted: {_why_stopped[0]}"


def _request_stop(signum, frame):
    STOP.set()


def _request_drain(signum, frame):
    if not STOP.is_set():
        _why_stopped[0] = DRAIN_REASON
    DRAIN.set()
    STOP.set()


def run_worker(storage_url: str, study_name: str, *, worker_id: str | None = None,
               budget: int | None = None, deadline: float | None = None,
               recycle_after: int = defaults.RECYCLE_AFTER, max_memory_mb: float | None = None,
               heartbeat_s: int = defaults.HEARTBEAT_S, threads: int | None = None) -> int:
    started = time.monotonic()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _request_stop)
    signal.signal(signal.SIGUSR1, _request_drain)
    watch_controller(request_stop, EXIT_INTERRUPTED)  # before the slow imports: may stop them
    worker_id = worker_id or os.environ.get("SWEEPER_WORKER_ID") or f"{socket.gethostname()}-{os.getpid()}"

    with store_trouble(storage_url):
        study, space, stored_budget = open_study(storage_url, study_name, worker_id, heartbeat_s)
    budget = budget or stored_budget

    from sweeper.keras_backend import require_backend
    from sweeper.pipeline.backend import backend_version, configure_backend, visible_accelerators

    require_backend(space)
    configure_backend(threads)
    from sweeper.pipeline.bookkeeping import Bookkeeper
    from sweeper.pipeline.data import load_dataset
    from sweeper.pipeline.objective import make_objective

    load_dataset(space.config["dataset"], space.config["preprocess"])  # mapped from the cache
    # Everything loaded so far (TensorFlow, Keras, Optuna) lives as long as the process: move it
    # out of the collector's sight, so the collection after each trial scans only what the
    # trial made (a full collection here costs ~0.25 s per trial, after this ~0 s).
    gc.collect()
    gc.freeze()

    slot = SlotLock.from_env()
    # The GPU is touched (a context made) only once this worker may train on it, unless the
    # slot is its own sweep's: another sweep's trial may be using all of that GPU's memory.
    devices = None if slot is not None and slot.held_by_another_study(study_name) else \
        visible_accelerators()
    cuda_visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    startup_s = time.monotonic() - started
    log(f"worker {worker_id} on {socket.gethostname()} (pid {os.getpid()}, CUDA_VISIBLE_DEVICES="
        f"{cuda_visible!r}) joined study {study_name} in {mask_url(storage_url)}, ready after "
        f"{startup_s:.1f}s")
    if slot is not None and not _take_slot(slot):
        return EXIT_INTERRUPTED
    attrs = {keys.WORKER: worker_id, keys.HOST: socket.gethostname(), keys.PID: os.getpid(),
             keys.CUDA_VISIBLE_DEVICES: cuda_visible,
             keys.DEVICES: visible_accelerators() if devices is None else devices,
             keys.BACKEND: backend_version(), keys.THREADS: threads or os.cpu_count()}
    bookkeeper = Bookkeeper(say=log)
    objective = make_objective(space, attrs, STOP.is_set, bookkeeper)
    try:
        return run_trials(study, objective, budget, deadline=deadline,
                          recycle_after=recycle_after, max_memory_mb=max_memory_mb, slot=slot,
                          startup_s=startup_s, bookkeeper=bookkeeper)
    finally:
        if slot is not None:
            slot.release()  # its successor trains now, while this process winds down
        bookkeeper.drain()  # the last trials' artifacts


def _take_slot(slot: SlotLock) -> bool:
    """Waits, warm, until the worker before this one lets go of the slot."""
    waiting = time.monotonic()
    if not slot.take(STOP):
        log(f"stopped ({_why_stopped[0]}) while waiting for its slot")
        return False
    waited = time.monotonic() - waiting
    if waited > 0.1:
        log(f"took its slot after waiting {waited:.1f}s for the worker before it")
    return True


def open_study(storage_url: str, study_name: str, worker_id: str,
               heartbeat_s: int = defaults.HEARTBEAT_S):
    """(study with the space's sampler and pruner, space, stored budget) for a worker."""
    import optuna

    storage = open_storage(storage_url, heartbeat_s=heartbeat_s, create=False)
    try:
        summary = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise StorageError(f"no study '{study_name}' in {mask_url(storage_url)}; start it with "
                           f"'sweeper sweep' or check --study") from None
    if keys.SPACE_YAML not in summary.user_attrs:
        raise StorageError(f"study '{study_name}' was not made by sweeper (no search space stored)")
    space = parse_space(summary.user_attrs[keys.SPACE_YAML], source=f"study {study_name}")
    base_seed = space.config["sampler"].get("seed")
    seed = None
    if base_seed is not None:  # distinct streams per worker, or parallel workers propose twins
        # Counted, not loaded: a worker of a study with thousands of trials starts as fast.
        trials = count_trials(storage, keys.study_id(summary)).all
        seed = base_seed + 1000 * _number(worker_id) + trials
    from sweeper.pipeline.multi_objective import load_prunable_study

    # The space itself stays as stored: its fingerprint names it (on checkpoints, for one).
    study = load_prunable_study(study_name, storage, space.make_sampler(seed), space.make_pruner())
    return study, space, summary.user_attrs.get(keys.BUDGET)


def run_trials(study, objective, budget: int | None, *, deadline: float | None = None,
               recycle_after: int | None = None, max_memory_mb: float | None = None,
               slot: SlotLock | None = None, startup_s: float = 0.0, bookkeeper=None) -> int:
    """Run trials of `study` one at a time while the shared budget has room. Returns an exit code.

    Any objective works here (the tests use ones without TensorFlow). `bookkeeper`
    (sweeper.pipeline.bookkeeping) is the one the objective hands its background jobs to."""
    return TrialLoop(study, objective, budget, deadline=deadline, recycle_after=recycle_after,
                     max_memory_mb=max_memory_mb, slot=slot, startup_s=startup_s,
                     bookkeeper=bookkeeper).run()


class TrialLoop:
    """The worker's loop: claim a slot of the budget, run a trial, act on its outcome."""

    def __init__(self, study, objective, budget: int | None, *, deadline: float | None,
                 recycle_after: int | None, max_memory_mb: float | None,
                 slot: SlotLock | None = None, startup_s: float = 0.0, bookkeeper=None):
        self.study = study
        self.bookkeeper = bookkeeper
        self.objective = objective
        self.budget = budget
        self.deadline = deadline
        self.recycle_after = recycle_after
        self.max_memory_mb = max_memory_mb or float("inf")
        self.storage = keys.storage_of(study)
        self.rdb = keys.rdb_of(self.storage)
        self.study_id = keys.study_id(study)
        self.lock: StoreLock = budget_lock(self.rdb, study.study_name)
        self.ran = 0
        self.failures_in_a_row = 0
        self.slot = slot  # None: started by hand, no successor to call
        self.startup_s = startup_s
        self.trial_seconds: list[float] = []

    def run(self) -> int:
        while True:
            code = self._time_to_leave()
            if code is None:
                code = self._next()
            if code is not None:
                return code

    def _time_to_leave(self) -> int | None:
        gone = controller_gone()
        if gone:  # before the watch's next look: no trial is asked for after the controller died
            request_stop(gone)
        if DRAIN.is_set():
            log("asked to drain (time limit near); taking no new trials")
            return EXIT_DONE
        if STOP.is_set():
            log(f"stopped ({_why_stopped[0]})")
            return EXIT_INTERRUPTED
        if self.deadline is not None and time.time() >= self.deadline:
            log("time limit reached; taking no new trials")
            return EXIT_DONE
        return None

    def _next(self) -> int | None:
        """Claims a slot and runs a trial in it. An exit code when the worker is done."""
        import optuna

        try:
            free, running = _slot_free(self.rdb, self.study_id, self.budget, self.lock)
            if not free and running:
                # The last trials run elsewhere. If a worker running one dies, its trial must be
                # failed and retried by someone: stay until they end, checking their heartbeats.
                # Nothing trains here meanwhile: the slot is lent to whoever waits for it.
                self.lock.release()
                self._lend_slot()
                time.sleep(LAST_TRIALS_POLL_S)
                optuna.storages.fail_stale_trials(self.study)
                return None
        except store_errors() as e:
            self.lock.release()
            return self._store_lost(Outcome(Ending.STORE_LOST, store_error=e))
        if not free:
            log(f"budget of {self.budget} trials is taken; done after {self.ran} trials")
            return EXIT_DONE
        if self.slot is not None and not self.slot.held:
            # A trial was queued again while the slot was lent. Not waited for under the budget
            # lock: another sweep's worker may keep the slot for a while.
            self.lock.release()
            return None if self._take_slot_back(self.slot) else EXIT_INTERRUPTED
        self._call_successor_if_due()
        began = time.monotonic()
        outcome = run_one(self.study, self.objective, self.lock, interrupted_reason)
        _collect_after_trial(self.bookkeeper)
        self.trial_seconds.append(time.monotonic() - began)
        if outcome.ending is Ending.INTERRUPTED:
            _close_interrupted(self.study, outcome.trial, interrupted_reason())
            log(f"stopped ({_why_stopped[0]})")
            return EXIT_DONE if DRAIN.is_set() else EXIT_INTERRUPTED
        if outcome.ending is Ending.STORE_LOST:
            return self._store_lost(outcome)
        return self._finished(outcome.finished)

    def _lend_slot(self) -> None:
        """Lets go of the slot while this worker only waits for the study's last trials: on a
        shared GPU another sweep's worker trains there instead of the GPU idling."""
        if self.slot is not None and self.slot.held:
            log("waiting for the study's last trials, run by other workers; its slot is free for "
                "others meanwhile")
            self.slot.release()

    def _take_slot_back(self, slot: SlotLock) -> bool:
        """Waits for the lent slot, to run a trial queued again; False if asked to stop."""
        waiting = time.monotonic()
        if not slot.take_back(STOP):
            log(f"stopped ({_why_stopped[0]}) while waiting for its slot")
            return False
        log(f"took its slot back after {time.monotonic() - waiting:.1f}s to run a trial queued "
            "again")
        return True

    def _call_successor_if_due(self) -> None:
        """Asks for the next worker of this slot early enough for it to be warm in time."""
        if self.slot is None or self.slot.asked:
            return
        left = self.recycle_after - self.ran if self.recycle_after else None
        max_mb = None if self.max_memory_mb == float("inf") else self.max_memory_mb
        if left is None and max_mb is None:  # never replaced: nothing to ask for
            return
        # Before its own first trial, the pace of the study's last trials says it.
        seconds = self.trial_seconds or recent_trial_seconds(self.rdb, self.study_id)
        pace = statistics.median(seconds) if seconds else None
        if time_to_ask(left, pace, self.startup_s, _memory_mb(), max_mb):
            log("asking for the next worker of this slot to warm up")
            self.slot.ask_for_successor()

    def _finished(self, trial: Finished | None) -> int | None:
        self.ran += 1
        if trial is not None:
            log(trial.describe())
            failed = trial.state == "FAIL"
            self.failures_in_a_row = self.failures_in_a_row + 1 if failed else 0
            if self.failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
                log(f"{self.failures_in_a_row} trials failed in a row; last: {trial.reason or '?'}")
                return EXIT_FAILING
        memory = _memory_mb()
        if memory > self.max_memory_mb or self._due_and_covered():
            log(f"recycling after {self.ran} trials ({memory:.0f} MB resident)")
            return EXIT_RECYCLE
        return None

    def _due_and_covered(self) -> bool:
        """Due for replacement, and leaving now leaves no idle slot: the successor asked for is
        warm (or none was asked for, or it has waited for one long enough)."""
        if not self.recycle_after or self.ran < self.recycle_after:
            return False
        if self.slot is None or not self.slot.asked or self.slot.successor_ready():
            return True
        if self.ran == self.recycle_after:
            log("due for replacement; running trials until the next worker is warm")
        asked_s = self.slot.successor_asked_s()
        if give_up_on_successor(self.ran, self.recycle_after, asked_s, self.startup_s):
            log(f"the next worker is not warm {asked_s:.1f}s after it was asked for; leaving "
                "anyway")
            return True
        return False

    def _store_lost(self, outcome: Outcome) -> int | None:
        """The database went away (restart, network): wait for it, then queue the trial it cut
        short again. What waiting cannot cure (full disk, read-only, credentials) stops us."""
        cause = outcome.store_error
        assert cause is not None
        if store_problem(cause, midway=True):
            try:  # queue the cut-short trial again while the store may still take it
                _close_interrupted(self.study, outcome.trial, STORE_CUT_REASON)
            except store_errors():
                pass  # it stays RUNNING; the next sweep closes it and runs it again
            raise StorageError(describe_store_error(str(self.rdb.url), cause)) from None
        if not _wait_for_store(self.rdb, self.study_id, cause):
            return EXIT_INTERRUPTED if STOP.is_set() else EXIT_FAILING
        _close_interrupted(self.study, outcome.trial, STORE_CUT_REASON)
        return None


def _wait_for_store(rdb, study_id: int, error: BaseException) -> bool:
    """Retry with backoff until the store answers again (True) or for 10 minutes (False)."""
    log(f"store unreachable ({store_reason(error)}); retrying with backoff")
    started, wait = time.time(), 0.5
    while time.time() - started < STORE_OUTAGE_LIMIT_S:
        if STOP.wait(wait):  # asked to stop: its controller, or the next sweep, closes the trial
            log("stopped while waiting for the store")
            return False
        try:
            count_trials(rdb, study_id)
            log(f"store back after {time.time() - started:.0f}s")
            return True
        except store_errors():
            wait = min(wait * 2, 15)
    log(f"store unreachable for {STORE_OUTAGE_LIMIT_S}s; giving up")
    return False


def _collect_after_trial(bookkeeper=None) -> None:
    """Frees what the trial left, then freezes what survives. A collection scans only objects
    made since the last freeze, and TensorFlow keeps every trial's traced graphs (~16,000 objects
    for the digits CNN): unfrozen, each collection, those during training too, would scan all
    earlier trials' again (measured: the clean-up after a trial took 17 ms at the first trial and
    77 ms at the tenth). Recycling bounds what is kept.

    Nothing is done while a background job of `bookkeeper` (sweeper.pipeline.bookkeeping) still
    holds the trial's model, whose file it writes while the next trial trains: frozen objects in
    reference cycles are never freed, and the model keeps most of the trial alive. The job
    collects once it has run; the next trial's collection freezes what survives."""
    if bookkeeper is not None and bookkeeper.holds_objects:
        return
    gc.collect()
    gc.freeze()


def _slot_free(storage, study_id: int, budget: int | None, lock: StoreLock) -> tuple[bool, bool]:
    """(Is there a trial to start?, are trials running?) Near the end of the budget, answer under
    the lock and keep holding it until the new trial exists (the trial's run releases it)."""
    if budget is None:
        return True, False
    counts = count_trials(storage, study_id)
    # Waiting retries too: two workers that both saw one would both start, and the one that
    # found it gone would create a new trial past the budget.
    if budget - counts.claimed <= max(LOCK_MARGIN, 2 * counts.running):
        lock.acquire()
        counts = count_trials(storage, study_id)
    return counts.may_start(budget), counts.running > 0


def _close_interrupted(study, trial, reason: str) -> None:
    """The trial cut short by a signal or a store outage is failed with its reason and queued to
    run again (see sweeper.worker.retries for why failing comes after marking)."""
    import optuna

    if trial is None:
        return
    storage = keys.storage_of(study)
    trial_id = keys.trial_id(trial)
    state = storage.get_trial(trial_id).state
    if state == optuna.trial.TrialState.RUNNING:  # the signal came outside the objective
        fail_and_requeue(study, storage, trial_id, reason)
    elif state == optuna.trial.TrialState.FAIL:  # Optuna failed it on the way out
        queue_retry(study, storage, trial_id)


def _number(worker_id: str) -> int:
    digits = "".join(ch for ch in str(worker_id) if ch.isdigit())
    return int(digits[-6:]) if digits else 0


def _memory_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20
