"""Store errors, told apart in one place: what retrying cures (a server restarting) and what it
cannot (a full disk, a read-only store, wrong credentials), each turned into one line with the
URL's password masked, the database's own reason and the fix.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass

import sqlalchemy

from sweeper.errors import StorageError
from sweeper.storage.url import StoreUrl, mask_url, password


def store_errors() -> tuple:
    """Exceptions that mean the store could not be reached or written (a restart, the network).
    Optuna wraps some of SQLAlchemy's in its own StorageInternalError."""
    import optuna

    return (sqlalchemy.exc.DBAPIError, optuna.exceptions.StorageInternalError)


@dataclass(frozen=True)
class Problem:
    """A store error that retrying cannot cure, known by the databases' own wording."""

    needles: tuple[str, ...]  # lower-cased, as SQLite, PostgreSQL and MySQL word it
    fix: str
    stops_a_sweep: bool  # True: a running sweep stops; False: it is refused only at the start


PROBLEMS = (
    Problem(("database or disk is full", "no space left on device", "could not extend file",
             "file too large", "disk full", "' is full"),  # MySQL: The table 'x' is full
            "the disk holding the store is full: free space, then run the same command again to "
            "resume (finished trials are kept)", stops_a_sweep=True),
    Problem(("readonly database", "read-only file system", "read only", "permission denied",
             "unable to open database file"),
            "the store is not writable here: pick a writable --storage path or fix its "
            "permissions", stops_a_sweep=True),
    Problem(("password authentication failed", "access denied", "authentication failed",
             "no password supplied", "role \"", "not permitted to log in"),
            "check the user name and password in the URL (or SWEEPER_STORAGE)",
            stops_a_sweep=True),
    Problem(("version_info", "no such table", "doesn't exist"),
            "the database holds no Optuna studies yet: run a sweep first, or check the URL",
            stops_a_sweep=False),
    Problem(("does not exist", "unknown database"),
            "create the database first (e.g. createdb NAME) or fix its name in the URL",
            stops_a_sweep=False),
    # An unreachable server is waited for once a sweep runs: it may be restarting.
    Problem(("connection refused", "could not translate host name", "name or service not known",
             "can't connect", "timeout expired", "unknown mysql server host", "no route to host",
             "temporary failure in name resolution"),
            "is the database server running and reachable from here? check host and port",
            stops_a_sweep=False),
)


def store_problem(error: BaseException, midway: bool = False) -> str | None:
    """The fix for a store error that retrying cannot cure, else None. With midway=True, only
    the problems that stop a running sweep (full, read-only, credentials)."""
    text = " ".join(str(e) for e in _chain(error)).lower()
    for problem in PROBLEMS:
        if (problem.stops_a_sweep or not midway) and any(n in text for n in problem.needles):
            return problem.fix
    return None


def store_cause(error: BaseException) -> BaseException | None:
    """The store error behind `error`, if any. Optuna sometimes replaces one with its own
    StorageInternalError or, when a trial's result cannot be written, an AssertionError."""
    errors = (*store_errors(), sqlite3.Error)
    return next((e for e in _chain(error) if isinstance(e, errors)), None)


def describe_store_error(url: str | StoreUrl, error: BaseException, what: str = "study store") -> str:
    """One line: the masked URL, the database's own reason, and the fix when we know it."""
    if isinstance(url, StoreUrl):
        masked, secret = url.masked, url.secret
    else:  # any text, also one that does not parse
        masked, secret = mask_url(url), password(url)
    reason = store_reason(error)
    if secret:  # a driver may echo the URL back
        reason = reason.replace(secret, "***")
    fix = store_problem(error)
    return f"{what} {masked}: {reason}" + (f"; {fix}" if fix else "")


def store_reason(error: BaseException) -> str:
    """The first line of the innermost error: the driver's own words, not its wrappers'."""
    return (str(_chain(error)[-1]).strip().splitlines() or ["?"])[0][:300]


def _chain(error: BaseException | None) -> list[BaseException]:
    """error, then what caused it, and so on."""
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


@contextlib.contextmanager
def store_trouble(url: str | StoreUrl, what: str = "study store"):
    """Turns store errors into the one-line StorageError (exit 2), the URL's password masked."""
    try:
        yield
    except (*store_errors(), sqlite3.Error, OSError) as e:  # OSError: lock files beside it
        raise StorageError(describe_store_error(url, e, what)) from None
