"""The worker: one process that runs trials of one study until the shared budget is spent.

A worker needs only the store URL and the study name: the search space travels in the study
itself. So the same worker runs under the local controller, in a Slurm job, or by hand on any
machine, and they all cooperate through the store. It sees the GPUs its environment gives it
(CUDA_VISIBLE_DEVICES) and nothing else.

Exit codes: 0 = no work left (budget spent or deadline passed), 3 = asks to be replaced by a fresh
process (TensorFlow leaks memory across trials), 130 = stopped by a signal or because the controller
that started it is gone (sweeper.lifeline), 2 = user error, 1 = too many failures in a row or a bug.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import threading
import time
import warnings

from sweeper.errors import StorageError, SweeperError
from sweeper.lifeline import watch_controller
from sweeper.retries import fail_and_requeue, mark, queue_retry
from sweeper.space import parse_space
from sweeper.storage import (BudgetLock, count_trials, describe_store_error, mask_url,
                             open_storage, rdb_of, store_cause, store_errors, store_problem,
                             store_reason, store_trouble)

EXIT_DONE, EXIT_RECYCLE, EXIT_FAILING, EXIT_INTERRUPTED = 0, 3, 1, 130
# Below this many free slots, workers take the budget lock before starting a trial, so racing
# workers cannot overshoot; above it, no race can reach the end of the budget.
LOCK_MARGIN = 64
MAX_FAILURES_IN_A_ROW = 10
LAST_TRIALS_POLL_S = 0.5  # how soon a waiting worker sees the last trials end
SPACE_ATTR, BUDGET_ATTR, HASH_ATTR = "sweeper.space_yaml", "sweeper.n_trials", "sweeper.space_hash"


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def configure_backend(threads: int | None) -> None:
    """Call before the first Keras import: quiet logs, size thread pools, grow GPU memory."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX: grow like TF does
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    for gpu in tf.config.list_physical_devices("GPU"):
        # Take GPU memory as needed instead of all of it at start.
        tf.config.experimental.set_memory_growth(gpu, True)


