"""The study store: URL resolution, engine settings, heartbeats, the shared trial budget.

The store is the only channel between the controller and its workers, so everything that must
hold across processes and machines (how many trials are done, who may start the next one) is
answered here from the database itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

from sweeper.errors import StorageError
from sweeper.paths import private_folder

STORAGE_ENV = "SWEEPER_STORAGE"
STORAGE_DIR = Path("storage")
SQLITE_BUSY_TIMEOUT_S = 120
DEFAULT_HEARTBEAT_S = 20


def default_storage_url(space_name: str, storage_dir: Path | str = STORAGE_DIR) -> str:
    return f"sqlite:///{(Path(storage_dir) / f'{space_name}.db').resolve()}"


def resolve_storage_url(given: str | None, space_name: str) -> str:
    """--storage beats SWEEPER_STORAGE beats storage/<space>.db."""
    url = given or os.environ.get(STORAGE_ENV) or default_storage_url(space_name)
    if "://" not in url:  # a bare file path is a SQLite store
        url = f"sqlite:///{Path(url).resolve()}"
    try:
        make_url(url)
    except Exception:
        raise StorageError(
            f"storage URL {mask_url(url)!r} is not valid; write it as sqlite:///path.db or "
            "postgresql+psycopg://user@host/db") from None
    return url


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, safe to print or store."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        # Not parseable: hide everything between '//' and '@' to be safe.
        head, sep, rest = url.partition("://")
        if sep and "@" in rest:
            return f"{head}://***@{rest.rsplit('@', 1)[1]}"
        return url


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def engine_kwargs(url: str, read_only: bool = False) -> dict:
    """Engine options for many workers sharing one store. `read_only`: see _read_only_uri."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and read_only:
        uri = _read_only_uri(Path(parsed.database))
        return {"creator": lambda: sqlite3.connect(uri, uri=True, check_same_thread=False)}
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database

        def connect():
            # isolation_level=None: sqlite3 leaves transactions to us (see _begin_immediate).
            # WAL mode (set when the file is created) lets readers go on while one writes.
            conn = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False, factory=_QueuedConnection)
            conn.execute("PRAGMA synchronous=NORMAL")  # safe in WAL mode, far fewer fsyncs
            conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
            conn.queue_path = f"{path}.write-queue"
            return conn

        return {"creator": connect}
    # Server stores: check connections before use (servers restart, proxies drop idle ones),
    # keep each worker's pool small so hundreds of workers stay under max_connections.
    return {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 4, "pool_recycle": 1800}


class _QueuedConnection(sqlite3.Connection):
    """A SQLite connection whose transactions queue on a kernel file lock beside the store.

    SQLite's own busy handler polls: a writer that finds the store locked sleeps 1, 2, 5 ... up
    to 100 ms before trying again, so with many workers most of their time goes to sleeping on a
    lock that was freed long ago. A blocked flock() wakes the moment the holder lets go, and the
    kernel releases it if the holder dies. SQLite's busy timeout stays as a fallback for other
    programs that open the store (the dashboard, a user's script).
    """

    queue_path: str
    _queue = None

    def begin_immediate(self) -> None:
        if self._queue is None:
            self._queue = open(self.queue_path, "a+")
        fcntl.flock(self._queue, fcntl.LOCK_EX)
        try:
            self.execute("BEGIN IMMEDIATE")
        except BaseException:
            fcntl.flock(self._queue, fcntl.LOCK_UN)
            raise

    def _leave_queue(self) -> None:
        if self._queue is not None:
            fcntl.flock(self._queue, fcntl.LOCK_UN)

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._leave_queue()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._leave_queue()

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._queue is not None:
                self._queue.close()
                self._queue = None


def _read_only_uri(path: Path) -> str:
    """How to read a SQLite store that cannot be written here (a read-only file system, or
    another user's file). A reader of a WAL store normally writes its `-shm` index beside it.
    With a `-wal` file there (the store was not closed cleanly), SQLite reads it read-only using
    the `-shm` beside it; without one every trial is in the main file, which can then be opened
    immutable: no locks, no index, nothing written."""
    quoted = urllib.parse.quote(str(path))
    if Path(f"{path}-wal").exists():
        return f"file:{quoted}?mode=ro"
    return f"file:{quoted}?immutable=1"


