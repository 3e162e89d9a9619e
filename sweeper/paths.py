"""Folders named after studies (logs, reports, models, Slurm scripts): a study name must never lead
a file out of the folder meant for it, nor into a generated script."""

from __future__ import annotations

import re
from pathlib import Path

from sweeper.errors import StorageError

STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_study_name(name: str) -> str:
    """Names of the studies sweeper creates: they become folder names and Slurm job names."""
    if not STUDY_NAME.fullmatch(name):
        raise StorageError(f"study name {name!r} is not allowed: use up to 128 letters, digits, "
                           "'.', '_' or '-', starting with a letter or digit (e.g. --study cnn_lr-2)")
    return name


def study_folder(base: Path, name: str) -> Path:
    """base/NAME for any study name, even one made by another tool: characters that could
    climb out of base ('/', '..') or confuse a shell become '_'."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "_"
    return base / safe


def private_folder(folder: Path) -> Path:
    """`mkdir -p` where every folder it creates is readable by its owner only: stores, caches,
    logs and models may hold data that others on a shared machine should not read."""
    folder = Path(folder)
    missing = []
    for part in (folder, *folder.parents):
        if part.exists():
            break
        missing.append(part)
    for part in reversed(missing):
        part.mkdir(mode=0o700, exist_ok=True)
    return folder
