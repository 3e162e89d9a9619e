"""Host-wide GPU slot leases: one holder per slot across processes, freed by the kernel when the
holder dies, the holder told; a lease directory or file that cannot be trusted refused with one
line naming the path and the fix."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from sweeper.leases import (
    SHARED_MODE,
    Lease,
    LeaseError,
    checked_lease_dir,
    holders,
    is_held,
    lease_path,
)


@pytest.fixture
def folder(tmp_path):
    return checked_lease_dir(tmp_path / "leases")


def test_the_directory_is_made_shared_like_tmp(folder):
    assert stat.S_IMODE(os.lstat(folder).st_mode) == SHARED_MODE
    assert checked_lease_dir(folder) == folder  # found as made: accepted again


def test_one_holder_per_slot_and_who_it_is(folder):
    path = lease_path(folder, "GPU-1234-abcd", 0)
    first, second = Lease(path, "cnn_lr"), Lease(path, "mlp")
    assert first.try_take() and not second.try_take()
    (held,) = holders(path)
    assert (held.study, held.pid) == ("cnn_lr", os.getpid())
    assert "study cnn_lr (user " in held.describe()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644  # others can take it in their turn
    first.release()
    assert holders(path) == [] and not is_held(path)
    assert second.try_take()
    second.release()


def test_other_slots_and_gpus_are_other_leases(folder):
    leases = [Lease(lease_path(folder, gpu, slot), "s") for gpu in ("0", "GPU-x") for slot in (0, 1)]
    assert all(lease.try_take() for lease in leases)
    for lease in leases:
        lease.release()


def test_a_killed_holder_frees_the_lease_at_once(folder):
    path = lease_path(folder, "GPU-1", 0)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from sweeper.leases import Lease\n"
        f"assert Lease(Path({str(path)!r}), 'other').try_take(); print('held', flush=True)\n"
        "time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert [h.study for h in holders(path)] == ["other"]
        assert not Lease(path, "mine").try_take()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        started = time.monotonic()
        mine = Lease(path, "mine")
        assert mine.try_take() and time.monotonic() - started < 1
        assert [h.study for h in holders(path)] == ["mine"]  # the dead one's note is stale
        mine.release()
    finally:
        holder.kill()


def test_a_planted_symlink_is_refused_and_not_followed(folder, tmp_path):
    target = tmp_path / "victim"
    target.write_text("keep")
    path = lease_path(folder, "GPU-1", 0)
    path.symlink_to(target)
    with pytest.raises(LeaseError, match=r"is a symlink.*remove it"):
        Lease(path, "s").try_take()
    assert target.read_text() == "keep"


def test_another_users_unreadable_lease_is_refused_naming_the_fix(folder):
    path = lease_path(folder, "GPU-1", 0)
    path.touch(mode=0o600)
    os.chmod(path, 0o600)
    if os.getuid() == 0:
        os.chown(path, 65534, 65534)  # nobody's
    else:
        pytest.skip("making a file of another user needs root")
    with pytest.raises(LeaseError, match=r"not readable by others.*chmod 644"):
        Lease(path, "s").try_take()


@pytest.mark.parametrize("spoil, told", [
    (lambda p: p.symlink_to(p.parent / "elsewhere", target_is_directory=True), "not a directory"),
    (lambda p: (p.mkdir(), os.chmod(p, 0o755)), "mode 755"),
])
def test_a_directory_that_cannot_be_trusted_is_refused(tmp_path, spoil, told):
    (tmp_path / "elsewhere").mkdir()
    folder = tmp_path / "leases"
    spoil(folder)
    with pytest.raises(LeaseError, match=told):
        checked_lease_dir(folder)
    assert not list((tmp_path / "elsewhere").iterdir())  # nothing written through it
