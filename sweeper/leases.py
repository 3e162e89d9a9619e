"""Host-wide GPU slot leases: one trial per GPU slot for every sweep and every user of a machine.

A worker trains only while it holds its slot's lease: an flock on a file in a directory that every
user of the machine shares (/tmp/sweeper-gpu-leases, or $SWEEPER_LEASE_DIR). The kernel drops the
lease when its holder dies, however it dies. A GPU is named by its UUID where one can be read, so
the lease holds whatever numbering a process sees (CUDA_VISIBLE_DEVICES remapping, Slurm's
renumbering, MIG instances); elsewhere by the id as given.

The directory is shared like /tmp (mode 1777: anyone creates, only the owner removes), and
nothing in it is trusted: a lease file is opened without following symlinks and must be a plain
file that every user can read (an flock needs only a read handle). Anything else is refused with
one line naming the path and the fix; nothing outside the directory is followed or written.

Who holds a lease is told by a file of the holder's own beside it (`<lease>.<uid>.<pid>`, JSON:
study, user, pid, since), removed on release; one whose lease is not held is stale and ignored.
"""

from __future__ import annotations

import errno
import fcntl
import getpass
import json
import os
import re
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sweeper.errors import GpuError

LEASE_DIR_ENV = "SWEEPER_LEASE_DIR"
DEFAULT_LEASE_DIR = Path("/tmp/sweeper-gpu-leases")
SHARED_MODE = 0o1777  # like /tmp: every user creates files, only their owner removes them
LEASE_MODE = 0o644  # every user can open it to take the flock


class LeaseError(GpuError):
    """The lease directory or a file in it cannot be trusted or used."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lease."""

    study: str
    user: str
    pid: int
    since: float  # time.time() when it was taken
    packing: int = 1  # workers per GPU of its sweep: a GPU is shared only at one packing

    def describe(self) -> str:
        return (f"study {self.study} (user {self.user}, pid {self.pid}, since "
                f"{time.strftime('%H:%M:%S', time.localtime(self.since))})")


def lease_dir(environ=os.environ) -> Path:
    return Path(environ.get(LEASE_DIR_ENV) or DEFAULT_LEASE_DIR)


def checked_lease_dir(folder: Path) -> Path:
    """The shared directory, made if missing; refused if it cannot be trusted."""
    try:
        os.mkdir(folder, 0o700)
        os.chmod(folder, SHARED_MODE)  # after mkdir: the umask would strip the mode
    except FileExistsError:
        pass
    except OSError as e:
        raise LeaseError(f"GPU lease directory {folder}: cannot create it ({e.strerror}); set "
                         f"{LEASE_DIR_ENV} to a directory every user of this machine can write") \
            from None
    info = os.lstat(folder)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise LeaseError(f"GPU lease directory {folder} is not a directory (a symlink or a file "
                         f"was put there); remove it, or set {LEASE_DIR_ENV} to another path")
    if info.st_uid not in (0, os.getuid()):
        owner = _user(info.st_uid)
        if stat.S_IMODE(info.st_mode) != SHARED_MODE:
            raise LeaseError(f"GPU lease directory {folder} belongs to {owner} with mode "
                             f"{stat.S_IMODE(info.st_mode):o}, not {SHARED_MODE:o}; ask {owner} "
                             f"to run: chmod {SHARED_MODE:o} {folder}")
    elif stat.S_IMODE(info.st_mode) != SHARED_MODE:
        raise LeaseError(f"GPU lease directory {folder} has mode {stat.S_IMODE(info.st_mode):o}, "
                         f"not {SHARED_MODE:o}: other users' sweeps could not lease; run: chmod "
                         f"{SHARED_MODE:o} {folder}")
    return folder


def lease_path(folder: Path, gpu: str, slot: int) -> Path:
    """The lease of slot `slot` of GPU `gpu` (a UUID, or an id as given)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", gpu).lstrip(".") or "_"
    return folder / f"gpu-{safe}.slot{slot}.lock"


def open_lease(path: Path) -> int:
    """A read handle on the lease file, made if missing; refused if it cannot be trusted."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, LEASE_MODE)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise LeaseError(f"GPU lease {path} is a symlink, which a lease never is; remove it "
                             "(rm) and start again") from None
        if e.errno == errno.EACCES:
            owner = _user(os.lstat(path).st_uid)
            raise LeaseError(f"GPU lease {path} of {owner} is not readable by you; ask {owner} "
                             f"(or root) to run: chmod 644 {path}") from None
        raise LeaseError(f"GPU lease {path}: {e.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise LeaseError(f"GPU lease {path} is not a plain file; remove it and start again")
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) != LEASE_MODE:
        os.fchmod(fd, LEASE_MODE)  # the umask stripped it: others must be able to take it
    elif info.st_uid != os.getuid() and not stat.S_IMODE(info.st_mode) & stat.S_IROTH:
        os.close(fd)
        owner = _user(info.st_uid)
        raise LeaseError(f"GPU lease {path} of {owner} is not readable by others; ask {owner} "
                         f"(or root) to run: chmod 644 {path}")
    return fd


class Lease:
    """This process's hold on one GPU slot."""

    def __init__(self, path: Path, study: str, packing: int = 1):
        self.path, self.study, self.packing = path, study, packing
        self._fd: int | None = None  # open while trying and while held
        self._holder_file: Path | None = None

    def try_take(self) -> bool:
        """Takes the lease if it is free, and says who holds it (a holder file)."""
        if self.held:
            return True
        if self._fd is None:
            self._fd = open_lease(self.path)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._holder_file = holder_path(self.path, os.getuid(), os.getpid())
        holder = Holder(self.study, _user(os.getuid()), os.getpid(), time.time(), self.packing)
        _write_private(self._holder_file, json.dumps(asdict(holder)))
        return True

    def release(self) -> None:
        if self._holder_file is not None:
            self._holder_file.unlink(missing_ok=True)
            self._holder_file = None
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._holder_file is not None


def holder_path(lease: Path, uid: int, pid: int) -> Path:
    return lease.with_name(f"{lease.name}.{uid}.{pid}")


def holders(lease: Path) -> list[Holder]:
    """Who holds the lease now: none when it is free (holder files left by the dead are stale)."""
    if not is_held(lease):
        return []
    found = []
    for path in lease.parent.glob(f"{lease.name}.*.*"):
        try:
            if path.is_symlink():
                continue
            found.append(Holder(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue  # half-written, or not ours to read
    return [h for h in found if _alive(h.pid)]


def is_held(lease: Path) -> bool:
    """Whether some process holds the lease (asked without taking it for long)."""
    try:
        fd = open_lease(lease)
    except LeaseError:
        return True  # untrusted: treated as taken
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _write_private(path: Path, text: str) -> None:
    """Written by its owner only (others read it), not through a link planted in its place."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 LEASE_MODE)
    os.fchmod(fd, LEASE_MODE)  # readable by every user, whatever the umask
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


def _user(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return str(uid) if uid != os.getuid() else getpass.getuser()
