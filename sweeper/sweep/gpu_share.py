"""Which GPU slots a sweep may take on a machine it shares: with other sweeps (their leases,
sweeper.leases) and with other programs (their processes, sweeper.gpu_inventory).

A slot is free when its lease is free and its GPU is not taken otherwise:
- a GPU where another sweep holds a lease at another packing (workers per GPU) is not packed
  further: a sweep that runs one worker per GPU counts on the whole GPU;
- a GPU where another program computes is left out, unless the user named the GPU (then it is
  used, with a warning): the user knows what runs there, sweeper does not.
Each GPU left out gets one line saying why.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from sweeper.errors import GpuError
from sweeper.gpu_inventory import Gpu, gpu_key, read_gpus
from sweeper.gpus import Slot
from sweeper.leases import (
    Holder,
    checked_lease_dir,
    holders,
    lease_dir,
    lease_path,
    open_lease,
)


@dataclass(frozen=True)
class FreeSlot:
    gpu: str  # the id the worker's CUDA_VISIBLE_DEVICES gets
    key: str  # what the lease names it by (its UUID where known)
    slot: int  # 0 .. packing - 1
    lease: Path


@dataclass(frozen=True)
class LeftOut:
    gpu: str
    why: str
    by_sweep: bool  # another sweep holds it: its slots wait for it; else another program uses it

    def __str__(self) -> str:
        return f"GPU {self.gpu}: {self.why}"


@dataclass
class Survey:
    free: list[FreeSlot]
    left_out: list[LeftOut]  # one per GPU not used now, and why
    warnings: list[str]  # GPUs named by the user that other programs use


def survey(gpu_ids: list[str], packing: int, folder: Path, gpus: list[Gpu] | None,
           named: bool, own_pids: Collection[int] = ()) -> Survey:
    """The slots of `gpu_ids` this sweep may take now. `named`: the user listed the GPUs.
    `own_pids`: this sweep's workers, whose leases and processes are its own."""
    result = Survey([], [], [])
    by_key = {g.uuid: g for g in gpus or []}
    for gpu_id in gpu_ids:
        key = gpu_key(gpu_id, gpus)
        leases = [lease_path(folder, key, slot) for slot in range(max(packing, _packed(folder, key)))]
        for path in leases:  # one that cannot be trusted stops the sweep here, saying why
            os.close(open_lease(path))
        held = {slot: [h for h in holders(path) if h.pid not in own_pids]
                for slot, path in enumerate(leases)}
        others = [h for hs in held.values() for h in hs]
        if any(h.packing != packing for h in others):
            result.left_out.append(LeftOut(gpu_id, f"{_held(others)} at {others[0].packing} "
                                           f"worker(s) per GPU, this sweep packs {packing}", True))
            continue
        foreign = _foreign(by_key.get(key), others, own_pids)
        if foreign and not named:
            result.left_out.append(LeftOut(gpu_id, foreign, False))
            continue
        if foreign:
            result.warnings.append(f"GPU {gpu_id} (named) is also used by {foreign}")
        free = [FreeSlot(gpu_id, key, slot, leases[slot]) for slot in range(packing)
                if not held[slot]]
        if not free:
            result.left_out.append(LeftOut(gpu_id, _held(others), True))
        result.free += free
    return result


def _packed(folder: Path, key: str) -> int:
    """How many slots of the GPU have lease files (held or not): another packing's slots too."""
    return len(list(folder.glob(f"{lease_path(folder, key, 0).name.rsplit('.slot', 1)[0]}.slot*.lock")))


def _held(holders_: list[Holder]) -> str:
    return "held by " + "; ".join(h.describe() for h in holders_)


def _foreign(gpu: Gpu | None, leased: list[Holder], own_pids: Collection[int]) -> str | None:
    """Another program computing on the GPU: a process that is neither a lease holder nor ours."""
    if gpu is None:
        return None
    ours = set(own_pids) | {h.pid for h in leased}
    others = [p for p in gpu.processes if p.pid not in ours]
    if not others:
        return None
    return ", ".join(f"process {p.pid} of user {p.user} using "
                     f"{'?' if p.used_mb is None else p.used_mb} MiB" for p in others)


def share_gpus(slots: list[Slot], named: bool, no_wait: bool, say) -> list[Slot]:
    """This sweep's GPU slots on a shared machine, each with its host-wide lease: those of GPUs
    another program computes on left out (unless named), those another sweep holds kept to be
    taken when it lets go (sweeper.sweep.pool waits for them). CPU slots as they are."""
    gpu_ids = list(dict.fromkeys(s.cuda_visible_devices for s in slots if s.cuda_visible_devices))
    if not gpu_ids:
        return slots
    packing = len(slots) // len(gpu_ids)
    folder = checked_lease_dir(lease_dir())
    gpus = read_gpus()
    found = survey(gpu_ids, packing, folder, gpus, named)
    for line in found.warnings:
        say(f"warning: {line}")
    for left in found.left_out:
        say(f"{'waiting for' if left.by_sweep else 'left out'} {left}")
    reasons = "; ".join(str(left) for left in found.left_out)
    if not found.free and no_wait:
        raise GpuError(f"no free GPU slot: {reasons}; run without --no-wait to wait for one")
    foreign = {left.gpu for left in found.left_out if not left.by_sweep}
    kept: list[Slot] = []
    per_gpu: dict[str, int] = {}
    for slot in slots:
        if slot.cuda_visible_devices in foreign:
            continue
        k = per_gpu[slot.cuda_visible_devices] = per_gpu.get(slot.cuda_visible_devices, -1) + 1
        lease = lease_path(folder, gpu_key(slot.cuda_visible_devices, gpus), k)
        kept.append(dataclasses.replace(slot, worker_id=len(kept), lease=lease))
    if not kept:
        raise GpuError(f"no GPU to use: {reasons}; name GPUs with --gpus (GPUS=...) to use them "
                       "anyway")
    return kept


def describe_gpus(folder: Path | None = None, gpus: list[Gpu] | None = None,
                  max_slots: int = 64) -> list[str]:
    """`sweeper gpus`: each GPU of this machine with its memory and utilisation, the sweeps that
    lease its slots, and the other programs computing on it."""
    folder = checked_lease_dir(folder or lease_dir())
    gpus = read_gpus() if gpus is None else gpus
    if not gpus:
        return ["no GPU found (no working nvidia-smi); CPU workers need no lease"]
    lines = []
    for gpu in gpus:
        memory = (f"{gpu.memory_used_mb if gpu.memory_used_mb is not None else '?'} of "
                  f"{gpu.memory_total_mb if gpu.memory_total_mb is not None else '?'} MiB")
        busy = "?" if gpu.utilization is None else f"{gpu.utilization}%"
        lines.append(f"GPU {gpu.index} {gpu.uuid}: {memory}, {busy} busy")
        held: list[Holder] = []
        for slot in range(max_slots):
            path = lease_path(folder, gpu.uuid, slot)
            if not path.exists():
                break
            for holder in holders(path):
                held.append(holder)
                lines.append(f"  slot {slot}: {holder.describe()}")
        if not held:
            lines.append("  no sweep leases it")
        if (others := _foreign(gpu, held, ())) is not None:
            lines.append(f"  other programs: {others}")
    return lines