def writable(path: Path) -> bool:
    """Whether this process may write the SQLite store at `path` and the files beside it."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _begin_immediate(conn) -> None:
    # A deferred SQLite transaction that reads, then writes fails at once with 'database is
    # locked' when another process wrote in between; the busy timeout cannot help it. Taking the
    # write lock at BEGIN makes every transaction wait its turn instead.
    raw = conn.connection.dbapi_connection
    if isinstance(raw, _QueuedConnection):
        raw.begin_immediate()
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def open_storage(url: str, *, heartbeat_s: int | None = DEFAULT_HEARTBEAT_S, create: bool = True):
    """An Optuna RDBStorage tuned for parallel workers, failing stale trials and retrying them.

    With create=False a missing SQLite file is an error instead of a new empty store.
    """
    path = sqlite_path(url)
    read_only = False
    if path is not None:
        if not path.exists() and not create:
            raise StorageError(f"no study store at {path}; run a sweep first or pass --storage")
        read_only = not create and not writable(path)
        if create:
            _make_private_dir(path.parent)
            _refuse_older_schema(url, path)
            # Switch the file to WAL before any pool exists: the switch needs the file to
            # itself, which is easy now and contended once workers connect.
            with store_trouble(url, "cannot open study store"), \
                    contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
    kwargs = {}
    if heartbeat_s:
        # A trial whose worker stops beating for 3 intervals is failed and queued again.
        kwargs = dict(heartbeat_interval=heartbeat_s, grace_period=heartbeat_s * 3,
                      heartbeat_stale_trial_callback=retry_callback())
    # A read-only opener never creates Optuna's tables in an empty database.
    storage = _open_rdb(url, {**kwargs, "skip_table_creation": not create}, create, read_only)
    if path is not None and not read_only:
        event.listen(storage.engine, "begin", _begin_immediate)
    return storage


def _refuse_older_schema(url: str, path: Path) -> None:
    """Opens an existing SQLite store read-only first, so that a store of an older Optuna is
    refused untouched (opening it to write would switch it to WAL and add tables). Under the
    creation lock: a store another process is creating right now is complete or not begun."""
    if not path.exists():
        return
    with store_trouble(url, "cannot open study store"), file_lock(_init_lock(path)):
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            made = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'")
            if made.fetchone() is None:
                return  # empty, or not an Optuna store: the normal open says what it is
        _open_rdb(url, {"skip_table_creation": True}, create=False).engine.dispose()


def _open_rdb(url: str, kwargs: dict, create: bool, read_only: bool = False):
    """RDBStorage, with every way opening it can fail turned into one line."""
    try:
        with _quiet_experimental():
            return _create_rdb_storage(url, kwargs, serialize=create, read_only=read_only)
    except ImportError as e:
        raise StorageError(f"{mask_url(url)}: no database driver ({e}); "
                           "pip install 'sweeper[postgres]' or 'sweeper[mysql]'") from None
    except (*store_errors(), sqlalchemy.exc.SQLAlchemyError, sqlite3.Error, OSError) as e:
        raise StorageError(describe_store_error(url, e, "cannot open study store")) from None
    except RuntimeError as e:  # Optuna's schema version check
        if "storage upgrade" not in str(e):
            raise
        written_by = re.search(r"set up by optuna ([\w.]+)", str(e))
        raise StorageError(
            f"study store {mask_url(url)} was written by an older Optuna "
            f"({written_by.group(1) if written_by else 'unknown version'}) than this one "
            f"({_optuna_version()}); back it up, then run: "
            f"optuna storage upgrade --storage {shlex.quote(mask_url(url))}") from None


def _create_rdb_storage(url: str, kwargs: dict, attempts: int = 5, serialize: bool = True,
                        read_only: bool = False):
    """RDBStorage, tolerating other processes that create the same new store at the same moment.

    Creating Optuna's tables is not atomic: two processes on a new store can both try, and the
    loser gets 'already exists' or a duplicate schema version. SQLite stores are created under a
    file lock; on servers the loser tries again and finds the tables made. Openers that create
    nothing (workers) skip the lock: sixteen of them starting at once would queue on it."""
    import optuna

    if serialize and sqlite_path(url) is None and _has_optuna_tables(url):
        # A server store of an older Optuna is refused before anything is added to it: opened
        # without creating tables, RDBStorage only checks the schema version.
        optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url),
                                   skip_table_creation=True).engine.dispose()
    path = sqlite_path(url) if serialize else None
    for attempt in range(attempts):
        try:
            with file_lock(_init_lock(path)) if path else contextlib.nullcontext():
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs(url, read_only), **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError,
                sqlalchemy.exc.ProgrammingError) as e:
            text_ = str(e).lower()
            if attempt == attempts - 1 or not any(
                    word in text_ for word in ("already exists", "duplicate", "unique")):
                raise
            time.sleep(0.2 * (attempt + 1))


def _has_optuna_tables(url: str) -> bool:
    engine = sqlalchemy.create_engine(url, **engine_kwargs(url))
    try:
        return sqlalchemy.inspect(engine).has_table("alembic_version")
    finally:
        engine.dispose()


def _init_lock(path: Path) -> Path:
    """The lock under which a SQLite store is created (and first looked at read-only)."""
    return Path(f"{path}.init-lock")


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock between processes of this machine, released if the holder dies."""
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def store_errors() -> tuple:
    """Exceptions that mean the store could not be reached or written (a restart, the network).
    Optuna wraps some of SQLAlchemy's in its own StorageInternalError."""
    import optuna

    return (sqlalchemy.exc.DBAPIError, optuna.exceptions.StorageInternalError)


