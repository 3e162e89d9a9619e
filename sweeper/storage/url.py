"""Where the study store is: --storage beats SWEEPER_STORAGE beats storage/<space>.db, and a URL is
shown only with its password masked. Opening a store parses its URL once, into a StoreUrl that
every step of the opening takes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy
from sqlalchemy.engine import make_url

from sweeper.errors import StorageError

STORAGE_ENV = "SWEEPER_STORAGE"
STORAGE_DIR = Path("storage")


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


def password(url: str) -> str | None:
    try:
        return make_url(url).password
    except sqlalchemy.exc.ArgumentError:
        return None


@dataclass(frozen=True)
class StoreUrl:
    """A store's URL, parsed once."""

    text: str  # as given, password and all: handed only to the database driver
    kind: str  # the database: sqlite, postgresql, mysql...
    path: Path | None  # the file of a SQLite store; None for a server store or an in-memory one
    masked: str  # safe to print or store
    secret: str | None  # the password, to scrub from a driver's message that echoes it

    @classmethod
    def parse(cls, url: str | StoreUrl) -> StoreUrl:
        if isinstance(url, StoreUrl):
            return url
        parsed = make_url(url)
        kind = parsed.get_backend_name()
        file = parsed.database if kind == "sqlite" and parsed.database != ":memory:" else None
        return cls(text=url, kind=kind, path=Path(file) if file else None,
                   masked=parsed.render_as_string(hide_password=True), secret=parsed.password)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite store; None for a server store (or an in-memory one)."""
    return StoreUrl.parse(url).path
