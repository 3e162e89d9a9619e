"""The background bookkeeping of a worker (sweeper.pipeline.bookkeeping): a job waits until the
next trial trains (or START_AFTER_S), never runs while Keras's session is cleared, all have run
when the worker leaves, a failing one is said and survived; a model it holds is not frozen for
good by the collection after a trial."""

from __future__ import annotations

import gc
import threading
import time
import weakref

from sweeper.pipeline.bookkeeping import Bookkeeper
from sweeper.worker.loop import _collect_after_trial


def test_a_job_waits_for_the_next_trial_to_train_then_runs():
    ran = threading.Event()
    keeper = Bookkeeper(start_after_s=60)
    keeper.hand_over(ran.set, "job")
    assert not ran.wait(0.5), "ran before the next trial's first step"
    keeper.start()  # the next trial's first step has run
    assert ran.wait(10)


def test_a_job_runs_after_start_after_s_when_no_trial_trains():
    ran = threading.Event()
    Bookkeeper(start_after_s=0.3).hand_over(ran.set, "job")
    assert ran.wait(10)


def test_no_job_runs_while_quiet_and_a_running_one_is_waited_for():
    log: list[str] = []
    release = threading.Event()
    keeper = Bookkeeper(start_after_s=0)

    def slow():
        log.append("job 1 started")
        release.wait(10)
        log.append("job 1 ended")

    keeper.hand_over(slow, "job 1")
    while not log:
        time.sleep(0.01)
    entered = threading.Event()

    def clear_session():
        with keeper.quiet():
            entered.set()
            log.append("cleared")
            keeper.hand_over(lambda: log.append("job 2"), "job 2")
            time.sleep(0.3)  # job 2 is due at once, yet must not run in here
            log.append("quiet ended")

    clearing = threading.Thread(target=clear_session)
    clearing.start()
    assert not entered.wait(0.3), "quiet() did not wait for the running job"
    release.set()
    clearing.join(10)
    keeper.drain()
    assert log == ["job 1 started", "job 1 ended", "cleared", "quiet ended", "job 2"]


def test_drain_runs_held_jobs_at_once_and_waits_for_all():
    done: list[int] = []
    keeper = Bookkeeper(start_after_s=60)
    for n in range(3):
        keeper.hand_over(lambda n=n: (time.sleep(0.05), done.append(n)), f"job {n}")
    keeper.drain()
    assert done == [0, 1, 2] and keeper.pending == 0


def test_a_failing_job_is_said_in_one_line_and_the_next_runs():
    said: list[str] = []
    ran = threading.Event()
    keeper = Bookkeeper(start_after_s=0, say=said.append)

    def broken():
        raise OSError("disk full")

    keeper.hand_over(broken, "artifacts of trial 3")
    keeper.hand_over(ran.set, "artifacts of trial 4")
    keeper.drain()
    assert ran.is_set()
    assert said == ["artifacts of trial 3: not written (OSError: disk full)"]


class _Cyclic:
    """Stands for a Keras model: objects that refer to each other."""

    def __init__(self):
        self.me = self


def _model_held_by_a_pending_job() -> tuple[Bookkeeper, weakref.ref]:
    """A keeper whose one job holds a model with a reference cycle, and a weak reference to it."""
    gc.collect()
    keeper = Bookkeeper(start_after_s=60)
    model = _Cyclic()
    keeper.hand_over(lambda m=model: None, "job", holds_objects=True)
    return keeper, weakref.ref(model)


def test_a_model_held_by_a_pending_job_is_freed_as_soon_as_the_job_has_run():
    keeper, alive = _model_held_by_a_pending_job()
    assert keeper.holds_objects
    try:
        _collect_after_trial(keeper)  # as the worker's loop does
        assert alive() is not None  # its job has not run
        keeper.drain()
        # Freed by the collection after the job, not one of the next trial's (none here).
        assert alive() is None, "the model outlived its job"
    finally:
        gc.unfreeze()


def test_frozen_while_held_the_model_would_never_be_freed():
    """Why the loop does not freeze while a job holds a model: the rule above must matter."""
    keeper, alive = _model_held_by_a_pending_job()
    try:
        _collect_after_trial()  # collected and frozen, with no regard for the job
        keeper.drain()
        gc.collect()
        assert alive() is not None
    finally:
        gc.unfreeze()
        gc.collect()
