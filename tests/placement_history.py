"""A history check of placements over etcd's own record of a run (issue 18).

etcd keeps every revision: replaying the watch from the run's first revision gives every state
the placement records (`objects/placements/node/<name>`) were ever in, with who led at each one.
At every revision that wrote a placement record:

- no replica of an app is allocated on two nodes at once;
- no node holds more than the capacity it reported (memory, CPU, disk);
- the write was fenced (`internal/fenced`, written by the same transaction, names its term) and
  that term is the one leading at that revision (the leader key's creating revision): every
  placement was decided by the leader of its term, none by a replica whose term was over.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from controller_api.store.etcd_client import EtcdClient

PLACEMENT = "objects/placements/node/"


@dataclass
class History:
    violations: list[str] = field(default_factory=list)
    placement_terms: dict[int, str] = field(default_factory=dict)  # term -> its leader
    placement_writes: int = 0
    final: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # node -> allocations


def _events(etcd: EtcdClient, prefix: str, start: int) -> list[Any]:
    """Every event under `prefix` from `start` up to the revision now, oldest first."""
    last = etcd.revision()
    out: list[Any] = []
    stream = etcd.watch(prefix.encode(), start)
    try:
        for batch in stream:
            out += batch.events
            if batch.revision >= last:
                break
    finally:
        stream.cancel()
    return out


def check_placements(etcd: EtcdClient, prefix: str, start: int) -> History:
    history = History()
    leader: tuple[int, str] | None = None  # (term, replica)
    records: dict[str, list[dict[str, Any]]] = {}
    capacity: dict[str, dict[str, int]] = {}
    by_revision: dict[int, list[Any]] = defaultdict(list)
    for event in _events(etcd, prefix, start):
        by_revision[int(event.kv.mod_revision)].append(event)
    for revision in sorted(by_revision):
        witness, placed = None, False
        for event in by_revision[revision]:
            key = bytes(event.kv.key).decode()[len(prefix) :]
            if not key.startswith(("internal/leader", "internal/fenced", "nodes/", PLACEMENT)):
                continue
            value = None if event.type == 1 else json.loads(bytes(event.kv.value))
            if key == "internal/leader":
                leader = None if value is None else (int(event.kv.create_revision),
                                                     str(value["replica"]))  # fmt: skip
            elif key == "internal/fenced" and value is not None:
                witness = int(value["term"])
            elif key.startswith("nodes/") and value is not None:
                cap = (value.get("status") or {}).get("workload_capacity") or {}
                capacity[value["name"]] = {
                    "memory": int(cap.get("memory_bytes", 0)),
                    "millicpu": int(cap.get("millicpu", 0)),
                    "disk": int(cap.get("disk_bytes", 0)),
                }
            elif key.startswith(PLACEMENT):
                placed = True
                node = key[len(PLACEMENT) :]
                records[node] = [] if value is None else list(value["allocations"])
        if placed:
            history.placement_writes += 1
            _check(history, revision, witness, leader, records, capacity)
    history.final = records
    return history


def _check(
    history: History,
    revision: int,
    witness: int | None,
    leader: tuple[int, str] | None,
    records: dict[str, list[dict[str, Any]]],
    capacity: dict[str, dict[str, int]],
) -> None:
    bad = history.violations.append
    if witness is None:
        bad(f"revision {revision}: a placement written unfenced")
    elif leader is None or leader[0] != witness:
        bad(f"revision {revision}: a placement fenced by term {witness} while "
            + (f"term {leader[0]} ({leader[1]}) leads" if leader else "no one leads"))  # fmt: skip
    else:
        history.placement_terms[witness] = leader[1]
    where: dict[tuple[str, int], str] = {}
    for node, allocations in records.items():
        for a in allocations:
            replica = (str(a["app"]), int(a["replica"]))
            if replica in where:
                bad(f"revision {revision}: {replica[0]} replica {replica[1]} on both "
                    f"{where[replica]} and {node}")  # fmt: skip
            where[replica] = node
        cap = capacity.get(node, {"memory": 0, "millicpu": 0, "disk": 0})
        for what in ("memory", "millicpu", "disk"):
            used = sum(int(a[what]) for a in allocations)
            if used > cap[what]:
                bad(f"revision {revision}: node {node} holds {used} {what}, has {cap[what]}")
