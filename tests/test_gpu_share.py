"""Which GPU slots a sweep may take on a shared machine: free leases only, a GPU packed at another
packing left alone, another program's GPU left out (or, when named, used with a warning), each
GPU left out with one line saying why."""

from __future__ import annotations

import os

import pytest

from sweeper.gpu_inventory import Gpu, GpuProcess
from sweeper.leases import Lease, checked_lease_dir, lease_path
from sweeper.sweep.gpu_share import survey

GPUS = [Gpu("0", "GPU-a", 0, 81559, 0), Gpu("1", "GPU-b", 0, 81559, 0)]


@pytest.fixture
def folder(tmp_path):
    return checked_lease_dir(tmp_path / "leases")


def test_every_slot_of_idle_gpus_is_free(folder):
    found = survey(["0", "1"], 2, folder, GPUS, named=False)
    assert [(s.gpu, s.key, s.slot) for s in found.free] == [
        ("0", "GPU-a", 0), ("0", "GPU-a", 1), ("1", "GPU-b", 0), ("1", "GPU-b", 1)]
    assert found.left_out == found.warnings == []


def test_a_gpu_leased_by_another_sweep_is_left_out_naming_it(folder):
    other = Lease(lease_path(folder, "GPU-a", 0), "mlp")
    assert other.try_take()
    try:
        found = survey(["0", "1"], 1, folder, GPUS, named=True)
        assert [s.gpu for s in found.free] == ["1"]
        (line,) = map(str, found.left_out)
        assert line.startswith("GPU 0: held by study mlp (user ") and f"pid {os.getpid()}" in line
        # By index or UUID, the same GPU: the lease is by UUID.
        assert survey(["GPU-a"], 1, folder, GPUS, named=True).free == []
    finally:
        other.release()
    assert len(survey(["0"], 1, folder, GPUS, named=False).free) == 1


def test_a_gpu_packed_otherwise_is_not_packed_further(folder):
    whole = Lease(lease_path(folder, "GPU-a", 0), "one_per_gpu", packing=1)
    assert whole.try_take()
    try:
        found = survey(["0"], 2, folder, GPUS, named=False)
        assert found.free == []
        assert "at 1 worker(s) per GPU, this sweep packs 2" in str(found.left_out[0])
    finally:
        whole.release()


def test_another_programs_gpu_is_left_out_unless_named(folder):
    busy = [Gpu("0", "GPU-a", 5000, 81559, 90, (GpuProcess(4242, 5000, "alice"),)), GPUS[1]]
    found = survey(["0", "1"], 1, folder, busy, named=False)
    assert [s.gpu for s in found.free] == ["1"]
    assert list(map(str, found.left_out)) == ["GPU 0: process 4242 of user alice using 5000 MiB"]
    assert not found.left_out[0].by_sweep
    named = survey(["0", "1"], 1, folder, busy, named=True)
    assert [s.gpu for s in named.free] == ["0", "1"]
    assert named.warnings == ["GPU 0 (named) is also used by process 4242 of user alice using "
                              "5000 MiB"]


def test_without_nvidia_smi_gpus_lease_by_the_id_given(folder):
    found = survey(["0", "1"], 1, folder, None, named=True)
    assert [(s.gpu, s.key) for s in found.free] == [("0", "0"), ("1", "1")]


def test_the_gpus_command_says_who_leases_each_gpu_and_what_else_runs(folder):
    from sweeper.sweep.gpu_share import describe_gpus

    busy = [Gpu("0", "GPU-a", 5000, 81559, 90, (GpuProcess(4242, 5000, "alice"),)), GPUS[1]]
    lease = Lease(lease_path(folder, "GPU-a", 0), "cnn_lr")
    assert lease.try_take()
    try:
        lines = describe_gpus(folder, busy)
    finally:
        lease.release()
    assert lines[0] == "GPU 0 GPU-a: 5000 of 81559 MiB, 90% busy"
    assert lines[1].startswith("  slot 0: study cnn_lr (user ")
    assert lines[2] == "  other programs: process 4242 of user alice using 5000 MiB"
    assert lines[3:] == ["GPU 1 GPU-b: 0 of 81559 MiB, 0% busy", "  no sweep leases it"]
    assert describe_gpus(folder, []) == [
        "no GPU found (no working nvidia-smi); CPU workers need no lease"]


def test_a_lease_that_cannot_be_trusted_stops_the_survey_naming_it(folder, tmp_path):
    from sweeper.leases import LeaseError

    lease_path(folder, "GPU-b", 0).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LeaseError, match=r"GPU lease .*gpu-GPU-b\.slot0\.lock is a symlink"):
        survey(["0", "1"], 1, folder, GPUS, named=False)
    assert not (tmp_path / "elsewhere").exists()
