"""The study store on SQLite, PostgreSQL and MySQL: URLs, masking, counting, the shared budget.

Worker processes here are spawned, not forked: earlier tests may have loaded TensorFlow into this
process, and a fork of a process with TensorFlow's threads can deadlock in the child."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pickle
import signal
import sqlite3
import time

import optuna
import pytest
from conftest import race_workers
from sqlalchemy import event

from sweeper.errors import StorageError
from sweeper.storage import sqlite
from sweeper.storage.counts import count_trials
from sweeper.storage.locks import budget_lock, sweep_lock
from sweeper.storage.rdb import open_storage, retry_callback
from sweeper.storage.url import default_storage_url, mask_url, resolve_storage_url, sqlite_path
from sweeper.worker.exits import EXIT_DONE
from sweeper.worker.loop import run_trials

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_url_precedence(project, monkeypatch):
    assert resolve_storage_url(None, "cnn_lr") == default_storage_url("cnn_lr")
    assert default_storage_url("cnn_lr").endswith(str(project / "storage" / "cnn_lr.db"))
    monkeypatch.setenv("SWEEPER_STORAGE", "postgresql+psycopg://u@h/env")
    assert resolve_storage_url(None, "cnn_lr") == "postgresql+psycopg://u@h/env"
    assert resolve_storage_url("sqlite:///x.db", "cnn_lr") == "sqlite:///x.db"


def test_bare_path_is_a_sqlite_store(project):
    assert resolve_storage_url("runs/a.db", "s") == f"sqlite:///{project / 'runs' / 'a.db'}"


@pytest.mark.parametrize("url, shown", [
    ("postgresql+psycopg://alice:s3cret@db:5432/sweeps", "postgresql+psycopg://alice:***@db:5432/sweeps"),
    ("mysql+pymysql://root:p%40ss@127.0.0.1/test", "mysql+pymysql://root:***@127.0.0.1/test"),
    ("sqlite:////tmp/a.db", "sqlite:////tmp/a.db"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
])
def test_password_is_masked(url, shown):
    assert mask_url(url) == shown


def test_bad_url_message_hides_password():
    with pytest.raises(StorageError) as caught:
        resolve_storage_url("postgresql://alice:s3cret@db:notaport/x", "s")
    assert "s3cret" not in str(caught.value)


def test_read_only_open_creates_nothing(tmp_path):
    path = tmp_path / "none" / "study.db"
    with pytest.raises(StorageError, match="no study store"):
        open_storage(f"sqlite:///{path}", create=False)
    assert not path.exists() and not path.parent.exists()


def test_sqlite_store_uses_wal_and_a_private_folder(tmp_path):
    url = f"sqlite:///{tmp_path / 'private' / 'study.db'}"
    storage = open_storage(url)
    optuna.create_study(storage=storage, study_name="s")
    path = sqlite_path(url)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (path.parent.stat().st_mode & 0o777) == 0o700


def test_counts_follow_retries(storage_url):
    storage = open_storage(storage_url)
    study = optuna.create_study(storage=storage, study_name="counts")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    first = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(first, state=optuna.trial.TrialState.FAIL)
    retry_callback()(study, study.trials[first.number])  # the retry takes the failed trial's slot
    counts = count_trials(storage, study._study_id)
    assert (counts.complete, counts.failed, counts.waiting, counts.retries) == (3, 1, 1, 1)
    assert counts.claimed == 4 and counts.finished == 3
    assert counts.may_start(4)  # the waiting retry may run
    # The retry fails too and is retried again: still one slot for the chain.
    retry = study.ask()
    study.tell(retry, state=optuna.trial.TrialState.FAIL)
    retry_callback()(study, study.trials[retry.number])
    counts = count_trials(storage, study._study_id)
    assert counts.claimed == 4 and counts.finished == 3 and counts.waiting == 1


def test_budget_lock_excludes_other_processes(storage_url):
    storage = open_storage(storage_url)
    optuna.create_study(storage=storage, study_name="locked")
    lock = budget_lock(storage, "locked")
    lock.acquire()
    ctx = multiprocessing.get_context("spawn")
    got_it = ctx.Event()
    child = ctx.Process(target=_take_lock, args=(storage_url, got_it))
    child.start()
    time.sleep(1.0)
    assert not got_it.is_set(), "a second process took the lock while it was held"
    lock.release()
    assert got_it.wait(20), "the lock was not handed over after release"
    child.join(20)


def _take_lock(url, event):
    storage = open_storage(url)
    lock = budget_lock(storage, "locked")
    lock.acquire()
    event.set()
    lock.release()


def test_one_sweep_lock_per_study_released_when_its_holder_dies(storage_url):
    open_storage(storage_url)  # the store exists, as it does once a sweep has begun
    ctx = multiprocessing.get_context("spawn")
    holding, stop = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_sweep_lock, args=(storage_url, "busy", holding, stop))
    holder.start()
    assert holding.wait(30), "the first sweep could not take the lock"
    second = sweep_lock(storage_url, "busy")
    assert not second.acquire(wait=False), "a second sweep took the lock of a running one"
    other_study = sweep_lock(storage_url, "another")
    assert other_study.acquire(wait=False), "the lock of one study blocked another study"
    other_study.release()
    holder.kill()  # no clean release: the kernel or the server must free it
    holder.join(20)
    deadline = time.time() + 20
    while not second.acquire(wait=False):
        assert time.time() < deadline, "the lock of a killed sweep was never released"
        time.sleep(0.2)
    second.release()


def _hold_sweep_lock(url, study, holding, stop):
    lock = sweep_lock(url, study)
    if lock.acquire(wait=False):
        holding.set()
    stop.wait(120)


@pytest.mark.parametrize("workers, budget", [(8, 60), (32, 160)])
def test_parallel_workers_hit_the_budget_exactly(storage_url, workers, budget):
    """Many workers race for the last slots: exactly `budget` trials, none RUNNING, no error."""
    storage = open_storage(storage_url)
    optuna.create_study(storage=storage, study_name="race")
    storage.engine.dispose()
    codes = race_workers(storage_url, "race", budget, workers)
    assert codes == [EXIT_DONE] * workers
    trials = optuna.load_study(study_name="race", storage=open_storage(storage_url)).trials
    states = [t.state for t in trials]
    assert len(trials) == budget
    assert states.count(optuna.trial.TrialState.COMPLETE) == budget
    assert all(len(t.intermediate_values) == 5 for t in trials)


def test_workers_racing_for_one_waiting_retry_start_it_once(storage_url):
    """The budget is taken but for one queued retry: of 8 workers that all see it, one runs it
    and none creates a trial past the budget."""
    storage = open_storage(storage_url, heartbeat_s=None)
    study = optuna.create_study(storage=storage, study_name="retry-race")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=5)
    failed = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    retry_callback()(study, study.trials[failed.number])
    storage.engine.dispose()
    assert race_workers(storage_url, "retry-race", 6, workers=8) == [EXIT_DONE] * 8
    counts = count_trials(open_storage(storage_url), study._study_id)
    assert (counts.complete, counts.failed, counts.running, counts.waiting) == (6, 1, 0, 0)


def test_many_processes_may_create_the_same_store_at_once(storage_url):
    """Workers (or a dashboard) opening a brand-new store together all get it, none an error."""
    url = storage_url
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_open_and_report, args=(url, queue)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sorted(queue.get(timeout=5) for _ in procs) == ["ok"] * 6


def _open_and_report(url, queue):
    try:
        open_storage(url)
        queue.put("ok")
    except Exception as e:  # report, so the test shows what went wrong
        queue.put(repr(e))


def _sleepy_worker(url: str, study_name: str, budget: int, queue) -> None:
    """A standalone worker (no controller) whose trials take ~2 s, reporting every 0.2 s."""
    import contextlib
    import io
    import os

    storage = open_storage(url, heartbeat_s=1)
    study = optuna.load_study(study_name=study_name, storage=storage)

    def objective(trial):
        queue.put(("started", os.getpid(), trial.number))
        for step in range(10):
            time.sleep(0.2)
            trial.report(step, step)
        return 1.0

    with contextlib.redirect_stdout(io.StringIO()):
        run_trials(study, objective, budget)


def test_a_dead_workers_trial_is_failed_by_heartbeat_and_retried(storage_url):
    """Workers on other machines have no controller watching them: a worker killed mid-trial
    stops beating, another worker fails its trial after the grace period and runs it again."""
    storage = open_storage(storage_url)
    optuna.create_study(storage=storage, study_name="hb")
    storage.engine.dispose()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_sleepy_worker, args=(storage_url, "hb", 4, queue))
             for _ in range(2)]
    for p in procs:
        p.start()
    _, victim_pid, victim_trial = queue.get(timeout=60)
    time.sleep(0.5)
    os.kill(victim_pid, signal.SIGKILL)
    for p in procs:
        p.join(120)
    survivor = [p for p in procs if p.pid != victim_pid][0]
    assert survivor.exitcode == 0
    trials = optuna.load_study(study_name="hb", storage=open_storage(storage_url)).trials
    assert trials[victim_trial].state == optuna.trial.TrialState.FAIL
    assert [t.state for t in trials].count(optuna.trial.TrialState.COMPLETE) == 4
    assert not [t for t in trials if t.state in (optuna.trial.TrialState.RUNNING,
                                                 optuna.trial.TrialState.WAITING)]
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == victim_trial]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.COMPLETE


@pytest.mark.parametrize("message, fix, stops_a_running_sweep", [
    ("database or disk is full", "disk holding the store is full", True),
    ('could not extend file "base/16384/2619": No space left on device', "is full", True),
    ("(1114, \"The table 'trials' is full\")", "is full", True),
    ("attempt to write a readonly database", "not writable", True),
    ('FATAL:  password authentication failed for user "me"', "user name and password", True),
    ("(1045, \"Access denied for user 'me'@'host' (using password: YES)\")", "user name and", True),
    ('connection to server at "db", port 5432 failed: Connection refused', "server running", False),
    ("server closed the connection unexpectedly", None, False),
    ('FATAL:  database "sweeps" does not exist', "create the database", False),
    ("(sqlite3.OperationalError) no such table: version_info", "no Optuna studies", False),
])
def test_store_problems_are_told_apart(message, fix, stops_a_running_sweep):
    """What retrying cannot cure gets its fix; only full, read-only and credentials stop a sweep
    that is running (a server restart is waited for)."""
    from sweeper.storage.errors import describe_store_error, store_problem

    wrapped = RuntimeError("An exception is raised during the commit.")
    wrapped.__cause__ = sqlite3.OperationalError(message)  # Optuna's wrapper hides the reason
    assert (store_problem(wrapped) is not None) == (fix is not None)
    if fix:
        assert fix in store_problem(wrapped)
    assert (store_problem(wrapped, midway=True) is not None) == stops_a_running_sweep
    line = describe_store_error("postgresql+psycopg://me:pw1234@db/sweeps", wrapped)
    assert "\n" not in line and "pw1234" not in line and message.splitlines()[0][:40] in line


def _end_every_session(url: str) -> int:
    """What a database restart does to its clients: every session on the database ends (and
    with it the session locks). Returns how many it ended."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    admin = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                     isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if admin.dialect.name == "postgresql":
            ended = conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                "AND pid <> pg_backend_pid()", (name,)).fetchall()
        else:
            ids = [row[0] for row in conn.exec_driver_sql(
                "SELECT id FROM information_schema.processlist WHERE db = %s "
                "AND id <> CONNECTION_ID()", (name,))]
            for session in ids:
                conn.exec_driver_sql(f"KILL {int(session)}")
            ended = ids
    admin.dispose()
    return len(ended)


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_the_sweep_lock_is_taken_again_after_a_database_restart(kind):
    """A server's sweep lock lives in one session; when the database drops every session, the
    holder takes it again, and a second sweep is still refused. If the second got there first,
    the holder learns that it lost the lock."""
    from conftest import _server_database

    url, drop = _server_database(kind)
    try:
        open_storage(url)
        first, second = sweep_lock(url, "study"), sweep_lock(url, "study")
        assert first.acquire(wait=False)
        assert _end_every_session(url) >= 1
        assert first.still_held(), "the holder did not take its lock again"
        assert not second.acquire(wait=False), "a second sweep took the lock after the restart"
        assert first.still_held()  # a live session: nothing to do

        assert _end_every_session(url) >= 1
        assert second.acquire(wait=False)  # the second sweep starts first this time
        assert not first.still_held(), "two sweeps both think they hold the study"
        second.release()
        first.release()
    finally:
        drop()


