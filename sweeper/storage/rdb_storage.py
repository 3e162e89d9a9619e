"""Optuna's RDBStorage with changes for many workers, each keeping Optuna's rules and tables:
- its reading methods are marked as such (sweeper.storage.sqlite): on SQLite they take no write
  lock;
- each process looks for stale trials at most STALE_CHECKS_PER_INTERVAL times per heartbeat
  interval;
- a report and a trial's first heartbeat are one statement each, not two or three (on a server
  every statement is a network round trip);
- `on_next_claim` learns when this process's next trial exists;
- its engine is set up for its kind of store (SQLite's write queue, a server's idle pings) when it
  is made and again when it is unpickled: a store object pickles, as Optuna's own do, and comes
  back working in another process.

Imported only when a store is opened: it imports Optuna, which takes about a second.
"""

from __future__ import annotations

import functools
import time

import optuna
import sqlalchemy
from optuna.storages._rdb import models
from optuna.trial import TrialState
from sqlalchemy import event

from sweeper.storage import server, sqlite
from sweeper.storage.url import StoreUrl

# RDBStorage's methods that only read. On SQLite their transactions take no write lock; none of
# them runs inside a writing method's transaction.
READING_METHODS = (
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_all_studies", "get_trial",
    "get_all_trials", "_get_trials", "get_trial_param", "get_trial_user_attrs",
    "get_trial_system_attrs", "get_trial_id_from_study_id_trial_number", "get_best_trial",
    "_get_best_trial_id", "_get_stale_trial_ids")
# Optuna looks for stale trials before every trial; a trial goes stale only after 3 heartbeat
# intervals, so looking more often than every quarter interval finds nothing new.
STALE_CHECKS_PER_INTERVAL = 4
# What belongs to one process only, and is not carried by pickling.
_OWN_PROCESS = ("_sweeper_claimed", "_sweeper_stale_checked", "_sweeper_beaten")


def engine_options(store: StoreUrl, read_only: bool = False) -> dict:
    """Engine options for many workers sharing one store."""
    if store.path is not None:
        path = str(store.path)
        return {"creator": sqlite.ReadOnlyConnector(path) if read_only else sqlite.Connector(path)}
    # Server stores: connections are checked before use only after sitting idle
    # (sweeper.storage.server; Optuna would ping before every use on MySQL), and each worker's
    # pool stays small so hundreds of workers stay under max_connections.
    return {"pool_pre_ping": False, "pool_size": 2, "max_overflow": 4, "pool_recycle": 1800}


class SweeperRDBStorage(optuna.storages.RDBStorage):
    """The store of `store`, read-only where it cannot be written here; `options` are
    RDBStorage's own (heartbeats, skip_table_creation)."""

    _sweeper_claimed = None

    def __init__(self, store: StoreUrl, *, read_only: bool = False, **options) -> None:
        self.store_url = store
        self._sweeper_read_only = read_only
        super().__init__(store.text, engine_kwargs=engine_options(store, read_only), **options)
        self._set_up_engine()

    def _set_up_engine(self) -> None:
        if self.store_url.path is None:
            server.ping_when_idle(self.engine)
        elif not self._sweeper_read_only:
            event.listen(self.engine, "begin", sqlite.begin_immediate)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        for name in _OWN_PROCESS:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._set_up_engine()

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        checked = self.__dict__.setdefault("_sweeper_stale_checked", {})
        now = time.monotonic()
        if now - checked.get(study_id, -float("inf")) < \
                (self.heartbeat_interval or 0) / STALE_CHECKS_PER_INTERVAL:
            return []
        checked[study_id] = now
        with sqlite.reading():
            return super()._get_stale_trial_ids(study_id)

    def set_trial_intermediate_value(self, trial_id: int, step: int, value: float) -> None:
        if not _insert_intermediate_value(self.engine, trial_id, step, value):
            super().set_trial_intermediate_value(trial_id, step, value)

    def _create_new_trial(self, study_id: int, template_trial=None):
        trial = super()._create_new_trial(study_id, template_trial)
        self._claimed()
        return trial

    def set_trial_state_values(self, trial_id: int, state, values=None) -> bool:
        changed = super().set_trial_state_values(trial_id, state, values)
        if changed and state == TrialState.RUNNING:  # a waiting trial taken
            self._claimed()
        return changed

    def record_heartbeat(self, trial_id: int) -> None:
        beaten = self.__dict__.setdefault("_sweeper_beaten", set())
        if trial_id not in beaten:
            beaten.add(trial_id)
            if _insert_first_heartbeat(self.engine, trial_id):
                return
        super().record_heartbeat(trial_id)

    def _claimed(self) -> None:
        callback, self._sweeper_claimed = self._sweeper_claimed, None
        if callback is not None:
            callback()


def _reading(method):
    @functools.wraps(method)
    def read(self, *args, **kwargs):
        with sqlite.reading():
            return method(self, *args, **kwargs)
    return read


for _name in READING_METHODS:  # those the class overrides mark their reading themselves
    if hasattr(optuna.storages.RDBStorage, _name) and _name not in vars(SweeperRDBStorage):
        setattr(SweeperRDBStorage, _name, _reading(getattr(optuna.storages.RDBStorage, _name)))


def _insert_first_heartbeat(engine, trial_id: int) -> bool:
    """A trial's first heartbeat in one statement (Optuna's looks for an existing one first). False
    when one exists (Optuna's way updates it)."""
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
