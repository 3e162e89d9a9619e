"""GPU discovery and worker slots (a fake nvidia-smi stands in for real GPUs)."""

from __future__ import annotations

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
