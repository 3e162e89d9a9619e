"""Opening a study store: Optuna's RDBStorage with engine settings for many workers, heartbeats
that fail and retry the trials of dead workers, and every way opening can fail told in one line.

A store is opened three ways: to create or resume it (`sweeper sweep`), as a worker (it must
exist), and to read it (status, report, dashboard), which never writes and also works where the
store cannot be written. A store of an older Optuna is refused before anything is added to it.
"""

from __future__ import annotations

import contextlib
import functools
import re
import shlex
import sqlite3
import time
import warnings
from pathlib import Path

import sqlalchemy
from sqlalchemy import event

from sweeper import keys
from sweeper.errors import StorageError
from sweeper.paths import private_folder
from sweeper.storage import server, sqlite
from sweeper.storage.errors import describe_store_error, store_errors, store_trouble
from sweeper.storage.locks import file_lock
from sweeper.storage.url import mask_url, sqlite_path

DEFAULT_HEARTBEAT_S = 20
MAX_RETRIES = 3  # a trial cut short runs again at most this often


def open_storage(url: str, *, heartbeat_s: int | None = DEFAULT_HEARTBEAT_S, create: bool = True):
    """An Optuna RDBStorage tuned for parallel workers, failing stale trials and retrying them.

    With create=False a missing SQLite file is an error instead of a new empty store, and a
    SQLite store that cannot be written here is opened read-only.
    """
    path = sqlite_path(url)
    read_only = False
    if path is not None:
        if not path.exists() and not create:
            raise StorageError(f"no study store at {path}; run a sweep first or pass --storage")
        read_only = not create and not sqlite.writable(path)
        if create:
            _make_private_dir(path.parent)
            _refuse_older_sqlite(url, path)
            with store_trouble(url, "cannot open study store"):
                sqlite.switch_to_wal(path)
    kwargs = {}
    if heartbeat_s:
        # A trial whose worker stops beating for 3 intervals is failed and queued again.
        kwargs = dict(heartbeat_interval=heartbeat_s, grace_period=heartbeat_s * 3,
                      heartbeat_stale_trial_callback=retry_callback())
    # A read-only opener never creates Optuna's tables in an empty database.
    storage = _open_rdb(url, {**kwargs, "skip_table_creation": not create}, create, read_only)
    if path is None:
        server.ping_when_idle(storage.engine)
    elif not read_only:
        event.listen(storage.engine, "begin", sqlite.begin_immediate)
    return storage


def engine_kwargs(url: str, read_only: bool = False) -> dict:
    """Engine options for many workers sharing one store."""
    path = sqlite_path(url)
    if path is not None:
        return {"creator": sqlite.read_only_connector(path) if read_only
                else sqlite.connector(str(path))}
    # Server stores: connections are checked before use only after sitting idle
    # (sweeper.storage.server; Optuna would ping before every use on MySQL), and each worker's
    # pool stays small so hundreds of workers stay under max_connections.
    return {"pool_pre_ping": False, "pool_size": 2, "max_overflow": 4, "pool_recycle": 1800}


def retry_callback():
    """Queues a failed trial again with its params, at most MAX_RETRIES times; shared by
    heartbeats and by sweeper.worker.retries."""
    import optuna

    with _quiet_experimental():
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)


_TRIAL_SYSTEM_ATTRS = sqlalchemy.table("trial_system_attributes", sqlalchemy.column("trial_id"),
                                       sqlalchemy.column("key"), sqlalchemy.column("value_json"))


def rewrite_trial_system_attr(storage, trial_id: int, key: str, value) -> None:
    """Replaces an existing system attribute of a trial, finished or not (Optuna's API refuses
    finished trials). Stored as Optuna stores it: the value as JSON."""
    import json

    table = _TRIAL_SYSTEM_ATTRS
    with keys.rdb_of(storage).engine.begin() as conn:
        conn.execute(table.update()
                     .where(table.c.trial_id == trial_id, table.c.key == key)
                     .values(value_json=json.dumps(value)))


def _refuse_older_sqlite(url: str, path: Path) -> None:
    """Looks at an existing SQLite store read-only first, so that a store of an older Optuna is
    refused untouched. Under the creation lock: a store another process is creating right now
    is complete or not begun."""
    if not path.exists():
        return
    with store_trouble(url, "cannot open study store"), file_lock(_init_lock(path)):
        if sqlite.has_optuna_tables(path):  # else empty, or not Optuna's: the open says so
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

    if serialize and sqlite_path(url) is None and _server_has_optuna_tables(url):
        # A server store of an older Optuna is refused before anything is added to it: opened
        # without creating tables, RDBStorage only checks the schema version.
        optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url),
                                   skip_table_creation=True).engine.dispose()
    path = sqlite_path(url) if serialize else None
    for attempt in range(attempts):
        try:
            with file_lock(_init_lock(path)) if path else contextlib.nullcontext():
                return _storage_class()(url, engine_kwargs=engine_kwargs(url, read_only), **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError,
                sqlalchemy.exc.ProgrammingError) as e:
            text_ = str(e).lower()
            if attempt == attempts - 1 or not any(
                    word in text_ for word in ("already exists", "duplicate", "unique")):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


# RDBStorage's methods that only read. On SQLite their transactions take no write lock; none of
# them runs inside a writing method's transaction.
_READING_METHODS = (
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_all_studies", "get_trial",
    "get_all_trials", "_get_trials", "get_trial_param", "get_trial_user_attrs",
    "get_trial_system_attrs", "get_trial_id_from_study_id_trial_number", "get_best_trial",
    "_get_best_trial_id", "_get_stale_trial_ids")
