"""Where the study store is: --storage beats SWEEPER_STORAGE beats storage/<space>.db, and a URL is
shown only with its password masked."""

from __future__ import annotations

import os
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


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite store; None for a server store (or an in-memory one)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)
