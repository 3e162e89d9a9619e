"""What nvidia-smi says of each GPU and its processes, parsed; a GPU named by its UUID however it
was given."""

from __future__ import annotations

import os

from sweeper.gpu_inventory import Gpu, gpu_key, parse_apps, parse_gpus

GPUS = """0, GPU-aaaa-0000, 1024, 81559, 37
1, GPU-bbbb-1111, 0, 81559, 0
2, MIG-cccc-2222, 12, 40192, [N/A]
"""


def test_gpus_with_memory_and_utilisation():
    gpus = parse_gpus(GPUS)
    assert [(g.index, g.uuid, g.memory_used_mb, g.utilization) for g in gpus] == [
        ("0", "GPU-aaaa-0000", 1024, 37), ("1", "GPU-bbbb-1111", 0, 0),
        ("2", "MIG-cccc-2222", 12, None)]
    assert parse_gpus("No devices were found\n") == []


def test_processes_by_gpu_with_their_user():
    apps = parse_apps(f"GPU-aaaa-0000, {os.getpid()}, 1000\nGPU-aaaa-0000, 999999999, [N/A]\n")
    mine, gone = apps["GPU-aaaa-0000"]
    assert (mine.pid, mine.used_mb) == (os.getpid(), 1000) and mine.user != "?"
    assert (gone.used_mb, gone.user) == (None, "?")  # not visible from here


def test_a_gpu_is_named_by_its_uuid_however_given():
    gpus = parse_gpus(GPUS)
    assert gpu_key("1", gpus) == gpu_key("GPU-bbbb-1111", gpus) == "GPU-bbbb-1111"
    assert gpu_key("7", gpus) == "7"  # unknown to nvidia-smi: as given
    assert gpu_key("0", None) == "0"  # no nvidia-smi
    assert isinstance(gpus[0], Gpu)
