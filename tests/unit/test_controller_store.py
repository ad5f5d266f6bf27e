"""The store contract, run on both backends (SQLite and a real etcd): tokens, collision-free
allocation under concurrency, the CA and settings (first writer wins), policies, app objects
(compare-and-set), certificate renewal, nothing lost across a restart, snapshot and restore."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import pytest

from controller_api.store import (
    APPS,
    Allocation,
    AlreadyEnrolled,
    CaMaterial,
    Conflict,
    EidPools,
    Issued,
    NewNode,
    ObjectWrite,
    PoolExhausted,
    SqliteStore,
    Store,
    StoreError,
    TokenUnusable,
)
from controller_api.store.etcd import EtcdStore
from controller_api.tokens import hash_secret
from tests.etcd_cluster import EtcdCluster, unique_prefix

POOL4, POOL6 = IPv4Network("10.250.0.0/16"), IPv6Network("fd00:1::/48")
Opener = Callable[[], Store]


@pytest.fixture(params=["sqlite", "etcd"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens another handle on one store: a new connection to the same file, or a new etcd
    client on the same key prefix (as another controller process would)."""
    opened: list[Store] = []
    if request.param == "sqlite":

        def opener() -> Store:
            opened.append(SqliteStore(tmp_path / "c.db"))
            return opened[-1]
    else:
        cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
        prefix = unique_prefix()

        def opener() -> Store:
            opened.append(EtcdStore(cluster.endpoints, prefix=prefix))
            return opened[-1]

    yield opener
    for store in opened:
        store.close()


def _new(i: int, token_id: str | None = None, onboarding: str | None = None) -> NewNode:
    return NewNode(f"id{i:04d}", "node", 0, (), token_id, onboarding, f"pk{i}", "k" * 16, "host")


def _enroll(
    store: Store,
    i: int,
    pool4: IPv4Network = POOL4,
    len4: int = 24,
    token_id: str | None = None,
    onboarding: str | None = None,
) -> str:
    def issue(alloc: Allocation) -> Issued:
        return Issued("pem", f"fp{i}", 0.0)

    node = store.create_node(
        _new(i, token_id, onboarding), EidPools(pool4, len4, POOL6, 64), issue, time.time()
    )
    return node.name


