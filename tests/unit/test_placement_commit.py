"""Committing plans and app EIDs through the Store (issue 14 items 1-2), on SQLite and a real etcd:
one transaction that re-checks capacity, so two plans never overcommit a node; EIDs from an app
pool, stable for the app's life and never given twice."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

import pytest

from controller_api.apps.eids import (
    ANYCAST,
    AppPool,
    EidPoolExhausted,
    claim_eids,
    release_eids,
)
from controller_api.apps.spec import AppSpec, Constraints, EidPolicy, Resources, UpdateStrategy
from controller_api.placement import ClusterState, Node, schedule
from controller_api.placement.commit import (
    PlanRejected,
    commit_plan,
    mark_running,
    read_allocations,
)
from controller_api.store import Conflict, ObjectWrite, SqliteStore, Store
from controller_api.store.etcd import EtcdStore
from tests.etcd_cluster import EtcdCluster, unique_prefix

GI = 1 << 30


def app(name: str = "web", replicas: int = 2, **kw: object) -> AppSpec:
    fields: dict[str, object] = {
        "filename": "app.yml", "name": name, "labels": (), "image": "sha256:" + "0" * 64,
        "kind": "container", "replicas": replicas, "resources": Resources(GI, 1000, GI),
        "constraints": Constraints(distinct_hosts=True),
    }  # fmt: skip
    fields.update(kw)
    return AppSpec(**fields)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "etcd"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Both backends: the commit uses only get/list/commit_objects of the Store protocol."""
    if request.param == "sqlite":
        s: Store = SqliteStore(tmp_path / "c.db")
    else:
        cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
        s = EtcdStore(cluster.endpoints, prefix=unique_prefix())
    yield s
    s.close()


NODES = (Node("a", Resources(2 * GI, 4000, 10 * GI)), Node("b", Resources(2 * GI, 4000, 10 * GI)))


def test_a_plan_is_committed_and_read_back(store: Store) -> None:
    spec = app()
    plan = schedule(ClusterState(NODES), spec)
    commit_plan(store, plan, {n.name: n for n in NODES}, now=5.0)
    allocations = read_allocations(store)
    assert sorted((a.replica, a.node, a.created) for a in allocations) == [
        (0, plan.placements[0].node, 5.0), (1, plan.placements[1].node, 5.0)
    ]  # fmt: skip
    # scheduled again on what the store holds: nothing to do; then scaled down: stopped
    state = ClusterState(NODES, allocations)
    assert schedule(state, spec).empty
    down = schedule(state, replace(spec, replicas=1))
    commit_plan(store, down, {n.name: n for n in NODES}, now=6.0)
    assert [a.replica for a in read_allocations(store)] == [0]


def test_a_rolling_update_waits_for_the_nodes_to_report_running(store: Store) -> None:
    nodes = {n.name: n for n in NODES}
    old = app(replicas=2, update=UpdateStrategy("rolling", 1))
    commit_plan(store, schedule(ClusterState(NODES), old), nodes, now=1.0)
    assert {(a.version, a.running) for a in read_allocations(store)} == {(old.version, False)}
    new = replace(old, image="sha256:" + "1" * 64)
    # not running yet: nothing may be taken down
    assert schedule(ClusterState(NODES, read_allocations(store)), new).empty
    for a in read_allocations(store):
        assert mark_running(store, a.node, a.app, a.replica)
    assert not mark_running(store, "a", "web", 7)
    rounds = 0
    while not (plan := schedule(ClusterState(NODES, read_allocations(store)), new)).empty:
        assert len(plan.placements) == 1 and plan.placements[0].reason == "rolling update"
        commit_plan(store, plan, nodes, now=2.0 + rounds)
        assert schedule(ClusterState(NODES, read_allocations(store)), new).empty  # in flight
        placed = plan.placements[0]
        mark_running(store, placed.node, "web", placed.replica)
        rounds += 1
        assert rounds <= 4
    assert rounds == 2
    assert {a.version for a in read_allocations(store)} == {new.version}


