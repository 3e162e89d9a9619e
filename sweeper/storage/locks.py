"""Locks shared by every process of a store, released by the kernel or the database server if
their holder dies, so a crash never leaves one held.

One class per kind of store behind one factory (`store_lock`): a file lock beside a SQLite store
(its processes share one machine), a PostgreSQL advisory lock, MySQL's GET_LOCK. Two locks use
them, and differ only in their key and in whether they wait:
- the budget lock (`budget_lock`), held by a worker from 'is a slot free?' until its new trial
  exists, so workers racing for the last slots cannot overshoot the budget; it waits;
- the sweep lock (`sweep_lock`), held by a study's controller for as long as it runs, so a second
  `sweeper sweep` of the study is refused instead of doubling the workers on the GPUs; it does not
  wait. A server keeps it in one session, which a restart ends: `still_held` takes it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from pathlib import Path
from typing import IO, Any, Protocol

import sqlalchemy
from sqlalchemy import text

from sweeper.errors import StorageError
from sweeper.paths import private_folder
from sweeper.storage.errors import store_errors
from sweeper.storage.url import StoreUrl, mask_url


class StoreLock(Protocol):
    def acquire(self, wait: bool = True) -> bool:
        """Takes the lock; with wait=False, True only if it was free."""

    def release(self) -> None:
        """Idempotent."""

    def still_held(self) -> bool:
        """Whether this process holds it (taking it again if a server restart dropped it)."""


def store_lock(url: str | StoreUrl, name: str, engine=None) -> StoreLock:
    """The lock called `name` in the store at `url`. Server locks run on a connection of
    `engine` (checked out while held), else on a connection of their own."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    store = StoreUrl.parse(url)
    if store.path is not None:
        return FileLock(Path(f"{store.path}.{digest[:12]}.lock"))
    if store.kind == "postgresql":
        return PostgresLock(store.text, int(digest[:15], 16), engine)
    return MySQLLock(store.text, f"sweeper-{digest[:16]}", engine)


def budget_lock(storage, study_name: str) -> StoreLock:
    """`storage` is an RDBStorage; sweeper's own carries its parsed URL."""
    url = getattr(storage, "store_url", None) or str(storage.url)
    return store_lock(url, f"budget:{study_name}", storage.engine)


def sweep_lock(url: str, study_name: str) -> StoreLock:
    return store_lock(url, f"sweep:{study_name}")


class FileLock:
    """flock on a file beside the store: the kernel drops it when its holder dies."""

    def __init__(self, path: Path):
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self, wait: bool = True) -> bool:
        if self._file is not None:
            return True
        private_folder(self.path.parent)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None

    def still_held(self) -> bool:
        return self._file is not None  # it goes only with this process


class _SessionLock:
    """A lock that lives in a database session: the server drops it when the session ends."""

    def __init__(self, url: str, engine=None):
        self.url = url
        self._shared_engine = engine
        self._engine: Any = None
        self._conn: Any = None

    def _take(self, conn, wait: bool) -> bool:
        raise NotImplementedError

    def _give_back(self, conn) -> None:
        raise NotImplementedError

    def acquire(self, wait: bool = True) -> bool:
        if self._conn is not None:
            return True
        if self._shared_engine is None:
            self._engine = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool)
        conn = (self._shared_engine or self._engine).connect()
        try:
            held = self._take(conn, wait)
            conn.commit()
        except BaseException:
            self._drop(conn)
            raise
        if held:
            self._conn = conn
        else:
            self._drop(conn)
        return held

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(*store_errors()):
                self._give_back(conn)
                conn.commit()
            self._drop(conn)

    def still_held(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()
                return True
            except store_errors():  # the session ended (a restart), and the lock with it
                self._drop(self._conn)
                self._conn = None
        return self.acquire(wait=False)  # a store error here: the server is still away

    def _drop(self, conn) -> None:
        with contextlib.suppress(*store_errors()):
            conn.close()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class PostgresLock(_SessionLock):
    """A session-level advisory lock on a 64-bit key."""

    def __init__(self, url: str, key: int, engine=None):
        super().__init__(url, engine)
        self.key = key

    def _take(self, conn, wait: bool) -> bool:
        if wait:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
            return True
        return bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                 {"k": self.key}).scalar())

    def _give_back(self, conn) -> None:
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})


class MySQLLock(_SessionLock):
    """GET_LOCK on a name, held by its connection."""

    def __init__(self, url: str, name: str, engine=None):
        super().__init__(url, engine)
        self.name = name

    def _take(self, conn, wait: bool) -> bool:
        # MariaDB has no 'wait forever' (-1 returns NULL at once): wait a day at a time.
        while True:
            got = conn.execute(text("SELECT GET_LOCK(:n, :s)"),
                               {"n": self.name, "s": 86400 if wait else 0}).scalar()
            if got == 1:
                return True
            if got is None:
                raise StorageError(f"{mask_url(self.url)} refused GET_LOCK")
            if not wait:
                return False

    def _give_back(self, conn) -> None:
        conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": self.name})


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock between processes of this machine, held for a `with` block."""
    lock = FileLock(path)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()
