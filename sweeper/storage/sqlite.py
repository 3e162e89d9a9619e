"""SQLite tuned for many worker processes on one machine, and read where it cannot be written.

- WAL mode (set when the file is created) lets readers go on while one process writes.
- Every transaction that may write takes the write lock at BEGIN (BEGIN IMMEDIATE): a deferred
  transaction that reads, then writes fails at once with 'database is locked' when another
  process wrote in between, which no busy timeout can help. Transactions known to only read
  (inside `reading()`) begin deferred and take no lock: in WAL mode they never wait for a writer,
  and writers never wait for them.
- Writers queue on a kernel file lock beside the store instead of SQLite's busy handler, which
  polls: a writer that finds the store locked sleeps 1, 2, 5 ... up to 100 ms before trying again,
  so with many workers most of their time goes to sleeping on a lock freed long ago. A blocked
  flock() wakes the moment the holder lets go, and the kernel releases it if the holder dies.
  SQLite's busy timeout stays as a fallback for other programs (the dashboard, a user's script).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

BUSY_TIMEOUT_S = 120


class QueuedConnection(sqlite3.Connection):
    """A SQLite connection whose transactions queue on a kernel file lock beside the store."""

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


@dataclass(frozen=True)
class Connector:
    """What SQLAlchemy calls for each new connection to the store at `path`. A class, not a
    closure, so that a store object pickles (Optuna's RDBStorage keeps it in its engine options)."""

    path: str

    def __call__(self) -> sqlite3.Connection:
        # isolation_level=None: sqlite3 leaves transactions to us (see begin_immediate).
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False, factory=QueuedConnection)
        conn.execute("PRAGMA synchronous=NORMAL")  # safe in WAL mode, far fewer fsyncs
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        conn.queue_path = f"{self.path}.write-queue"
        return conn


@dataclass(frozen=True)
class ReadOnlyConnector:
    """Connections to a store that cannot be written here (a read-only file system, or another
    user's file). A reader of a WAL store normally writes its `-shm` index beside it. With a
    `-wal` file there (the store was not closed cleanly), SQLite reads it read-only using the
    `-shm` beside it; without one every trial is in the main file, which can then be opened
    immutable: no locks, no index, nothing written."""

    path: str

    def __call__(self) -> sqlite3.Connection:
        mode = "mode=ro" if Path(f"{self.path}-wal").exists() else "immutable=1"
        uri = f"file:{urllib.parse.quote(self.path)}?{mode}"
        return sqlite3.connect(uri, uri=True, check_same_thread=False)


_read_only = threading.local()


@contextlib.contextmanager
def reading():
    """Transactions begun inside (in this thread) only read: they begin deferred, outside the
    write queue."""
    depth = getattr(_read_only, "depth", 0)
    _read_only.depth = depth + 1
    try:
        yield
    finally:
        _read_only.depth = depth


def begin_immediate(conn) -> None:
    """SQLAlchemy's 'begin' event: take the write lock at BEGIN, in the queue, unless the
    transaction only reads."""
    if getattr(_read_only, "depth", 0):
        conn.exec_driver_sql("BEGIN")
        return
    raw = conn.connection.dbapi_connection
    if isinstance(raw, QueuedConnection):
        raw.begin_immediate()
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def writable(path: Path) -> bool:
    """Whether this process may write the store at `path` and the files beside it."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def switch_to_wal(path: Path) -> None:
    """Before any pool exists: the switch needs the file to itself, which is easy now and
    contended once workers connect."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()


def has_optuna_tables(path: Path) -> bool:
    """Looked at read-only: opening to write would switch an old store to WAL."""
    conn = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchone() is not None
    finally:
        conn.close()
