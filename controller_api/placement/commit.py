"""Committing a plan through the Store: one transaction that re-checks capacity, so two plans
made at the same time (two controllers, two apps) never overcommit a node.

Allocations are kept one record per node (`placements/node/NAME`), so a plan touches only the
records of the nodes it changes. The commit reads them, applies the plan's stops and placements,
checks each node that gains a replica against its capacity *as stored now* (Nomad's plan applier
does the same against stale plans), and writes them with compare-and-set on the revisions it
read: if another plan wrote one of those nodes in between, the store raises `Conflict` and the
caller plans again on fresh state. Nothing is written unless everything fits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from common.errors import LispmeshError
from controller_api.apps.fenced import commit
from controller_api.apps.spec import Resources
from controller_api.placement.model import Allocation, Node, Plan
from controller_api.store import PLACEMENTS, Fence, ObjectWrite, Store

_RECORD = "node/"
_GI = 1 << 30


class PlanRejected(LispmeshError):
    """The plan does not fit the state as stored now (made against a stale snapshot)."""


def _encode(allocations: list[Allocation]) -> str:
    items = [
        {"app": a.app, "replica": a.replica, "memory": a.resources.memory,
         "millicpu": a.resources.millicpu, "disk": a.resources.disk, "created": a.created,
         "version": a.version, "running": a.running}
        for a in sorted(allocations, key=lambda a: (a.app, a.replica))
    ]  # fmt: skip
    return json.dumps({"allocations": items}, separators=(",", ":"))


def _decode(node: str, value: str) -> list[Allocation]:
    data: dict[str, Any] = json.loads(value)
    return [
        Allocation(a["app"], a["replica"], node,
                   Resources(a["memory"], a["millicpu"], a["disk"]), a["created"],
                   a.get("version", ""), a.get("running", True))
        for a in data["allocations"]
    ]  # fmt: skip


def read_allocations(store: Store) -> tuple[Allocation, ...]:
    """Every committed allocation, for the scheduler's snapshot."""
    out: list[Allocation] = []
    for record in store.list_objects(PLACEMENTS):
        if record.key.startswith(_RECORD):
            out += _decode(record.key[len(_RECORD) :], record.value)
    return tuple(out)


def read_node_allocations(store: Store, node: str) -> tuple[Allocation, ...]:
    """The allocations committed to one node (its desired state's workloads)."""
    record = store.get_object(PLACEMENTS, _RECORD + node)
    return tuple(_decode(node, record.value)) if record else ()


def commit_plan(
    store: Store, plan: Plan, nodes: Mapping[str, Node], now: float, fence: Fence | None = None
) -> int:
    """Write `plan` (stops done, placements made at `now`, not running until `mark_running`);
    the store's new revision. Raises
    `PlanRejected` if a node would be overcommitted or is unknown, `Conflict` if a touched node
    changed since it was read here."""
    # A copy replaced because its node is lost (not draining: that one serves until its
    # replacement runs) no longer counts as running, so its EID moves to the replacement now.
    replaced = {
        (p.replaces, p.replica)
        for p in plan.placements
        if p.replaces is not None and not getattr(nodes.get(p.replaces), "draining", False)
    }
    touched = sorted(
        {p.node for p in plan.placements} | {s.node for s in plan.stops} | {n for n, _ in replaced}
    )
    if not touched:
        return store.revision()
    writes = []
    for name in touched:
        record = store.get_object(PLACEMENTS, _RECORD + name)
        current = _decode(name, record.value) if record else []
        gone = {s.replica for s in plan.stops if s.node == name}
        after = [
            replace(a, running=False) if (name, a.replica) in replaced and a.app == plan.app else a
            for a in current
            if not (a.app == plan.app and a.replica in gone)
        ]
        if record is None and not after and not any(p.node == name for p in plan.placements):
            continue  # a vanished node's record: nothing to write
        added = [
            Allocation(plan.app, p.replica, name, p.resources, now, plan.version, running=False)
            for p in plan.placements
            if p.node == name
        ]
        if added:
            node = nodes.get(name)
            if node is None or node.health != "online" or node.draining:
                state = (
                    "unknown" if node is None else ("draining" if node.draining else node.health)
                )
                raise PlanRejected(f"plan for {plan.app} refused: node {name} is {state}")
            held = {(a.app, a.replica) for a in after}
            for a in added:
                if (a.app, a.replica) in held:
                    raise PlanRejected(
                        f"plan for {plan.app} refused: replica {a.replica} is already on {name}"
                    )
            after += added
            _check_capacity(plan.app, node, after)
        value = _encode(after) if after else None
        writes.append(
            ObjectWrite(PLACEMENTS, _RECORD + name, value, record.revision if record else 0)
        )
    return commit(store, writes, fence)


def mark_running(
    store: Store, node: str, app: str, replica: int, fence: Fence | None = None
) -> bool:
    """The node reports the replica running (a rolling update may go on); False if there is no
    such allocation. `Conflict` if the node's record changed in between: call again."""
    record = store.get_object(PLACEMENTS, _RECORD + node)
    if record is None:
        return False
    allocations = _decode(node, record.value)
    hit = [a for a in allocations if (a.app, a.replica) == (app, replica)]
    if not hit:
        return False
    if not hit[0].running:
        after = [replace(a, running=True) if a is hit[0] else a for a in allocations]
        write = ObjectWrite(PLACEMENTS, _RECORD + node, _encode(after), record.revision)
        commit(store, [write], fence)
    return True


def _check_capacity(app: str, node: Node, allocations: list[Allocation]) -> None:
    cap = node.capacity
    used = [sum(a.resources.memory for a in allocations),
            sum(a.resources.millicpu for a in allocations),
            sum(a.resources.disk for a in allocations)]  # fmt: skip
    for what, have, limit, unit, scale in (
        ("memory", used[0], cap.memory, "GiB", _GI),
        ("cpu", used[1], cap.millicpu, "CPUs", 1000),
        ("disk", used[2], cap.disk, "GiB", _GI),
    ):
        if have > limit:
            raise PlanRejected(
                f"plan for {app} refused: node {node.name} would use {have / scale:g} {unit} "
                f"of {what}, it has {limit / scale:g}"
            )
