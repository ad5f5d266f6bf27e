"""Leader election on a real etcd: one leader at a time, and a leader that was paused past its
lease, replaced, and still believes it leads has its writes refused (the fence)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from ipaddress import IPv4Network, IPv6Network

import pytest

from controller_api.leader import Election, ReplicaInfo
from controller_api.store import (
    CONTROLLER,
    EidPools,
    EtcdStore,
    Fenced,
    Issued,
    NewNode,
    ObjectWrite,
)
from controller_api.store.etcd_client import EtcdClient
from lispmesh.waiting import wait_until
from tests.etcd_cluster import EtcdCluster, unique_prefix

TTL = 2


@pytest.fixture
def store(etcd_cluster: EtcdCluster) -> Iterator[EtcdStore]:
    s = EtcdStore(etcd_cluster.endpoints, prefix=unique_prefix())
    yield s
    s.close()


def _replica(store: EtcdStore, cluster: EtcdCluster, name: str, frozen: bool = False) -> Election:
    # A frozen clock is a replica paused between two instructions: it never notices by itself
    # that its term ran out.
    clock = (lambda: 0.0) if frozen else time.monotonic
    client = EtcdClient(cluster.endpoints)
    return Election(client, store.prefix, ReplicaInfo(name, f"{name}:1"), TTL, clock=clock)


def _beat(store: EtcdStore, who: str, election: Election) -> int:
    write = ObjectWrite(CONTROLLER, "leader", who)
    return store.commit_objects([write], election.fence)


def test_one_leader_and_a_replaced_leader_cannot_write(
    store: EtcdStore, etcd_cluster: EtcdCluster
) -> None:
    old = _replica(store, etcd_cluster, "old", frozen=True)
    new = _replica(store, etcd_cluster, "new")
    try:
        assert old.step() is True
        assert new.step() is False and new.fence is None
        leader = old.leader()
        assert leader is not None and leader[0]["replica"] == "old" and leader[1] == old.term
        assert sorted(r["replica"] for r in old.replicas()) == ["new", "old"]
        _beat(store, "old", old)
        # `old` stops here (no keepalive); its lease runs out and `new` takes over.
        wait_until(new.step, TTL * 5, "the other replica to take over")
        assert new.term > old.term and old.fence is not None  # old still believes it leads
        with pytest.raises(Fenced, match=f"term {old.term} is over"):
            _beat(store, "old", old)
        # A chore with something to do: a retired certificate past its grace period.
        store.create_node(NewNode("n1", "n", 0, (), None, None, "pk", "k" * 16, "h"),
                          EidPools(IPv4Network("10.9.0.0/16"), 24, IPv6Network("fd00:9::/48"), 64),
                          lambda a: Issued("pem", "fp1", 0.0), 0.0)  # fmt: skip
        store.replace_certificate("n1", "pem2", "fp2", 0.0, "pk2", retire_until=5.0)
        with pytest.raises(Fenced):
            store.expire_retired_certs(1e12, old.fence)
        assert store.node_by_retired_cert("fp1", 1.0) is not None  # not deleted
        _beat(store, "new", new)
        record = store.get_object(CONTROLLER, "leader")
        assert record is not None and record.value == "new"
        assert old.step() is False  # it learns: a new lease, and it follows
        assert [r["replica"] for r in new.replicas()].count("old") == 1
    finally:
        old.resign()
        new.resign()
        old.etcd.close()
        new.etcd.close()


def test_resigning_hands_over_at_once(store: EtcdStore, etcd_cluster: EtcdCluster) -> None:
    a, b = _replica(store, etcd_cluster, "a"), _replica(store, etcd_cluster, "b")
    try:
        assert a.step() and not b.step()
        term = a.fence
        a.resign()
        assert a.fence is None
        assert b.step() is True
        with pytest.raises(Fenced):
            store.commit_objects([ObjectWrite(CONTROLLER, "leader", "a")], term)
    finally:
        b.resign()
        a.etcd.close()
        b.etcd.close()
