"""Opening a study store: Optuna's RDBStorage with engine settings for many workers, heartbeats
that fail and retry the trials of dead workers, and every way opening can fail told in one line.

A store is opened three ways: to create or resume it (`sweeper sweep`), as a worker (it must
exist), and to read it (status, report, dashboard), which never writes and also works where the
store cannot be written. A store of an older Optuna is refused before anything is added to it.
Its URL is parsed once (sweeper.storage.url.StoreUrl); the storage class itself is
sweeper.storage.rdb_storage, imported only here, when a store is opened.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import sqlite3
import time
import warnings
from pathlib import Path

import sqlalchemy

from sweeper import keys
from sweeper.errors import StorageError
from sweeper.paths import private_folder
from sweeper.storage import sqlite
from sweeper.storage.errors import describe_store_error, store_errors
from sweeper.storage.locks import file_lock
from sweeper.storage.url import StoreUrl

DEFAULT_HEARTBEAT_S = 20
MAX_RETRIES = 3  # a trial cut short runs again at most this often


def open_storage(url: str | StoreUrl, *, heartbeat_s: int | None = DEFAULT_HEARTBEAT_S,
                 create: bool = True):
    """An Optuna RDBStorage tuned for parallel workers, failing stale trials and retrying them.

    With create=False a missing SQLite file is an error instead of a new empty store, and a
    SQLite store that cannot be written here is opened read-only.
    """
    store = StoreUrl.parse(url)
    read_only = _check_sqlite_file(store, create) if store.path is not None else False
    # A read-only opener never creates Optuna's tables in an empty database.
    options = {**_heartbeat_options(heartbeat_s), "skip_table_creation": not create}
    with _opening(store), _quiet_experimental():
        if create:
            _refuse_older(store)
            if store.path is not None:
                sqlite.switch_to_wal(store.path)
        return _create(store, options, serialize=create, read_only=read_only)


def _check_sqlite_file(store: StoreUrl, create: bool) -> bool:
    """Whether the SQLite store must be opened read-only: it exists (or is to be created in a
    private folder made now) and cannot be written by this process."""
    path = store.path
    assert path is not None
    if create:
        _make_private_dir(path.parent)
        return False
    if not path.exists():
        raise StorageError(f"no study store at {path}; run a sweep first or pass --storage")
    return not sqlite.writable(path)


def _heartbeat_options(heartbeat_s: int | None) -> dict:
    if not heartbeat_s:
        return {}
    # A trial whose worker stops beating for 3 intervals is failed and queued again.
    return dict(heartbeat_interval=heartbeat_s, grace_period=heartbeat_s * 3,
                heartbeat_stale_trial_callback=retry_callback())


def retry_callback():
    """Queues a failed trial again with its params, at most MAX_RETRIES times; shared by
    heartbeats and by sweeper.worker.retries."""
    import optuna

    with _quiet_experimental():
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)


def on_next_claim(storage, callback) -> None:
    """Calls `callback` once, as soon as this process's next trial exists in the store (created,
    or a waiting one taken), before Optuna samples its parameters: the budget lock is released
    then, so racing workers wait for one INSERT, not for a whole trial start. A storage that is
    not sweeper's never calls it (the trial's start releases the lock then)."""
    rdb = keys.rdb_of(storage)
    if hasattr(rdb, "_sweeper_claimed"):  # sweeper.storage.rdb_storage, not imported before
        rdb._sweeper_claimed = callback


def _refuse_older(store: StoreUrl) -> None:
    """A store that already holds Optuna's tables is first opened without creating anything, so
    that one of an older Optuna is refused untouched (RDBStorage then only checks the schema
    version). A SQLite store is looked at under its creation lock: one that another process is
    creating right now is complete or not begun."""
    import optuna

    from sweeper.storage.rdb_storage import engine_options

    if store.path is not None and not store.path.exists():
        return
    with file_lock(_init_lock(store.path)) if store.path else contextlib.nullcontext():
        if not (sqlite.has_optuna_tables(store.path) if store.path else _server_has_tables(store)):
            return  # empty, or not Optuna's: creating it says so
        optuna.storages.RDBStorage(store.text, engine_kwargs=engine_options(store),
                                   skip_table_creation=True).engine.dispose()


def _create(store: StoreUrl, options: dict, serialize: bool, read_only: bool, attempts: int = 5):
    """The storage, tolerating other processes that create the same new store at the same moment.

    Creating Optuna's tables is not atomic: two processes on a new store can both try, and the
    loser gets 'already exists' or a duplicate schema version. SQLite stores are created under a
    file lock; on servers the loser tries again and finds the tables made. Openers that create
    nothing (workers) skip the lock: sixteen of them starting at once would queue on it."""
    from sweeper.storage.rdb_storage import SweeperRDBStorage

    lock = _init_lock(store.path) if serialize and store.path else None
    for attempt in range(attempts):
        try:
            with file_lock(lock) if lock else contextlib.nullcontext():
                return SweeperRDBStorage(store, read_only=read_only, **options)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError,
                sqlalchemy.exc.ProgrammingError) as e:
            text_ = str(e).lower()
            if attempt == attempts - 1 or not any(
                    word in text_ for word in ("already exists", "duplicate", "unique")):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _opening(store: StoreUrl):
    """Every way opening a store can fail, turned into one line."""
    try:
        yield
    except ImportError as e:
        raise StorageError(f"{store.masked}: no database driver ({e}); "
                           "pip install 'sweeper[postgres]' or 'sweeper[mysql]'") from None
    except (*store_errors(), sqlalchemy.exc.SQLAlchemyError, sqlite3.Error, OSError) as e:
        raise StorageError(describe_store_error(store, e, "cannot open study store")) from None
    except RuntimeError as e:  # Optuna's schema version check
        if "storage upgrade" not in str(e):
            raise
        written_by = re.search(r"set up by optuna ([\w.]+)", str(e))
        raise StorageError(
            f"study store {store.masked} was written by an older Optuna "
            f"({written_by.group(1) if written_by else 'unknown version'}) than this one "
            f"({_optuna_version()}); back it up, then run: "
            f"optuna storage upgrade --storage {shlex.quote(store.masked)}") from None


def _server_has_tables(store: StoreUrl) -> bool:
    from sweeper.storage.rdb_storage import engine_options

    engine = sqlalchemy.create_engine(store.text, **engine_options(store))
    try:
        return sqlalchemy.inspect(engine).has_table("alembic_version")
    finally:
        engine.dispose()


def _init_lock(path: Path) -> Path:
    """The lock under which a SQLite store is created (and first looked at read-only)."""
    return Path(f"{path}.init-lock")


def _make_private_dir(folder: Path) -> None:
    try:
        private_folder(folder)
    except OSError as e:
        raise StorageError(f"cannot create {folder}: {e.strerror}; pick a writable --storage") from None


def _optuna_version() -> str:
    import optuna

    return optuna.__version__


@contextlib.contextmanager
def _quiet_experimental():
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