def test_sqlite_is_wal_and_a_private_file(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db")
    assert store.journal_mode() == "wal"
    assert (tmp_path / "c.db").stat().st_mode & 0o077 == 0


def test_tokens_round_trip_and_states(open_store: Opener) -> None:
    store = open_store()
    now = time.time()
    row = store.add_token("aabbccddeeff", hash_secret("s"), now, now + 60, 2, ("a", "b"), "d")
    assert row.state(now) == "valid" and row.tags == ("a", "b")
    assert row.state(now + 61) == "expired"
    assert store.get_token("aabbccddeeff") == row
    _enroll(store, 0, token_id="aabbccddeeff")
    _enroll(store, 1, token_id="aabbccddeeff")
    with pytest.raises(TokenUnusable):
        _enroll(store, 2, token_id="aabbccddeeff")
    assert store.get_token("aabbccddeeff").state(now) == "used-up"  # type: ignore[union-attr]
    assert store.revoke_token("aabbccddeeff", now).state(now) == "revoked"  # type: ignore[union-attr]
    assert [t.token_id for t in store.list_tokens()] == ["aabbccddeeff"]


def test_a_lost_answer_is_returned_again_without_a_use(open_store: Opener) -> None:
    store = open_store()
    now = time.time()
    store.add_token("t1", hash_secret("s"), now, now + 60, 1, (), "")
    first = store.create_node(_new(0, "t1"), EidPools(POOL4, 24, POOL6, 64),
                              lambda a: Issued("pem", "fp0", 0.0), now)  # fmt: skip
    again = store.create_node(_new(0, "t1"), EidPools(POOL4, 24, POOL6, 64),
                              lambda a: Issued("pem", "fpX", 0.0), now)  # fmt: skip
    assert again.node_id == first.node_id and again.cert_fp == "fp0"
    assert store.get_token("t1").uses == 1  # type: ignore[union-attr]


def test_one_use_token_redeemed_concurrently_counts_once(open_store: Opener) -> None:
    """Eight handles (as eight replicas) redeem the same one-use token at once: one node."""
    now = time.time()
    open_store().add_token("race", hash_secret("s"), now, now + 60, 1, (), "")
    handles = [open_store() for _ in range(8)]
    start, results = threading.Barrier(len(handles)), [""] * len(handles)

    def redeem(w: int) -> None:
        start.wait(timeout=10)
        try:
            results[w] = _enroll(handles[w], 100 + w, token_id="race")
        except TokenUnusable:
            results[w] = "refused"

    threads = [threading.Thread(target=redeem, args=(w,)) for w in range(len(handles))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results).count("refused") == len(handles) - 1
    assert len(handles[0].list_nodes()) == 1
    assert handles[0].get_token("race").uses == 1  # type: ignore[union-attr]


def test_names_are_made_unique_and_slots_are_lowest_free(open_store: Opener) -> None:
    store = open_store()
    assert [_enroll(store, i) for i in range(3)] == ["node", "node-2", "node-3"]
    nodes = store.list_nodes()
    assert [str(n.eid4) for n in nodes] == ["10.250.0.0/24", "10.250.1.0/24", "10.250.2.0/24"]
    assert [str(n.eid6) for n in nodes] == ["fd00:1::/64", "fd00:1:0:1::/64", "fd00:1:0:2::/64"]
    assert store.find_node("node-2").node_id == "id0001"  # type: ignore[union-attr]
    assert store.find_node("id0002").name == "node-3"  # type: ignore[union-attr]
    assert store.node_by_cert("fp1").node_id == "id0001"  # type: ignore[union-attr]
    assert store.node_by_public_key("pk2").node_id == "id0002"  # type: ignore[union-attr]


def test_revoked_nodes_keep_their_slot(open_store: Opener) -> None:
    store = open_store()
    _enroll(store, 0)
    assert store.revoke_node("id0000", 5.0).revoked_at == 5.0  # type: ignore[union-attr]
    assert store.revoke_node("id0000", 9.0).revoked_at == 5.0  # type: ignore[union-attr]
    _enroll(store, 1)
    assert [n.slot for n in store.list_nodes()] == [0, 1]
    assert [n.node_id for n in store.list_nodes(include_revoked=False)] == ["id0001"]
    assert store.node_by_public_key("pk0") is None


def test_an_onboarding_certificate_enrolls_once(open_store: Opener) -> None:
    store = open_store()
    _enroll(store, 0, onboarding="ob1")
    with pytest.raises(AlreadyEnrolled):
        _enroll(store, 1, onboarding="ob1")
    assert store.node_by_onboarding("ob1").node_id == "id0000"  # type: ignore[union-attr]


def test_pool_exhaustion_is_a_clear_error(open_store: Opener) -> None:
    store = open_store()
    small = IPv4Network("10.9.0.0/23")
    _enroll(store, 0, small)
    _enroll(store, 1, small)
    with pytest.raises(PoolExhausted, match="the EID pools are full"):
        _enroll(store, 2, small)


def test_concurrent_enrollments_never_collide(open_store: Opener) -> None:
    """Six handles (as separate processes would), 8 nodes each, all at once."""
    handles = [open_store() for _ in range(6)]
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for i in range(8):
                _enroll(handles[w], w * 100 + i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(len(handles))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    nodes = open_store().list_nodes()
    assert len(nodes) == 48
    assert len({n.eid4 for n in nodes}) == len({n.eid6 for n in nodes}) == 48
    assert len({n.name for n in nodes}) == 48
    slots = {n.slot for n in nodes}
    assert len(slots) == 48
    # Racing writers on etcd may spread over the lowest few free slots; the next quiet
    # enrollment fills the lowest gap again.
    lowest_free = min(set(range(49)) - slots)
    _enroll(handles[0], 999)
    assert handles[0].get_node("id0999").slot == lowest_free  # type: ignore[union-attr]


def test_node_state_updates(open_store: Opener) -> None:
    store = open_store()
    _enroll(store, 0)
    assert store.set_config_hash("id0000", "h1") == 1
    assert store.set_config_hash("id0000", "h1") == 1
    assert store.set_config_hash("id0000", "h2") == 2
    store.record_ack("id0000", 2, "", 3.0)
    store.record_ack("id0000", 1, "", 4.0)
    store.record_ack("id0000", 2, "bad", 5.0)
    store.record_status("id0000", {"uplinks": [1]}, 6.0)
    store.record_metrics("id0000", {"rx": 7}, 7.0)
    node = store.get_node("id0000")
    assert node is not None
    assert (node.applied_version, node.apply_error, node.status, node.metrics) == (
        2, "bad", {"uplinks": [1]}, {"rx": 7},
    )  # fmt: skip
    store.touch("id0000", 8.0)
    assert store.get_node("id0000").last_seen == 8.0  # type: ignore[union-attr]
    with pytest.raises(StoreError):
        store.set_config_hash("nobody", "h")


def test_certificate_renewal_keeps_the_old_one_for_a_grace_period(open_store: Opener) -> None:
    store = open_store()
    _enroll(store, 0)
    renewed = store.replace_certificate("id0000", "pem2", "fp-new", 9.0, "pk-new", 100.0)
    assert renewed is not None and renewed.cert_fp == "fp-new"
    assert store.node_by_cert("fp-new").node_id == "id0000"  # type: ignore[union-attr]
    assert store.node_by_cert("fp0") is None
    assert store.node_by_public_key("pk-new").node_id == "id0000"  # type: ignore[union-attr]
    assert store.node_by_retired_cert("fp0", 50.0).node_id == "id0000"  # type: ignore[union-attr]
    assert store.node_by_retired_cert("fp0", 100.0) is None
    assert store.expire_retired_certs(99.0) == 0
    assert store.expire_retired_certs(100.0) == 1
    assert store.node_by_retired_cert("fp0", 50.0) is None
    store.replace_certificate("id0000", "pem3", "fp-3", 9.0, "pk-3")
    assert store.node_by_retired_cert("fp-new", 50.0) is None
    store.revoke_node("id0000", 1.0)
    assert store.replace_certificate("id0000", "pem4", "fp-4", 9.0, "pk-4") is None


def test_settings_and_the_ca_first_writer_wins(open_store: Opener) -> None:
    a, b = open_store(), open_store()
    assert a.get_meta("pool6") is None
    assert a.set_meta_default("pool6", "fd00:1::/48") == "fd00:1::/48"
    assert b.set_meta_default("pool6", "fd00:2::/48") == "fd00:1::/48"
    assert b.get_meta("pool6") == "fd00:1::/48"
    assert a.ca_material() is None
    first = a.init_ca_material(CaMaterial(b"cert1", b"key1"))
    assert b.init_ca_material(CaMaterial(b"cert2", b"key2")) == first
    assert b.ca_material() == CaMaterial(b"cert1", b"key1")


def test_ca_rotation_replaces_the_set_by_compare_and_set(open_store: Opener) -> None:
    a, b = open_store(), open_store()
    old, new = CaMaterial(b"cert1", b"key1"), CaMaterial(b"cert2", b"key2")
    a.init_ca_material(old)
    assert b.ca_materials() == [old]
    a.replace_ca_materials([old], [old, new])  # rotate: both trusted, the old one issues
    assert b.ca_materials() == [old, new] and b.ca_material() == old
    with pytest.raises(Conflict):  # another replica's view was stale
        b.replace_ca_materials([old], [old, CaMaterial(b"cert3", b"key3")])
    b.replace_ca_materials([old, new], [new, old])  # switch: the new one issues
    assert a.ca_material() == new
    a.replace_ca_materials([new, old], [new])  # finish
    assert b.ca_materials() == [new]
    with pytest.raises(StoreError):
        a.replace_ca_materials([new], [])


def test_policies_version_and_generation(open_store: Opener) -> None:
    store = open_store()
    assert store.current_policy() is None and store.policy_generation() == 0
    assert store.add_policy("t1", "f1", {"n": {"a": 1}}, 1.0, "me") == (1, 1)
    assert store.bump_policy_generation() == 2
    assert store.add_policy("t2", "f2", {}, 2.0, "me") == (2, 3)
    assert store.current_policy().text == "t2"  # type: ignore[union-attr]
    assert [p.compiled for p in store.list_policies()] == [{"n": {"a": 1}}, {}]


def test_objects_compare_and_set(open_store: Opener) -> None:
    store = open_store()
    before = store.revision()
    rev = store.commit_objects([ObjectWrite(APPS, "web", "v1", expect_revision=0)])
    assert rev > before and store.revision() >= rev
    assert store.get_object(APPS, "web").revision == rev  # type: ignore[union-attr]
    with pytest.raises(Conflict, match="apps/web changed"):
        store.commit_objects([ObjectWrite(APPS, "web", "v2", expect_revision=0)])
    with pytest.raises(Conflict):  # all or nothing: "db" is not written either
        stale = ObjectWrite(APPS, "web", "v2", expect_revision=rev + 99)
        store.commit_objects([ObjectWrite(APPS, "db", "d1"), stale])
    assert store.get_object(APPS, "db") is None
    rev2 = store.commit_objects([ObjectWrite(APPS, "web", "v2", expect_revision=rev),
                                 ObjectWrite(APPS, "db", "d1")])  # fmt: skip
    assert [(r.key, r.value, r.revision) for r in store.list_objects(APPS)] == [
        ("db", "d1", rev2), ("web", "v2", rev2),
    ]  # fmt: skip
    store.commit_objects([ObjectWrite(APPS, "db", None)])
    assert [r.key for r in store.list_objects(APPS)] == ["web"]
    with pytest.raises(StoreError, match="unknown object kind"):
        store.get_object("nope", "x")


def test_a_restart_loses_nothing(open_store: Opener) -> None:
    store = open_store()
    _enroll(store, 0)
    store.add_token("aabbccddeeff", hash_secret("s"), 1.0, 2.0, 1, (), "")
    version = store.set_config_hash("id0000", "h1")
    store.record_status("id0000", {"uplinks": []}, 5.0)
    # No close(): as if the process were killed.
    again = open_store()
    node = again.get_node("id0000")
    assert node is not None and node.config_version == version == 1 and node.last_seen == 5.0
    assert again.get_token("aabbccddeeff") is not None


def _fill(store: Store) -> None:
    store.set_meta_default("pool4", "10.250.0.0/16")
    store.init_ca_material(CaMaterial(b"cert", b"key"))
    store.add_token("t1", hash_secret("s"), 1.0, time.time() + 60, 3, ("x",), "d")
    for i in range(3):
        _enroll(store, i, token_id="t1" if i < 2 else None, onboarding=f"ob{i}")
    store.revoke_node("id0001", 3.0)
    store.add_policy("t", "f", {"node": {}}, 2.0, "me")
    store.commit_objects([ObjectWrite(APPS, "web", "v1")])


@pytest.mark.parametrize("target", ["sqlite", "etcd"])
def test_snapshot_restores_into_either_backend(
    open_store: Opener, target: str, tmp_path: Path, etcd_cluster: EtcdCluster
) -> None:
    source = open_store()
    _fill(source)
    snap = source.snapshot()
    dest: Store = (
        SqliteStore(tmp_path / "dest.db") if target == "sqlite"
        else EtcdStore(etcd_cluster.endpoints, prefix=unique_prefix())
    )  # fmt: skip
    try:
        dest.restore(snap)
        copy = dest.snapshot()
        assert copy.tokens == snap.tokens and copy.nodes == snap.nodes
        assert copy.policies == snap.policies and copy.ca == snap.ca
        assert copy.policy_generation == snap.policy_generation == 1
        assert copy.meta["pool4"] == "10.250.0.0/16"
        assert [(r.kind, r.key, r.value) for r in copy.objects] == [(APPS, "web", "v1")]
        assert dest.node_by_cert("fp2").node_id == "id0002"  # type: ignore[union-attr]
        assert dest.node_by_onboarding("ob0").node_id == "id0000"  # type: ignore[union-attr]
        _enroll(dest, 9)  # allocation goes on after the restored slots
        assert dest.get_node("id0009").slot == 3  # type: ignore[union-attr]
        with pytest.raises(StoreError, match="restore refused"):
            dest.restore(snap)
    finally:
        dest.close()