# What retrying cannot fix, and what to do instead. Each store's wording, lower-cased.
_PROBLEMS = (
    (("database or disk is full", "no space left on device", "could not extend file",
      "file too large", "disk full", "' is full"),  # MySQL: The table 'x' is full
     "the disk holding the store is full: free space, then run the same command again to resume "
     "(finished trials are kept)"),
    (("readonly database", "read-only file system", "read only", "permission denied",
      "unable to open database file"),
     "the store is not writable here: pick a writable --storage path or fix its permissions"),
    (("password authentication failed", "access denied", "authentication failed",
      "no password supplied", "role \"", "not permitted to log in"),
     "check the user name and password in the URL (or SWEEPER_STORAGE)"),
    (("version_info", "no such table", "doesn't exist"),
     "the database holds no Optuna studies yet: run a sweep first, or check the URL"),
    (("does not exist", "unknown database"),
     "create the database first (e.g. createdb NAME) or fix its name in the URL"),
    (("connection refused", "could not translate host name", "name or service not known",
      "can't connect", "timeout expired", "unknown mysql server host", "no route to host",
      "temporary failure in name resolution"),
     "is the database server running and reachable from here? check host and port"),
)
# Of those, the ones that stop a running sweep; an unreachable server is waited for instead.
_FATAL_MIDWAY = 3


def store_problem(error: BaseException, midway: bool = False) -> str | None:
    """The fix for a store error that retrying cannot cure, else None. With midway=True, only
    the problems that should stop a running sweep (full, read-only, credentials)."""
    text_ = " ".join(str(e) for e in _chain(error)).lower()
    problems = _PROBLEMS[:_FATAL_MIDWAY] if midway else _PROBLEMS
    for needles, fix in problems:
        if any(needle in text_ for needle in needles):
            return fix
    return None


def store_cause(error: BaseException) -> BaseException | None:
    """The store error behind `error`, if any. Optuna sometimes replaces one with its own
    StorageInternalError or, when a trial's result cannot be written, an AssertionError."""
    errors = (*store_errors(), sqlite3.Error)
    return next((e for e in _chain(error) if isinstance(e, errors)), None)


def describe_store_error(url: str, error: BaseException, what: str = "study store") -> str:
    """One line: the masked URL, the database's own reason, and the fix when we know it."""
    reason = store_reason(error)
    password = _password(url)
    if password:  # a driver may echo the URL back
        reason = reason.replace(password, "***")
    fix = store_problem(error)
    return f"{what} {mask_url(url)}: {reason}" + (f"; {fix}" if fix else "")


