"""Admission control: does a workload fit what the node really has? (pure functions)

Memory and disk are not overcommitted: a workload is refused when the memory of everything that
should be running, plus its own (plus the VMM's overhead for a VM: EVE learned to count it), is
more than the node's memory less a reserve for the node itself, or when its disk limit is more than
the free space. CPU is compressible: one workload may not ask for more CPUs than the node has,
and all of them together for at most `cpu_overcommit` times that. The reason says which resource,
how much was asked and how much is left.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from node.workloads.package import WorkloadSpec

MiB = 1 << 20
VM_OVERHEAD = 64 * MiB  # qemu's own memory per VM, beyond the guest's RAM (TCG needs more)
NODE_RESERVE = 256 * MiB  # for the agent, the mesh and the kernel


@dataclass(frozen=True)
class Capacity:
    memory: int  # bytes workloads may use
    cpus: float
    disk_free: int  # bytes
    cpu_overcommit: float = 4.0


def memory_demand(spec: WorkloadSpec) -> int:
    overhead = VM_OVERHEAD + spec.resources.memory // 64 if spec.kind == "vm" else 0
    return spec.resources.memory + overhead


def admit(capacity: Capacity, running: Iterable[WorkloadSpec], request: WorkloadSpec) -> str:
    """Why `request` does not fit beside `running` (empty when it does)."""
    others = list(running)
    used = sum(memory_demand(s) for s in others)
    need = memory_demand(request)
    if used + need > capacity.memory:
        return (f"needs {need // MiB} MiB of memory, {max(0, capacity.memory - used) // MiB} MiB "
                f"free of {capacity.memory // MiB} MiB ({len(others)} workloads)")  # fmt: skip
    if request.resources.cpus > capacity.cpus:
        return f"asks for {request.resources.cpus:g} CPUs, the node has {capacity.cpus:g}"
    cpus = sum(s.resources.cpus for s in others) + request.resources.cpus
    if cpus > capacity.cpus * capacity.cpu_overcommit:
        return (f"{cpus:g} CPUs asked in all, more than {capacity.cpu_overcommit:g}x the "
                f"node's {capacity.cpus:g}")  # fmt: skip
    if request.resources.disk > capacity.disk_free:
        return (f"may grow to {request.resources.disk // MiB} MiB of disk, "
                f"{capacity.disk_free // MiB} MiB free")  # fmt: skip
    return ""


def host_capacity(state_dir: Path, reserve: int = NODE_RESERVE) -> Capacity:
    """What this machine has: MemTotal less the reserve, its CPUs, the free disk under
    `state_dir` (where rootfs and disks go)."""
    total = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
    stat = os.statvfs(state_dir if state_dir.exists() else state_dir.parent)
    return Capacity(max(0, total - reserve), float(os.cpu_count() or 1),
                    stat.f_bavail * stat.f_frsize)  # fmt: skip
