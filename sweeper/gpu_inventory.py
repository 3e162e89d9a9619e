"""What this machine's GPUs are doing, as nvidia-smi tells it: each GPU's index, UUID, memory and
utilisation, and the compute processes on it with their user and memory. Read without importing
a framework (the controller side never does), and nothing when there is no nvidia-smi.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

GPU_QUERY = ["--query-gpu=index,uuid,memory.used,memory.total,utilization.gpu",
             "--format=csv,noheader,nounits"]
APPS_QUERY = ["--query-compute-apps=gpu_uuid,pid,used_memory", "--format=csv,noheader,nounits"]


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_mb: int | None
    user: str  # '?' where the process is not visible from here (another container)


@dataclass(frozen=True)
class Gpu:
    index: str
    uuid: str
    memory_used_mb: int | None
    memory_total_mb: int | None
    utilization: int | None  # percent; None where the driver does not say (MIG)
    processes: tuple[GpuProcess, ...] = ()


def read_gpus(timeout: float = 10.0) -> list[Gpu] | None:
    """The GPUs nvidia-smi sees, with their processes; None without a working nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        gpus = subprocess.run([exe, *GPU_QUERY], capture_output=True, text=True, timeout=timeout)
        apps = subprocess.run([exe, *APPS_QUERY], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if gpus.returncode != 0:
        return None
    processes = parse_apps(apps.stdout) if apps.returncode == 0 else {}
    return [Gpu(g.index, g.uuid, g.memory_used_mb, g.memory_total_mb, g.utilization,
                tuple(processes.get(g.uuid, ()))) for g in parse_gpus(gpus.stdout)]


def parse_gpus(text: str) -> list[Gpu]:
    """Lines of `index, uuid, memory.used, memory.total, utilization.gpu` (no units)."""
    found = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 5 or not fields[0].isdigit():
            continue
        index, uuid, used, total, utilization = fields
        found.append(Gpu(index, uuid, _number(used), _number(total), _number(utilization)))
    return found


def parse_apps(text: str) -> dict[str, list[GpuProcess]]:
    """Lines of `gpu_uuid, pid, used_memory` -> the processes of each GPU, by UUID."""
    found: dict[str, list[GpuProcess]] = {}
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 3 or not fields[1].isdigit():
            continue
        uuid, pid, used = fields
        found.setdefault(uuid, []).append(GpuProcess(int(pid), _number(used), _owner(int(pid))))
    return found


def gpu_key(gpu_id: str, gpus: list[Gpu] | None) -> str:
    """What a lease names a GPU by: its UUID where nvidia-smi tells it (an index or a UUID as
    given), else the id as given."""
    for gpu in gpus or []:
        if gpu_id in (gpu.index, gpu.uuid):
            return gpu.uuid
    return gpu_id


def _number(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:
        return None  # '[N/A]', '[Not Supported]'


def _owner(pid: int) -> str:
    import psutil

    try:
        return psutil.Process(pid).username()
    except (psutil.Error, KeyError):
        return "?"
