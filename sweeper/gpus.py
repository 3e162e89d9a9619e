"""GPU discovery and worker slots.

GPUs come from --gpus, else CUDA_VISIBLE_DEVICES, else nvidia-smi, else there are none. Each GPU
gets `per_gpu` worker slots; each slot's worker sees only its GPU through CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sweeper.errors import GpuError


@dataclass(frozen=True)
class Slot:
    """One worker process: its id, what CUDA_VISIBLE_DEVICES it gets ('' = CPU only) and, where
    several workers share a GPU, its share of that GPU's memory in MiB."""

    worker_id: int
    cuda_visible_devices: str
    memory_mb: int | None = None
    memory_fraction: float | None = None  # the same share, as JAX and PyTorch take it
    lease: Path | None = None  # a GPU slot's host-wide lease (sweeper.leases); None on the CPU


# Set when workers share a GPU: this worker's share of its memory, in MiB and as a fraction
# (the pool sets them, the worker's backend set-up reads them).
GPU_MEMORY_ENV = "SWEEPER_GPU_MEMORY_MB"
GPU_FRACTION_ENV = "SWEEPER_GPU_MEMORY_FRACTION"
# What packed workers may use of a GPU between them: the CUDA context of each takes some too.
SHARED_GPU_USABLE = 0.9


def parse_gpu_list(text: str, source: str = "--gpus") -> list[str]:
    """'0,1' -> ['0', '1']; GPU UUIDs (GPU-...) and MIG ids are kept as they are. '' or -1 = none."""
    items = [item.strip() for item in text.split(",")]
    items = [item for item in items if item]
    if not items or items == ["-1"]:
        return []
    for item in items:
        # ASCII digits only: str.isdigit() also takes '²' or '٣', which CUDA does not.
        if not ((item.isascii() and item.isdigit()) or item.startswith(("GPU-", "MIG-"))):
            raise GpuError(f"{source}: {item!r} is not a GPU index or UUID; write e.g. 0,1")
    if len(set(items)) != len(items):
        raise GpuError(f"{source}: GPU {text!r} lists a GPU twice; list each GPU once")
    return items


def parse_nvidia_smi(output: str) -> list[str]:
    """Indices from `nvidia-smi --query-gpu=index --format=csv,noheader` output."""
    return [line.split(",")[0].strip() for line in output.splitlines()
            if line.strip() and line.split(",")[0].strip().isdigit()]


def query_nvidia_smi(timeout: float = 10.0) -> list[str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        result = subprocess.run([exe, "--query-gpu=index", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(result.stdout) if result.returncode == 0 else []


def discover_gpus(requested: str | None = None, environ=os.environ) -> list[str]:
    if requested is not None:
        return parse_gpu_list(requested)
    if "CUDA_VISIBLE_DEVICES" in environ:
        return parse_gpu_list(environ["CUDA_VISIBLE_DEVICES"], "CUDA_VISIBLE_DEVICES")
    return query_nvidia_smi()


def default_cpu_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def make_slots(gpus: list[str], per_gpu: int = 1, cpu_workers: int | None = None,
               memory_mb: dict[str, int] | None = None) -> list[Slot]:
    """One slot per GPU x per_gpu; with no GPU, `cpu_workers` CPU-only slots. Workers packed
    on one GPU each get an equal share of its memory (`memory_mb`: total MiB per GPU), so none
    can push the others out of memory."""
    if per_gpu < 1:
        raise GpuError(f"--workers-per-gpu: must be at least 1, got {per_gpu}")
    if gpus:
        memory_mb = memory_mb or {}

        def share(gpu: str) -> int | None:
            total = memory_mb.get(gpu)
            return int(total * SHARED_GPU_USABLE / per_gpu) if per_gpu > 1 and total else None

        fraction = round(SHARED_GPU_USABLE / per_gpu, 3) if per_gpu > 1 else None
        return [Slot(i, gpu, share(gpu), fraction)
                for i, gpu in enumerate(g for g in gpus for _ in range(per_gpu))]
    count = default_cpu_workers() if cpu_workers is None else cpu_workers
    if count < 1:
        raise GpuError(f"--workers: must be at least 1, got {count}")
    return [Slot(i, "") for i in range(count)]


def threads_per_worker(n_workers: int) -> int:
    """CPU threads each worker's TensorFlow may use, so workers don't fight over cores."""
    return max(1, (os.cpu_count() or 1) // max(1, n_workers))


def gpu_memory_mb(timeout: float = 10.0) -> dict[str, int]:
    """{index: total MiB} from nvidia-smi, empty where there is none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    try:
        result = subprocess.run([exe, "--query-gpu=index,memory.total",
                                 "--format=csv,noheader,nounits"],
                                capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    totals = {}
    for line in result.stdout.splitlines():
        index, _, total = (part.strip() for part in line.partition(","))
        if index.isdigit() and total.split(",")[0].strip().isdigit():
            totals[index] = int(total.split(",")[0])
    return totals


def gpu_names(timeout: float = 10.0) -> dict[str, str]:
    """{index: name} from nvidia-smi, empty where there is none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    try:
        result = subprocess.run([exe, "--query-gpu=index,name", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    names = {}
    for line in result.stdout.splitlines():
        index, _, name = line.partition(",")
        if index.strip().isdigit():
            names[index.strip()] = name.split(",")[0].strip()
    return names