def visible_accelerators() -> list[str]:
    """The GPUs the Keras backend of this process can use (empty: it trains on the CPU)."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return [d.name for d in tf.config.list_logical_devices("GPU")]
        if backend == "jax":
            import jax

            return [str(d) for d in jax.devices() if d.platform == "gpu"]
        if backend == "torch":
            import torch

            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except Exception:  # a broken driver must not stop the worker: it reports no GPU
        pass
    return []


# Set by SIGTERM/SIGINT, or when the controller is gone. The handler only sets it: an exception
# raised from a signal handler can land anywhere (inside a finalizer, where Python swallows it);
# training checks it every batch.
STOP = threading.Event()
_why_stopped = ["the worker was stopped"]


# Set by SIGUSR1 (Slurm's warning before a time limit): finish the running trial, start no other.
DRAIN = threading.Event()


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
    DRAIN.set()


def run_worker(storage_url: str, study_name: str, *, worker_id: str | None = None,
               budget: int | None = None, deadline: float | None = None,
               recycle_after: int = 25, max_memory_mb: float | None = None,
               heartbeat_s: int = 20, threads: int | None = None) -> int:
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

    configure_backend(threads)
    from sweeper.pipeline.objective import make_objective

    # Everything loaded so far (TensorFlow, Keras, Optuna) lives as long as the process: move it
    # out of the collector's sight, so the collection after each trial scans only what the
    # trial made (a full collection here costs ~0.25 s per trial, after this ~0 s).
    gc.collect()
    gc.freeze()

    attrs = {"worker": worker_id, "host": socket.gethostname(), "pid": os.getpid(),
             "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
             "devices": visible_accelerators()}
    log(f"worker {worker_id} on {attrs['host']} (pid {attrs['pid']}, CUDA_VISIBLE_DEVICES="
        f"{attrs['cuda_visible_devices']!r}) joined study {study_name} in {mask_url(storage_url)}")
    return run_trials(study, make_objective(space, attrs, STOP.is_set), budget, deadline=deadline,
                      recycle_after=recycle_after, max_memory_mb=max_memory_mb)


def open_study(storage_url: str, study_name: str, worker_id: str, heartbeat_s: int = 20):
    """(study with the space's sampler and pruner, space, stored budget) for a worker."""
    import optuna

    storage = open_storage(storage_url, heartbeat_s=heartbeat_s, create=False)
    try:
        summary = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise StorageError(f"no study '{study_name}' in {mask_url(storage_url)}; start it with "
                           f"'sweeper sweep' or check --study") from None
    if SPACE_ATTR not in summary.user_attrs:
        raise StorageError(f"study '{study_name}' was not made by sweeper (no search space stored)")
    space = parse_space(summary.user_attrs[SPACE_ATTR], source=f"study {study_name}")
    base_seed = space.config["sampler"].get("seed")
    if base_seed is not None:  # distinct streams per worker, or parallel workers propose twins
        space.config["sampler"]["seed"] = base_seed + 1000 * _number(worker_id) + len(summary.trials)
    study = optuna.load_study(study_name=study_name, storage=storage,
                              sampler=space.make_sampler(), pruner=space.make_pruner())
    return study, space, summary.user_attrs.get(BUDGET_ATTR)


def run_trials(study, objective, budget: int | None, *, deadline: float | None = None,
               recycle_after: int | None = None, max_memory_mb: float | None = None) -> int:
    """Run trials of `study` one at a time while the shared budget has room. Returns an exit code.

    Any objective works here (the tests use ones without TensorFlow)."""
    import optuna

    rdb = rdb_of(study._storage)
    lock = BudgetLock(rdb, study.study_name)
    current: dict = {}
    lost_store = store_errors()

    def claimed_objective(trial):
        lock.release()  # the trial exists now: other workers will count it
        current["trial"] = trial
        try:
            return objective(trial)
        except SweeperError as e:  # bad data or model code: every trial would fail the same way
            current["user_error"] = e
            raise
        except KeyboardInterrupt:  # noted while the trial can still be written to
            mark(trial.storage, trial._trial_id, interrupted_reason())
            raise
        except lost_store as e:
            # Not the trial's fault: escape Optuna's catch so the loop waits for the store and
            # queues this trial again instead of counting it as failed.
            raise _StoreLost() from e

    ran = failures_in_a_row = 0
    while True:
        if STOP.is_set():
            log(f"stopped ({_why_stopped[0]})")
            return EXIT_INTERRUPTED
        if DRAIN.is_set():
            log("asked to drain (time limit near); taking no new trials")
            return EXIT_DONE
        if deadline is not None and time.time() >= deadline:
            log("time limit reached; taking no new trials")
            return EXIT_DONE
        try:
            free, running = _slot_free(rdb, study._study_id, budget, lock)
            if not free and running:
                # The last trials run elsewhere. If a worker running one dies, its trial must be
                # failed and retried by someone: stay until they end, checking their heartbeats.
                lock.release()
                time.sleep(LAST_TRIALS_POLL_S)
                optuna.storages.fail_stale_trials(study)
                continue
            if not free:
                log(f"budget of {budget} trials is taken; done after {ran} trials")
                return EXIT_DONE
            current.clear()
            # No gc_after_trial: a full collection costs tens of ms, and the Keras objective
            # already collects in keras.backend.clear_session().
            study.optimize(claimed_objective, n_trials=1, catch=(Exception,),
                           callbacks=[lambda _, frozen: current.update(frozen=frozen)])
        except (_StoreLost, AssertionError, *lost_store) as e:
            # The database went away (restart, network): wait for it, then queue the trial
            # it cut short again, like an interrupted one.
            cause = store_cause(e)
            if cause is None:  # an AssertionError with no store error behind it: a bug
                raise
            lock.release()
            if store_problem(cause, midway=True):  # full disk, read-only, credentials
                try:  # queue the cut-short trial again while the store may still take it
                    _close_interrupted(study, current.get("trial"), STORE_CUT_REASON)
                except lost_store:
                    pass  # it stays RUNNING; the next run's heartbeat check retries it
                raise StorageError(describe_store_error(str(rdb.url), cause)) from None
            if not _wait_for_store(rdb, study._study_id, cause):
                return EXIT_INTERRUPTED if STOP.is_set() else EXIT_FAILING
            _close_interrupted(study, current.get("trial"), STORE_CUT_REASON)
            continue
        except KeyboardInterrupt:
            _close_interrupted(study, current.get("trial"), interrupted_reason())
            log(f"stopped ({_why_stopped[0]})")
            return EXIT_INTERRUPTED
        finally:
            lock.release()
        ran += 1
        if "user_error" in current:
            raise current["user_error"]
        frozen = current.get("frozen")  # the finished trial, as Optuna hands it to callbacks
        if frozen is not None:
            log(_describe(frozen))
            failed = frozen.state == optuna.trial.TrialState.FAIL
            failures_in_a_row = failures_in_a_row + 1 if failed else 0
            if failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
                log(f"{failures_in_a_row} trials failed in a row; last: "
                    f"{frozen.user_attrs.get('sweeper.fail_reason', '?')}")
                return EXIT_FAILING
        if (recycle_after and ran >= recycle_after) or _memory_mb() > (max_memory_mb or float("inf")):
            log(f"recycling after {ran} trials ({_memory_mb():.0f} MB resident)")
            return EXIT_RECYCLE


STORE_OUTAGE_LIMIT_S = 600
STORE_CUT_REASON = "interrupted: the store could not be written"


class _StoreLost(KeyboardInterrupt):
    """The store failed during a trial. A KeyboardInterrupt so Optuna's catch=(Exception,)
    lets it through (after marking the trial FAIL if it still can)."""


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


def _slot_free(storage, study_id: int, budget: int | None, lock: BudgetLock) -> tuple[bool, bool]:
    """(Is there a trial to start?, are trials running?) Near the end of the budget, answer under
    the lock and keep holding it until the new trial exists (the objective releases it)."""
    if budget is None:
        return True, False
    counts = count_trials(storage, study_id)
    # Waiting retries too: two workers that both saw one would both start, and the one that
    # found it gone would create a new trial past the budget.
    if budget - counts.claimed <= LOCK_MARGIN:
        lock.acquire()
        counts = count_trials(storage, study_id)
    return counts.may_start(budget), counts.running > 0


def _close_interrupted(study, trial, reason: str) -> None:
    """The trial cut short by a signal or a store outage is failed with its reason and queued to
    run again (see sweeper.retries for why failing comes after marking)."""
    import optuna

    if trial is None:
        return
    storage = study._storage
    frozen = storage.get_trial(trial._trial_id)
    if frozen.state == optuna.trial.TrialState.RUNNING:  # the signal came outside the objective
        fail_and_requeue(study, storage, trial._trial_id, reason)
    elif frozen.state == optuna.trial.TrialState.FAIL:  # Optuna failed it on the way out
        queue_retry(study, storage, trial._trial_id)


def _describe(trial) -> str:
    state = trial.state.name
    reason = trial.user_attrs.get("sweeper.prune_reason") or trial.user_attrs.get("sweeper.fail_reason")
    detail = reason or (f"F1 {trial.value:.4f}" if trial.value is not None else "")
    return f"trial {trial.number} {state}: {detail}"


def _number(worker_id: str) -> int:
    digits = "".join(ch for ch in str(worker_id) if ch.isdigit())
    return int(digits[-6:]) if digits else 0


def _memory_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20