def store_reason(error: BaseException) -> str:
    """The first line of the innermost error: the driver's own words, not its wrappers'."""
    return (str(_chain(error)[-1]).strip().splitlines() or ["?"])[0][:300]


def _chain(error: BaseException) -> list[BaseException]:
    """error, then what caused it, and so on."""
    chain = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


@contextlib.contextmanager
def store_trouble(url: str, what: str = "study store"):
    """Turns store errors into the one-line StorageError (exit 2), the URL's password masked."""
    try:
        yield
    except (*store_errors(), sqlite3.Error, OSError) as e:  # OSError: lock files beside it
        raise StorageError(describe_store_error(url, e, what)) from None


def _password(url: str) -> str | None:
    try:
        return make_url(url).password
    except sqlalchemy.exc.ArgumentError:
        return None


def _optuna_version() -> str:
    import optuna

    return optuna.__version__


MAX_RETRIES = 3


def retry_callback():
    """Queues a failed trial again with its params, at most MAX_RETRIES times; shared by
    heartbeats and by sweeper.retries."""
    import optuna

    with _quiet_experimental():
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)


def _make_private_dir(folder: Path) -> None:
    try:
        private_folder(folder)
    except OSError as e:
        raise StorageError(f"cannot create {folder}: {e.strerror}; pick a writable --storage") from None


@contextlib.contextmanager
def _quiet_experimental():
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


# ---------------------------------------------------------------------------------------------
# The shared trial budget


@dataclass(frozen=True)
class TrialCounts:
    """Trials of one study by state. `retries` counts trials created to retry a failed one."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    retries: int = 0

    @property
    def claimed(self) -> int:
        """Budget slots taken: every trial except the failed ones that a retry replaced."""
        return self.complete + self.pruned + self.failed + self.running + self.waiting - self.retries

    @property
    def finished(self) -> int:
        """Slots whose trial has ended for good (complete, pruned, or failed and not retried)."""
        return self.claimed - self.running - self.waiting

    def may_start(self, budget: int) -> bool:
        """A worker may ask for a trial: a retry waits, or a slot is free."""
        return self.waiting > 0 or self.claimed < budget


# Optuna's own tables, read directly: loading every trial through the API to count them would
# cost each worker a full study download per trial.
_STATE_COUNTS = text(
    "SELECT state, COUNT(*) FROM trials WHERE study_id = :study_id GROUP BY state")
_RETRY_COUNT = text(
    "SELECT COUNT(*) FROM trial_system_attributes a JOIN trials t ON a.trial_id = t.trial_id "
    "WHERE t.study_id = :study_id AND a.key = 'failed_trial'")


def rdb_of(storage):
    """The RDBStorage itself, also when Optuna wraps it in its cache (a study's `_storage`)."""
    return getattr(storage, "_backend", storage)


_TRIAL_SYSTEM_ATTRS = sqlalchemy.table("trial_system_attributes", sqlalchemy.column("trial_id"),
                                      sqlalchemy.column("key"), sqlalchemy.column("value_json"))


def rewrite_trial_system_attr(storage, trial_id: int, key: str, value) -> None:
    """Replaces an existing system attribute of a trial, finished or not (Optuna's API refuses
    finished trials). Stored as Optuna stores it: the value as JSON."""
    table = _TRIAL_SYSTEM_ATTRS
    with storage.engine.begin() as conn:
        conn.execute(table.update()
                     .where(table.c.trial_id == trial_id, table.c.key == key)
                     .values(value_json=json.dumps(value)))


def count_trials(storage, study_id: int) -> TrialCounts:
    with storage.engine.connect() as conn:
        states = {str(state).rsplit(".", 1)[-1]: n
                  for state, n in conn.execute(_STATE_COUNTS, {"study_id": study_id})}
        retries = conn.execute(_RETRY_COUNT, {"study_id": study_id}).scalar_one()
        conn.rollback()
    return TrialCounts(
        complete=states.get("COMPLETE", 0), pruned=states.get("PRUNED", 0),
        failed=states.get("FAIL", 0), running=states.get("RUNNING", 0),
        waiting=states.get("WAITING", 0), retries=retries)


class BudgetLock:
    """A lock shared by every worker of a store, held from 'is a slot free?' until the new trial
    exists, so workers racing for the last slots cannot overshoot the budget.

    SQLite: a file lock beside the store (one machine). PostgreSQL: an advisory lock. MySQL:
    GET_LOCK. All are released by the server or the kernel if the holder dies.
    """

    def __init__(self, storage, study_name: str):
        self._storage = storage
        self._key = int(hashlib.sha256(study_name.encode()).hexdigest()[:15], 16)
        self._name = f"sweeper-{self._key:x}"
        self._backend = storage.engine.dialect.name
        self._file = None
        self._conn = None
        path = sqlite_path(storage.url)
        self._lock_path = Path(f"{path}.budget-lock") if path is not None else None

    def acquire(self) -> None:
        if self._lock_path is not None:
            self._file = open(self._lock_path, "a+")
            fcntl.flock(self._file, fcntl.LOCK_EX)
        elif self._backend == "postgresql":
            self._conn = self._storage.engine.connect()
            self._conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self._key})
            self._conn.commit()
        elif self._backend in ("mysql", "mariadb"):
            self._conn = self._storage.engine.connect()
            # MariaDB has no 'wait forever' (-1 returns NULL at once): wait a day at a time.
            while True:
                got = self._conn.execute(text("SELECT GET_LOCK(:n, 86400)"),
                                         {"n": self._name}).scalar()
                if got == 1:
                    break
                if got is None:
                    raise StorageError(f"{mask_url(self._storage.url)} refused GET_LOCK")
            self._conn.commit()

    def release(self) -> None:
        """Idempotent: the objective releases it early, the worker again after the trial."""
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                if self._backend == "postgresql":
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
                else:
                    conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": self._name})
                conn.commit()
            finally:
                conn.close()


