"""The worker pool on fake processes, in milliseconds: who starts where with which GPU, what an exit
means (done, recycle, crash, user error), when the sweep gives up, and how workers are stopped."""

from __future__ import annotations

import signal
import subprocess

import pytest

from sweeper.errors import SweeperError, SweepFailed
from sweeper.gpus import Slot
from sweeper.sweep.pool import CRASH_LIMIT, WorkerPool

EXIT_DONE, EXIT_RECYCLE = 0, 3


class FakeProcess:
    """A worker process whose exit the test decides. `stubborn` ones ignore SIGTERM."""

    def __init__(self, pid: int, stubborn: bool = False):
        self.pid = pid
        self.code: int | None = None
        self.signals: list[int] = []
        self.stubborn = stubborn

    def poll(self):
        return self.code

    def send_signal(self, sig):
        self.signals.append(sig)
        if sig == signal.SIGTERM and not self.stubborn:
            self.code = 130

    def wait(self, timeout=None):
        if self.code is None:
            raise subprocess.TimeoutExpired("worker", timeout)
        return self.code

    def kill(self):
        self.code = -9


class Spawner:
    def __init__(self):
        self.started: list[tuple[FakeProcess, list, dict]] = []
        self.stubborn = False

    def __call__(self, command, env, stdout, stderr, start_new_session):
        assert start_new_session and stderr == subprocess.STDOUT
        process = FakeProcess(1000 + len(self.started), self.stubborn)
        self.started.append((process, command, env))
        return process

    def live(self) -> list[FakeProcess]:
        return [p for p, _, _ in self.started if p.code is None]


@pytest.fixture
def pool(tmp_path):
    spawner, closed, said = Spawner(), [], []
    slots = [Slot(0, "0"), Slot(1, "1")]
    pool = WorkerPool(slots, ["sweeper", "worker"], {"SWEEPER_STORAGE": "sqlite:///x.db"},
                      tmp_path, lambda pids, why: closed.append((pids, why)), said.append,
                      spawn=spawner)
    return pool, spawner, closed, said


def test_one_worker_per_slot_pinned_to_its_gpu(pool, tmp_path):
    pool, spawner, closed, _ = pool
    pool.tend(accepting=True, work_left=True)
    assert [(env["CUDA_VISIBLE_DEVICES"], env["SWEEPER_WORKER_ID"]) for _, _, env in
            spawner.started] == [("0", "0"), ("1", "1")]
    assert all(env["SWEEPER_STORAGE"] == "sqlite:///x.db" and command == ["sweeper", "worker"]
               for _, command, env in spawner.started)
    assert {w.log_path for w in pool.workers} == {tmp_path / "worker-0.log",
                                                  tmp_path / "worker-1.log"}
    pool.tend(accepting=True, work_left=True)  # both still running: nothing new
    assert len(spawner.started) == 2 and not closed


def test_a_recycled_worker_is_replaced_and_a_finished_one_only_when_work_appears(pool):
    pool, spawner, closed, said = pool
    pool.tend(accepting=True, work_left=True)
    first, second = spawner.live()
    first.code, second.code = EXIT_RECYCLE, EXIT_DONE
    pool.tend(accepting=True, work_left=False)
    assert len(spawner.started) == 3  # the recycled slot got a fresh worker, the done one not
    assert spawner.started[2][2]["CUDA_VISIBLE_DEVICES"] == "0"
    pool.tend(accepting=True, work_left=True)  # a retry was queued: work for slot 1 again
    assert len(spawner.started) == 4 and spawner.started[3][2]["CUDA_VISIBLE_DEVICES"] == "1"
    assert not closed and not said


def test_no_new_worker_once_the_sweep_stops_accepting(pool):
    pool, spawner, _, _ = pool
    pool.tend(accepting=False, work_left=True)
    assert not spawner.started


def test_a_dead_worker_has_its_trials_closed_and_is_restarted_until_it_keeps_crashing(pool):
    pool, spawner, closed, said = pool
    (pool.log_dir / "worker-0.log").write_text("10:00:00 trial 3 COMPLETE\nSegmentation fault\n")
    pool.tend(accepting=True, work_left=True)
    for crash in range(1, CRASH_LIMIT + 1):
        victim = next(p for p, _, env in spawner.started
                      if env["CUDA_VISIBLE_DEVICES"] == "0" and p.code is None)
        victim.code = -9
        if crash < CRASH_LIMIT:
            pool.tend(accepting=True, work_left=True)
            assert closed[-1] == ([victim.pid], "the worker died (exit code -9)")
            assert said[-1] == "worker 0 exited with code -9: Segmentation fault; restarting"
        else:
            with pytest.raises(SweepFailed) as stopped:
                pool.tend(accepting=True, work_left=True)
            assert str(stopped.value).startswith(
                f"worker 0 crashed {CRASH_LIMIT} times in 10 minutes; last: Segmentation fault")
    assert len(closed) == CRASH_LIMIT