# Optuna looks for stale trials before every trial; a trial goes stale only after 3 heartbeat
# intervals, so looking more often than every quarter interval finds nothing new.
STALE_CHECKS_PER_INTERVAL = 4


@functools.cache
def _storage_class():
    """Optuna's RDBStorage with changes for many workers, each keeping Optuna's rules and tables:
    - its reading methods are marked as such (sweeper.storage.sqlite);
    - each process looks for stale trials at most STALE_CHECKS_PER_INTERVAL times per heartbeat
      interval;
    - a report and a trial's first heartbeat are one statement each, not two or three (on a
      server every statement is a network round trip);
    - `on_next_claim` learns when this process's next trial exists.
    Made on first use, as Optuna is imported only then."""
    import optuna

    def reading(method):
        @functools.wraps(method)
        def read(self, *args, **kwargs):
            with sqlite.reading():
                return method(self, *args, **kwargs)
        return read

    methods = {name: reading(getattr(optuna.storages.RDBStorage, name))
               for name in _READING_METHODS if hasattr(optuna.storages.RDBStorage, name)}
    find_stale = methods["_get_stale_trial_ids"]

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        checked = self.__dict__.setdefault("_sweeper_stale_checked", {})
        now = time.monotonic()
        if now - checked.get(study_id, -float("inf")) < \
                self.heartbeat_interval / STALE_CHECKS_PER_INTERVAL:
            return []
        checked[study_id] = now
        return find_stale(self, study_id)

    methods["_get_stale_trial_ids"] = _get_stale_trial_ids
    report_the_long_way = optuna.storages.RDBStorage.set_trial_intermediate_value

    def set_trial_intermediate_value(self, trial_id: int, step: int, value: float) -> None:
        if not _insert_intermediate_value(self.engine, trial_id, step, value):
            report_the_long_way(self, trial_id, step, value)

    methods["set_trial_intermediate_value"] = set_trial_intermediate_value
    create_the_long_way = optuna.storages.RDBStorage._create_new_trial
    set_state_the_long_way = optuna.storages.RDBStorage.set_trial_state_values
    beat_the_long_way = optuna.storages.RDBStorage.record_heartbeat

    def _create_new_trial(self, study_id: int, template_trial=None):
        trial = create_the_long_way(self, study_id, template_trial)
        _claimed(self)
        return trial

    def set_trial_state_values(self, trial_id: int, state, values=None) -> bool:
        changed = set_state_the_long_way(self, trial_id, state, values)
        if changed and state == optuna.trial.TrialState.RUNNING:  # a waiting trial taken
            _claimed(self)
        return changed

    def record_heartbeat(self, trial_id: int) -> None:
        beaten = self.__dict__.setdefault("_sweeper_beaten", set())
        if trial_id not in beaten:
            beaten.add(trial_id)
            if _insert_first_heartbeat(self.engine, trial_id):
                return
        beat_the_long_way(self, trial_id)

    methods.update(_create_new_trial=_create_new_trial,
                   set_trial_state_values=set_trial_state_values,
                   record_heartbeat=record_heartbeat)
    return type("SweeperRDBStorage", (optuna.storages.RDBStorage,),
                {**methods, "__module__": __name__, "_sweeper_claimed": None})


def on_next_claim(storage, callback) -> None:
    """Calls `callback` once, as soon as this process's next trial exists in the store (created,
    or a waiting one taken), before Optuna samples its parameters: the budget lock is released
    then, so racing workers wait for one INSERT, not for a whole trial start. A storage that is
    not sweeper's never calls it (the trial's start releases the lock then)."""
    rdb = keys.rdb_of(storage)
    if hasattr(rdb, "_sweeper_claimed"):
        rdb._sweeper_claimed = callback


def _claimed(rdb) -> None:
    callback, rdb._sweeper_claimed = rdb._sweeper_claimed, None
    if callback is not None:
        callback()


def _insert_first_heartbeat(engine, trial_id: int) -> bool:
    """A trial's first heartbeat in one statement (Optuna's looks for an existing one first). False
    when one exists (Optuna's way updates it)."""
    from optuna.storages._rdb import models

    beats = models.TrialHeartbeatModel.__table__
    try:
        with engine.begin() as conn:
            conn.execute(beats.insert().values(trial_id=trial_id,
                                               heartbeat=sqlalchemy.func.current_timestamp()))
        return True
    except sqlalchemy.exc.IntegrityError:
        return False


def _insert_intermediate_value(engine, trial_id: int, step: int, value: float) -> bool:
    """A report in one statement that writes only while the trial is RUNNING. Optuna's own takes
    three (read the trial, look for the step, insert): a report is made every epoch of every
    trial, and on a server each statement is a network round trip. False when nothing was
    written: the trial is finished (Optuna's way then raises its own error) or this step was
    reported before (Optuna's way overwrites it)."""
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    values = models.TrialIntermediateValueModel.__table__
    trials = models.TrialModel.__table__
    stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
    columns = ("trial_id", "step", "intermediate_value", "intermediate_value_type")
    row = [sqlalchemy.literal(v, values.c[name].type)
           for name, v in zip(columns, (trial_id, step, stored, kind))]
    if_running = sqlalchemy.select(*row).where(trials.c.trial_id == trial_id,
                                               trials.c.state == TrialState.RUNNING)
    try:
        with engine.begin() as conn:
            # Rows counted as they are written: only UPDATE and DELETE keep a count otherwise.
            written = conn.execute(values.insert().from_select(columns, if_running),
                                   execution_options={"preserve_rowcount": True}).rowcount
            return written == 1
    except sqlalchemy.exc.IntegrityError:
        return False


def _server_has_optuna_tables(url: str) -> bool:
    engine = sqlalchemy.create_engine(url, **engine_kwargs(url))
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