def test_two_plans_on_one_snapshot_never_overcommit(store: Store) -> None:
    nodes = {n.name: n for n in NODES}
    snapshot = ClusterState(NODES)
    big = Resources(3 * GI // 2, 1000, GI)
    first = schedule(snapshot, app("one", resources=big))
    second = schedule(snapshot, app("two", resources=big))  # made on the same state: fits alone
    commit_plan(store, first, nodes, now=1.0)
    with pytest.raises(PlanRejected, match=r"^plan for two refused: node [ab] would use 3 GiB "
                                           r"of memory, it has 2$"):  # fmt: skip
        commit_plan(store, second, nodes, now=1.0)
    assert {a.app for a in read_allocations(store)} == {"one"}
    # planned again on fresh state: no room is left, and it says why
    again = schedule(ClusterState(NODES, read_allocations(store)), app("two", resources=big))
    assert not again.placements and "2 exhausted memory" in "\n".join(again.lines())


class _Racing:
    """The real store, with another controller committing just before our commit."""

    def __init__(self, store: Store, before: Any) -> None:
        self.store, self.before = store, before

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def commit_objects(self, writes: Sequence[ObjectWrite]) -> int:
        self.before()
        return self.store.commit_objects(writes)


def test_a_plan_racing_another_conflicts_instead_of_overcommitting(store: Store) -> None:
    nodes = {n.name: n for n in NODES}
    snapshot = ClusterState(NODES)
    first, second = schedule(snapshot, app("one")), schedule(snapshot, app("two"))
    racing = _Racing(store, lambda: commit_plan(store, first, nodes, now=1.0))
    with pytest.raises(Conflict):
        commit_plan(racing, second, nodes, now=1.0)  # type: ignore[arg-type]
    assert {a.app for a in read_allocations(store)} == {"one"}


def test_a_plan_for_a_node_gone_bad_is_refused(store: Store) -> None:
    plan = schedule(ClusterState(NODES), app(replicas=1))
    target = plan.placements[0].node
    for changed, state in ((None, "unknown"), ("draining", "draining"), ("lost", "lost")):
        nodes = {n.name: n for n in NODES if n.name != target}
        if changed == "draining":
            nodes[target] = replace(NODES[0], name=target, draining=True)
        elif changed == "lost":
            nodes[target] = replace(NODES[0], name=target, health="lost")
        with pytest.raises(PlanRejected, match=f"node {target} is {state}$"):
            commit_plan(store, plan, nodes, now=1.0)
    assert read_allocations(store) == ()


POOL = AppPool("apps", IPv4Network("10.200.0.0/29"), IPv6Network("fd00:a::/120"))


def test_eids_are_stable_and_unique(store: Store) -> None:
    web = claim_eids(store, POOL, app("web", replicas=2))
    assert {r: str(e) for r, e in web.items()} == {
        0: "10.200.0.1 fd00:a::1", 1: "10.200.0.2 fd00:a::2"
    }  # fmt: skip
    db = claim_eids(store, POOL, app("db", replicas=1))
    assert str(db[0].ipv4) == "10.200.0.3"
    # stable: asking again, scaling up, down and up again keeps every replica's EID
    assert claim_eids(store, POOL, app("web", replicas=2)) == web
    up = claim_eids(store, POOL, app("web", replicas=3))
    assert {r: up[r] for r in (0, 1)} == web and str(up[2].ipv4) == "10.200.0.4"
    assert claim_eids(store, POOL, app("web", replicas=1))[2] == up[2]
    # anycast: one EID for every replica
    edge = claim_eids(store, POOL, app("edge", replicas=3, eid=EidPolicy("apps", "anycast")))
    assert list(edge) == [ANYCAST] and str(edge[ANYCAST].ipv4) == "10.200.0.5"
    with pytest.raises(EidPoolExhausted, match=r"app big: the EID pool apps .* is full"):
        claim_eids(store, POOL, app("big", replicas=2))
    # removed: its EIDs go back to the pool
    assert release_eids(store, POOL, "web") == 3
    assert str(claim_eids(store, POOL, app("big", replicas=2))[1].ipv4) == "10.200.0.2"


def test_two_claims_racing_for_one_address_conflict(store: Store) -> None:
    racing = _Racing(store, lambda: claim_eids(store, POOL, app("db", replicas=1)))
    with pytest.raises(Conflict):
        claim_eids(racing, POOL, app("web", replicas=1))  # type: ignore[arg-type]
    assert str(claim_eids(store, POOL, app("web", replicas=1))[0].ipv4) == "10.200.0.2"