def test_a_worker_that_met_a_user_error_stops_the_sweep_with_its_line(pool):
    pool, spawner, closed, _ = pool
    (pool.log_dir / "worker-1.log").write_text("sweeper: error: data.npz: x_train is empty\n")
    pool.tend(accepting=True, work_left=True)
    spawner.started[1][0].code = 2
    with pytest.raises(SweeperError, match=r"^worker 1 stopped: data.npz: x_train is empty$"):
        pool.tend(accepting=True, work_left=True)
    assert closed == [([spawner.started[1][0].pid], "the worker died (exit code 2)")]


def test_stop_terms_every_worker_and_kills_and_closes_the_stubborn(pool):
    pool, spawner, closed, _ = pool
    spawner.stubborn = True
    pool.tend(accepting=True, work_left=True)
    stubborn = spawner.started[1][0]
    spawner.started[0][0].stubborn = False
    pool.stop()
    assert [p.signals for p, _, _ in spawner.started] == [[signal.SIGTERM], [signal.SIGTERM]]
    assert spawner.started[0][0].code == 130 and stubborn.code == -9
    assert closed == [([stubborn.pid], "interrupted: the worker was killed")]
    assert not pool.alive()


def test_drain_warns_every_live_worker(pool):
    pool, spawner, _, _ = pool
    pool.tend(accepting=True, work_left=True)
    pool.drain()
    assert [p.signals for p, _, _ in spawner.started] == [[signal.SIGUSR1], [signal.SIGUSR1]]


def _ask_for_successor(pool, slot: int) -> None:
    """What a worker close to its replacement does (sweeper.worker.handover)."""
    from sweeper.worker.handover import successor_marker

    successor_marker(pool.workers[slot].lock).touch()


def test_a_successor_starts_only_when_asked_and_takes_the_slot_warm(pool):
    pool, spawner, closed, said = pool
    pool.tend(accepting=True, work_left=True)
    pool.tend(accepting=True, work_left=True)
    assert len(spawner.started) == 2  # no successor without a request: short sweeps stay lean
    _ask_for_successor(pool, 0)
    pool.tend(accepting=True, work_left=True)
    assert len(spawner.started) == 3
    current, successor = spawner.started[0][0], spawner.started[2][0]
    envs = [env for _, _, env in spawner.started]
    assert envs[2]["SWEEPER_SLOT_LOCK"] == envs[0]["SWEEPER_SLOT_LOCK"] != envs[1]["SWEEPER_SLOT_LOCK"]
    assert envs[2]["CUDA_VISIBLE_DEVICES"] == "0"
    pool.tend(accepting=True, work_left=True)
    assert len(spawner.started) == 3  # the request was consumed

    current.code = EXIT_RECYCLE
    pool.tend(accepting=True, work_left=True)
    assert pool.workers[0].process is successor and pool.workers[0].successor is None
    assert len(spawner.started) == 3 and not closed and not said  # nothing new to start


def test_a_crash_is_covered_by_a_warm_successor(pool):
    pool, spawner, closed, said = pool
    pool.tend(accepting=True, work_left=True)
    _ask_for_successor(pool, 1)
    pool.tend(accepting=True, work_left=True)
    current, successor = spawner.started[1][0], spawner.started[2][0]
    current.code = -9
    pool.tend(accepting=True, work_left=True)
    assert closed == [([current.pid], "the worker died (exit code -9)")]
    assert pool.workers[1].process is successor and len(spawner.started) == 3
    assert said[-1].startswith("worker 1 exited with code -9")


def test_no_successor_when_no_work_is_left_and_both_are_stopped(pool):
    pool, spawner, closed, _ = pool
    pool.tend(accepting=True, work_left=True)
    _ask_for_successor(pool, 0)
    pool.tend(accepting=True, work_left=False)
    assert len(spawner.started) == 2
    pool.tend(accepting=True, work_left=True)  # the request still stands
    assert len(spawner.started) == 3
    pool.stop()
    assert [p.signals for p, _, _ in spawner.started] == [[signal.SIGTERM]] * 3
    assert not pool.alive() and not closed


def test_a_packed_worker_is_told_its_share_of_the_gpu(tmp_path):
    spawner = Spawner()
    slots = [Slot(0, "0", memory_mb=9000, memory_fraction=0.225), Slot(1, "1")]
    pool = WorkerPool(slots, ["sweeper", "worker"], {}, tmp_path, lambda *a: None, print,
                      spawn=spawner)
    pool.tend(accepting=True, work_left=True)
    packed, alone = (env for _, _, env in spawner.started)
    assert packed["SWEEPER_GPU_MEMORY_MB"] == "9000"
    assert packed["SWEEPER_GPU_MEMORY_FRACTION"] == "0.225"
    assert "SWEEPER_GPU_MEMORY_MB" not in alone and "SWEEPER_GPU_MEMORY_FRACTION" not in alone