def test_a_sqlite_sweep_lock_is_held_for_the_life_of_its_process(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    lock = sweep_lock(url, "study")
    assert lock.acquire(wait=False) and lock.still_held()
    lock.release()
    assert not lock.still_held()


def test_a_reading_transaction_never_waits_for_a_sqlite_writer(tmp_path):
    """While another program holds SQLite's write lock, reading a trial and counting trials
    answer at once (deferred transactions in WAL mode), and a write waits for the lock."""
    import threading

    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = open_storage(url, heartbeat_s=None)
    study = optuna.create_study(storage=storage, study_name="read")
    trial = study.ask()
    trial_id = trial._trial_id
    writer = sqlite3.connect(tmp_path / "study.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another program's write transaction, left open
    try:
        started = time.monotonic()
        assert storage.get_trial(trial_id).state == optuna.trial.TrialState.RUNNING
        assert count_trials(storage, study._study_id).running == 1
        assert time.monotonic() - started < 2  # a locked read would wait out the busy timeout
        wrote = threading.Event()
        thread = threading.Thread(
            target=lambda: (storage.set_trial_user_attr(trial_id, "k", 1), wrote.set()),
            daemon=True)
        thread.start()
        assert not wrote.wait(1.0)  # a write takes the write lock, so it waits
    finally:
        writer.rollback()
        writer.close()
    assert wrote.wait(30)
    assert storage.get_trial(trial_id).user_attrs == {"k": 1}


def test_stale_trials_are_looked_for_at_most_four_times_per_heartbeat_interval(storage_url):
    """Optuna looks before every trial; a trial goes stale only after 3 intervals, so each
    process looks at most every quarter interval, and a stale trial is still found then."""
    from sqlalchemy import text

    storage = open_storage(storage_url, heartbeat_s=4)
    study = optuna.create_study(storage=storage, study_name="stale")
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    with storage.engine.begin() as conn:  # its worker stopped beating a minute ago
        conn.execute(text("UPDATE trial_heartbeats SET heartbeat = :t WHERE trial_id = :id"),
                     {"t": "2000-01-01 00:00:00", "id": trial._trial_id})
    assert storage._get_stale_trial_ids(study._study_id) == [trial._trial_id]
    assert storage._get_stale_trial_ids(study._study_id) == []  # looked just now
    time.sleep(1.1)  # a quarter of 4 s
    assert storage._get_stale_trial_ids(study._study_id) == [trial._trial_id]


def _statements(storage) -> list[str]:
    """Every SQL statement the storage's engine sends from now on."""
    import sqlalchemy

    sent: list[str] = []
    sqlalchemy.event.listen(storage.engine, "before_cursor_execute",
                            lambda conn, cursor, statement, *rest: sent.append(statement))
    return sent


def test_a_report_is_one_statement_and_keeps_optunas_rules(storage_url):
    """Reports are made every epoch: one statement each, stored exactly as Optuna stores them
    (NaN and infinities included); a step written again is overwritten, and a finished trial
    is refused with Optuna's own error."""
    storage = open_storage(storage_url, heartbeat_s=None)
    study = optuna.create_study(storage=storage, study_name="reports")
    trial = study.ask()
    sent = _statements(storage)
    trial.report(0.5, 1)
    assert len(sent) == 1 and sent[0].lstrip().upper().startswith("INSERT"), sent
    for step, value in [(2, float("nan")), (3, float("inf")), (4, -float("inf"))]:
        trial.report(value, step)
    storage.set_trial_intermediate_value(trial._trial_id, 1, 0.75)  # the storage API overwrites
    study.tell(trial, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_intermediate_value(trial._trial_id, 5, 0.1)
    stored = optuna.load_study(study_name="reports", storage=storage_url).trials[0]
    values = stored.intermediate_values
    assert values[1] == 0.75 and values[3] == float("inf") and values[4] == -float("inf")
    assert values[2] != values[2] and set(values) == {1, 2, 3, 4}  # NaN; nothing at step 5


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_server_connections_are_pinged_only_after_sitting_idle(kind, monkeypatch):
    """No round trip is spent checking a connection used a moment ago; one idle past
    IDLE_PING_S is checked, and a dead one is replaced without the caller seeing an error."""
    from conftest import _server_database

    from sweeper.storage import server

    url, drop = _server_database(kind)
    try:
        storage = open_storage(url, heartbeat_s=None)
        study = optuna.create_study(storage=storage, study_name="pings")
        pings = []
        real_ping = storage.engine.dialect.do_ping
        monkeypatch.setattr(storage.engine.dialect, "do_ping",
                            lambda conn: pings.append(conn) or real_ping(conn))
        for _ in range(5):
            study.ask()
        assert pings == [], "connections used a moment ago were pinged"
        monkeypatch.setattr(server, "IDLE_PING_S", 0.0)  # read at each check: all idle now
        storage.engine.dispose()
        storage = open_storage(url, heartbeat_s=None)  # listeners made with the new threshold
        monkeypatch.setattr(storage.engine.dialect, "do_ping",
                            lambda conn: pings.append(conn) or real_ping(conn))
        optuna.load_study(study_name="pings", storage=storage).ask()
        assert _end_every_session(url) >= 1  # the pooled connection dies, as in a restart
        time.sleep(0.05)
        assert len(optuna.load_study(study_name="pings", storage=storage).trials) == 6
        assert pings, "an idle connection was used without a check"
    finally:
        drop()


def test_a_trials_first_heartbeat_is_one_statement_and_later_ones_update_it(storage_url):
    from sqlalchemy import text

    storage = open_storage(storage_url, heartbeat_s=4)
    study = optuna.create_study(storage=storage, study_name="beats")
    trial = study.ask()
    sent = _statements(storage)
    storage.record_heartbeat(trial._trial_id)
    assert len(sent) == 1 and sent[0].lstrip().upper().startswith("INSERT"), sent
    with storage.engine.begin() as conn:
        conn.execute(text("UPDATE trial_heartbeats SET heartbeat = :t WHERE trial_id = :id"),
                     {"t": "2000-01-01 00:00:00", "id": trial._trial_id})
    storage.record_heartbeat(trial._trial_id)  # a later beat: Optuna's own update
    with storage.engine.connect() as conn:
        beats = conn.execute(text("SELECT heartbeat FROM trial_heartbeats WHERE trial_id = :id"),
                             {"id": trial._trial_id}).all()
    assert len(beats) == 1 and str(beats[0][0]) > "2001", beats  # one row, beaten just now
    assert storage._get_stale_trial_ids(study._study_id) == []


class _RecordingLock:
    """Stands in for the budget lock, held: records when it was released (later releases are
    no-ops, as the real lock's are)."""

    def __init__(self, events: list):
        self.events, self.held = events, True

    def release(self) -> None:
        if self.held:
            self.events.append("lock released")
        self.held = False


def test_the_budget_lock_is_released_once_the_trial_exists(tmp_path):
    """Racing workers near the end of the budget wait for one trial's INSERT, not for the rest
    of its start (the sampler, reading it back, its first heartbeat): the lock goes as soon as
    the trial (new, or a waiting retry) is in the store."""
    from sweeper.worker.trial_run import run_one

    events: list[str] = []

    class RecordingSampler(optuna.samplers.RandomSampler):
        def before_trial(self, study, trial):  # at ask, before the trial is read back
            events.append("sampler told")
            super().before_trial(study, trial)

    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_s=5)
    study = optuna.create_study(storage=storage, study_name="claims", sampler=RecordingSampler())
    study.enqueue_trial({})  # a waiting trial: taken, not created
    for _ in range(2):
        run_one(study, lambda trial: 1.0, _RecordingLock(events), lambda: "interrupted")
        assert events == ["lock released", "sampler told"], events
        events.clear()
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]


def test_starting_a_sweep_reads_no_trials_of_the_studies_in_the_store(storage_url):
    """A shared server store holds many studies: creating or resuming one reads names and the
    study's own attributes, never every trial of every study."""
    import sqlalchemy

    from sweeper.space import parse_space
    from sweeper.sweep.studies import prepare_study

    space = parse_space("dataset: {name: digits}\nmodel: {name: mlp}\npruner: none\nparams:\n"
                        "  dropout: {type: float, low: 0.0, high: 0.5}\n")
    _, other = prepare_study(space, storage_url, "other", 5)
    other.optimize(lambda trial: trial.suggest_float("dropout", 0.0, 0.5), n_trials=5)
    sent: list[str] = []

    def record(conn, cursor, statement, *rest):
        sent.append(" ".join(statement.split()))

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", record)
    try:
        prepare_study(space, storage_url, "new", 5)  # created
        prepare_study(space, storage_url, "other", 5, join=True)  # resumed
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", record)
    read_trials = [s for s in sent if " FROM trials" in s or "FROM trial_" in s]
    assert read_trials == [], read_trials[:3]


class _CountingLock:
    def __init__(self):
        self.taken = 0

    def acquire(self, wait: bool = True) -> bool:
        self.taken += 1
        return True

    def release(self) -> None:
        pass


def test_the_budget_lock_covers_more_racing_workers_than_its_fixed_margin(tmp_path):
    """With 70 trials running (70 workers, more than the fixed margin of 64), 80 free slots are
    already close enough to the end for a race of them to overshoot: the lock is taken. With 10
    running, 80 free slots are not."""
    from sweeper.worker.loop import LOCK_MARGIN, _slot_free

    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_s=None)
    study = optuna.create_study(storage=storage, study_name="wide")
    for _ in range(70):
        study.ask()
    assert LOCK_MARGIN < 80
    lock = _CountingLock()
    assert _slot_free(storage, study._study_id, 150, lock) == (True, True)
    assert lock.taken == 1
    narrow = optuna.create_study(storage=storage, study_name="narrow")
    for _ in range(10):
        narrow.ask()
    lock = _CountingLock()
    assert _slot_free(storage, narrow._study_id, 90, lock) == (True, True)
    assert lock.taken == 0


