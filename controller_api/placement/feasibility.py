"""Which nodes may take a replica at all, and what a replica costs a node.

Static filters depend only on the node and the app (health, drain, runtime, hypervisor, labels)
and run once per app and node; the dynamic ones (capacity, distinct_hosts) change as the plan
fills nodes, and a node that fails one never passes it again within the plan (every replica of an
app asks the same, and a node only fills up), so the scheduler drops it from the candidates.
"""

from __future__ import annotations

from controller_api.apps.spec import AppSpec, Resources
from controller_api.placement.model import Node

# A VM costs more than its guest memory: the emulator, page tables, MMIO and device buffers. EVE
# (memorysizemgmt) charges app memory + a VMM overhead and grew that estimate after OOMs; we
# charge a fixed part plus a share of the guest memory, and the emulator threads' CPU.
VM_OVERHEAD_MEMORY = 64 << 20
VM_OVERHEAD_SHARE = 40  # 1/40 = 2.5% of the guest memory
VM_OVERHEAD_MILLICPU = 100


def charge(app: AppSpec) -> Resources:
    """What one replica of `app` takes from a node."""
    r = app.resources
    if app.kind != "vm":
        return r
    extra = VM_OVERHEAD_MEMORY + r.memory // VM_OVERHEAD_SHARE
    return Resources(r.memory + extra, r.millicpu + VM_OVERHEAD_MILLICPU, r.disk)


def static_reason(node: Node, app: AppSpec) -> str | None:
    """Why `node` can never take a replica of `app` now, or None. The words are counted in
    explanations ("3 filtered by label site=factory, 1 draining")."""
    if node.health != "online":
        return node.health  # lost, or disconnected: nothing new is sent to a node we cannot reach
    if node.draining:
        return "draining"
    if app.kind not in node.kinds:
        return f"without the {app.kind} runtime"
    hypervisor = app.constraints.hypervisor
    if hypervisor is not None and hypervisor not in node.hypervisors:
        return f"without hypervisor {hypervisor}"
    for match in app.constraints.labels:
        if node.labels.get(match.key) not in match.values:
            return f"filtered by label {match}"
    return None
