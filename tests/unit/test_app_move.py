"""Which node registers a replica's EID while it moves (issue 14 item 4), on the Store: the
copy on a lost node gives its EID up as soon as its replacement is committed; a copy on a
draining node keeps it until its replacement runs (make-before-break)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path

import pytest

from controller_api.apps.eids import AppPool, claim_eids
from controller_api.apps.spec import AppSpec, Constraints, Resources
from controller_api.apps.workloads import allowances
from controller_api.placement import ClusterState, Node, schedule
from controller_api.placement.commit import commit_plan, mark_running, read_allocations
from controller_api.store import SqliteStore

GI = 1 << 30
POOL = AppPool("apps", IPv4Network("10.251.0.0/24"), IPv6Network("fd00:1::/64"))
EID = [ip_network("10.251.0.1/32"), ip_network("fd00:1::1/128")]
SPEC = AppSpec(
    filename="app.yml", name="web", labels=(), image="sha256:" + "0" * 64, kind="container",
    replicas=1, resources=Resources(GI, 1000, GI), constraints=Constraints(),
)  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "c.db")
    claim_eids(s, POOL, SPEC)
    yield s
    s.close()


def nodes(**health: str) -> dict[str, Node]:
    return {
        name: Node(name, Resources(4 * GI, 4000, 10 * GI), health=h if h != "draining" else
                   "online", draining=h == "draining")
        for name, h in health.items()
    }  # fmt: skip


def place_on_a(store: SqliteStore) -> None:
    # Only a exists at first: the replica goes there, and runs.
    first = nodes(a="online")
    commit_plan(store, schedule(ClusterState(tuple(first.values())), SPEC), first, now=1.0)
    mark_running(store, "a", "web", 0)
    assert allowances(store, POOL) == {"a": EID}


def test_a_replacement_for_a_copy_on_a_lost_node_takes_the_eid_at_once(
    store: SqliteStore,
) -> None:
    place_on_a(store)
    view = nodes(a="lost", b="online")
    plan = schedule(ClusterState(tuple(view.values()), read_allocations(store)), SPEC)
    assert [(p.node, p.replaces) for p in plan.placements] == [("b", "a")]
    commit_plan(store, plan, view, now=2.0)
    # Not running on b yet, but the copy on a is no longer counted as running: b registers.
    by_node = {a.node: a for a in read_allocations(store)}
    assert not by_node["a"].running and not by_node["b"].running
    assert allowances(store, POOL) == {"b": EID}


def test_a_copy_on_a_draining_node_keeps_the_eid_until_its_replacement_runs(
    store: SqliteStore,
) -> None:
    place_on_a(store)
    view = nodes(a="draining", b="online")
    plan = schedule(ClusterState(tuple(view.values()), read_allocations(store)), SPEC)
    assert [(p.node, p.replaces) for p in plan.placements] == [("b", "a")]
    commit_plan(store, plan, view, now=2.0)
    assert allowances(store, POOL) == {"a": EID}  # a still serves
    mark_running(store, "b", "web", 0)
    assert allowances(store, POOL) == {"b": EID}


def test_the_newest_of_two_running_copies_registers(store: SqliteStore) -> None:
    place_on_a(store)
    allocations = read_allocations(store)
    older = replace(allocations[0], node="b", created=0.5)
    assert allowances(store, POOL, (*allocations, older)) == {"a": EID}