def _optimize_here(study) -> int:
    """Runs two trials of `study` in this (pool) process; its pid."""
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    return os.getpid()


def test_a_pickled_store_comes_back_working(storage_url):
    """Store objects pickle, as Optuna's own do: the copy reads what the original wrote, writes
    what the original reads, and keeps its settings (heartbeats; SQLite's write queue)."""
    storage = open_storage(storage_url)
    optuna.create_study(study_name="pickled", storage=storage).enqueue_trial({"x": 0.25})
    copy = pickle.loads(pickle.dumps(storage))
    study = optuna.load_study(study_name="pickled", storage=copy)
    trial = study.ask()
    assert trial.suggest_float("x", 0, 1) == 0.25  # the trial the original enqueued
    trial.report(0.5, 0)
    study.tell(trial, 1.0)
    stored = optuna.load_study(study_name="pickled", storage=storage).trials
    assert [(t.value, t.intermediate_values) for t in stored] == [(1.0, {0: 0.5})]
    assert (copy.heartbeat_interval, copy.grace_period) == (storage.heartbeat_interval,
                                                            storage.grace_period)
    queued = event.contains(copy.engine, "begin", sqlite.begin_immediate)
    assert queued == storage_url.startswith("sqlite")


def test_a_study_handed_to_a_process_pool_runs_trials_there(storage_url):
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name="pooled", storage=storage)
    spawn = multiprocessing.get_context("spawn")  # no fork of a process that may hold TensorFlow
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=spawn) as pool:
        pids = list(pool.map(_optimize_here, [study, study]))
    assert os.getpid() not in pids
    trials = optuna.load_study(study_name="pooled", storage=storage).trials
    assert len(trials) == 4
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}


def test_opening_a_store_parses_its_url_once(storage_url, monkeypatch):
    """Every step of opening a store (checks, locks, the storage, its errors) takes one parsed
    value, not the text again."""
    from sweeper.storage import url as url_module

    parsed = []
    real = url_module.make_url
    monkeypatch.setattr(url_module, "make_url", lambda text: parsed.append(text) or real(text))
    storage = open_storage(storage_url)
    budget_lock(storage, "any").release()
    assert len(parsed) == 1