class SweepLock:
    """Held by a study's controller for as long as it runs, so a second `sweeper sweep` on the
    same study is refused instead of doubling the workers on the same GPUs. (More machines join
    with `sweeper worker`, which takes no such lock.)

    SQLite: a file lock beside the store. PostgreSQL: a session advisory lock; MySQL: GET_LOCK,
    each on a connection of its own. The kernel or the server releases it if the holder dies.
    """

    def __init__(self, storage_url: str, study_name: str):
        self._url = storage_url
        digest = hashlib.sha256(f"sweep:{study_name}".encode()).hexdigest()
        self._key = int(digest[:15], 16)
        self._name = f"sweeper-sweep-{digest[:16]}"
        path = sqlite_path(storage_url)
        self._lock_path = Path(f"{path}.{digest[:12]}.sweep-lock") if path is not None else None
        self._file = None
        self._engine = self._conn = None

    def try_acquire(self) -> bool:
        """True if this process now holds the lock; False if another sweep does."""
        if self._lock_path is not None:
            _make_private_dir(self._lock_path.parent)
            self._file = open(self._lock_path, "a+")
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._file.close()
                self._file = None
                return False
            return True
        self._engine = sqlalchemy.create_engine(self._url, poolclass=sqlalchemy.pool.NullPool)
        self._conn = self._engine.connect()
        if self._engine.dialect.name == "postgresql":
            got = self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key})
        else:
            got = self._conn.execute(text("SELECT GET_LOCK(:n, 0)"), {"n": self._name})
        held = bool(got.scalar())
        self._conn.commit()
        if not held:
            self.release()
        return held

    def still_held(self) -> bool:
        """Checks the lock's session and takes the lock again if the session ended: a database
        restart ends every session, and the lock with it. False when another sweep took it in
        the meantime; a store error when the database is still away (try again later)."""
        if self._lock_path is not None:
            return self._file is not None  # a kernel lock: it goes only with this process
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()
                return True
            except store_errors():
                pass
        self.release()
        return self.try_acquire()

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None
        if self._conn is not None:
            with contextlib.suppress(*store_errors()):
                self._conn.close()  # a session lock ends with its session
            self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
