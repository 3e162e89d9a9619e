"""GPU discovery and worker slots (a fake nvidia-smi stands in for real GPUs)."""

from __future__ import annotations

import os

import pytest

from sweeper.errors import GpuError
from sweeper.gpus import (
    discover_gpus,
    make_slots,
    parse_gpu_list,
    parse_nvidia_smi,
    query_nvidia_smi,
    threads_per_worker,
)


@pytest.mark.parametrize("text, gpus", [
    ("0,1", ["0", "1"]), (" 2 , 3 ", ["2", "3"]), ("", []), ("-1", []), ("0,", ["0"]),
    ("GPU-8f3a,GPU-77b1", ["GPU-8f3a", "GPU-77b1"]),
])
def test_parse_gpu_list(text, gpus):
    assert parse_gpu_list(text) == gpus


@pytest.mark.parametrize("text", ["a,b", "0,0", "1.5"])
def test_bad_gpu_list(text):
    with pytest.raises(GpuError, match="--gpus"):
        parse_gpu_list(text)


def test_parse_nvidia_smi_output():
    output = "0, NVIDIA H100 80GB HBM3, GPU-1\n1, NVIDIA H100 80GB HBM3, GPU-2\n\n"
    assert parse_nvidia_smi(output) == ["0", "1"]
    assert parse_nvidia_smi("No devices were found\n") == []


def test_discovery_order(fake_nvidia_smi, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("FAKE_GPU_COUNT", "4")
    assert query_nvidia_smi() == ["0", "1", "2", "3"]
    assert discover_gpus(None) == ["0", "1", "2", "3"]  # nvidia-smi when nothing else says
    assert discover_gpus(None, {"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]  # env beats it
    assert discover_gpus(None, {"CUDA_VISIBLE_DEVICES": ""}) == []  # empty env hides all GPUs
    assert discover_gpus("1", {"CUDA_VISIBLE_DEVICES": "2,3"}) == ["1"]  # --gpus beats both


def test_no_nvidia_smi_means_no_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert discover_gpus(None, {}) == []


def test_slots_per_gpu_and_cpu():
    assert [(s.worker_id, s.cuda_visible_devices) for s in make_slots(["0", "1"], 2)] == [
        (0, "0"), (1, "0"), (2, "1"), (3, "1")]
    assert [s.cuda_visible_devices for s in make_slots([], 1, 3)] == ["", "", ""]
    assert len(make_slots([])) >= 1


def test_threads_split_the_cores(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert threads_per_worker(8) == 2 and threads_per_worker(32) == 1 and threads_per_worker(1) == 16


def test_packed_workers_each_get_a_share_of_their_gpu_memory(fake_nvidia_smi, monkeypatch):
    from sweeper.gpus import gpu_memory_mb, make_slots

    monkeypatch.setenv("FAKE_GPU_COUNT", "2")
    monkeypatch.setenv("FAKE_GPU_MEMORY", "40000")
    totals = gpu_memory_mb()
    assert totals == {"0": 40000, "1": 40000}
    slots = make_slots(["0", "1"], per_gpu=4, memory_mb=totals)
    assert [s.cuda_visible_devices for s in slots] == ["0"] * 4 + ["1"] * 4
    assert {s.memory_mb for s in slots} == {9000}  # 90% of 40000 MiB, in 4
    assert {s.memory_fraction for s in slots} == {0.225}
    alone = make_slots(["0", "1"], per_gpu=1, memory_mb=totals)
    assert {(s.memory_mb, s.memory_fraction) for s in alone} == {(None, None)}  # grows as needed


def test_a_packed_worker_cannot_take_more_than_its_share_on_a_real_gpu(tmp_path):
    """Where a GPU exists: TensorFlow in a worker given a 1024 MiB share refuses a 2 GiB tensor
    and takes a 256 MiB one."""
    import subprocess
    import sys

    from conftest import ROOT

    probe = ("import os, sys; from sweeper.pipeline.backend import configure_backend\n"
             "configure_backend(None)\nimport tensorflow as tf\n"
             "gpus = tf.config.list_logical_devices('GPU')\n"
             "if not gpus: print('no-gpu'); sys.exit(0)\n"
             "small = tf.zeros((64, 1024, 1024), tf.float32)  # 256 MiB\n"
             "try:\n    big = tf.zeros((512, 1024, 1024), tf.float32); print('big-fits')\n"
             "except tf.errors.ResourceExhaustedError:\n    print('big-refused')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SWEEPER_GPU_MEMORY_MB": "1024",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    if "no-gpu" in out.stdout:
        pytest.skip("no GPU here: TensorFlow sees none, so a memory share cannot be tried")
    assert "big-refused" in out.stdout
