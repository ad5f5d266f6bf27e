"""The controller's SQLite store: tokens, collision-free allocation under concurrency, WAL,
nothing lost across a restart."""

from __future__ import annotations

import threading
import time
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import pytest

from controller_api.store import (
    Allocation,
    EidPools,
    Issued,
    NewNode,
    PoolExhausted,
    SqliteStore,
    TokenUnusable,
)
from controller_api.tokens import hash_secret

POOL4, POOL6 = IPv4Network("10.250.0.0/16"), IPv6Network("fd00:1::/48")
Store = SqliteStore


def _new(i: int, token_id: str | None = None) -> NewNode:
    return NewNode(f"id{i:04d}", "node", 0, (), token_id, None, f"pk{i}", "k" * 16, "host")


def _enroll(
    store: Store, i: int, pool4: IPv4Network = POOL4, len4: int = 24, token_id: str | None = None
) -> str:
    def issue(alloc: Allocation) -> Issued:
        return Issued("pem", f"fp{i}", 0.0)

    node = store.create_node(
        _new(i, token_id), EidPools(pool4, len4, POOL6, 64), issue, time.time()
    )
    return node.name


def test_wal_and_private_file(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    assert store.journal_mode() == "wal"
    assert (tmp_path / "c.db").stat().st_mode & 0o077 == 0


def test_tokens_round_trip_and_states(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    now = time.time()
    row = store.add_token("aabbccddeeff", hash_secret("s"), now, now + 60, 2, ("a", "b"), "d")
    assert row.state(now) == "valid" and row.tags == ("a", "b")
    assert row.state(now + 61) == "expired"
    _enroll(store, 0, token_id="aabbccddeeff")
    _enroll(store, 1, token_id="aabbccddeeff")
    with pytest.raises(TokenUnusable):
        _enroll(store, 2, token_id="aabbccddeeff")
    assert store.get_token("aabbccddeeff").state(now) == "used-up"  # type: ignore[union-attr]
    assert store.revoke_token("aabbccddeeff", now).state(now) == "revoked"  # type: ignore[union-attr]


def test_names_are_made_unique_and_slots_are_lowest_free(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    assert [_enroll(store, i) for i in range(3)] == ["node", "node-2", "node-3"]
    nodes = store.list_nodes()
    assert [str(n.eid4) for n in nodes] == ["10.250.0.0/24", "10.250.1.0/24", "10.250.2.0/24"]
    assert [str(n.eid6) for n in nodes] == ["fd00:1::/64", "fd00:1:0:1::/64", "fd00:1:0:2::/64"]


def test_pool_exhaustion_is_a_clear_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    small = IPv4Network("10.9.0.0/23")
    _enroll(store, 0, small)
    _enroll(store, 1, small)
    with pytest.raises(PoolExhausted, match="the EID pools are full"):
        _enroll(store, 2, small)


def test_concurrent_enrollments_never_collide(tmp_path: Path) -> None:
    """Eight threads, each with its own connection (as separate processes would), 10 nodes each."""
    path = tmp_path / "c.db"
    Store(path).close()
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        store = Store(path)
        try:
            for i in range(10):
                _enroll(store, w * 100 + i)
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    nodes = Store(path).list_nodes()
    assert len(nodes) == 80
    assert len({n.eid4 for n in nodes}) == len({n.eid6 for n in nodes}) == 80
    assert len({n.name for n in nodes}) == 80
    assert sorted(n.slot for n in nodes) == list(range(80))


def test_a_restart_loses_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    _enroll(store, 0)
    store.add_token("aabbccddeeff", hash_secret("s"), 1.0, 2.0, 1, (), "")
    version = store.set_config_hash("id0000", "h1")
    store.record_status("id0000", {"uplinks": []}, 5.0)
    # No close(): as if the process were killed.
    again = Store(tmp_path / "c.db")
    node = again.get_node("id0000")
    assert node is not None and node.config_version == version == 1 and node.last_seen == 5.0
    assert again.get_token("aabbccddeeff") is not None
