"""Controllers on etcd (real etcd, real controllers on loopback): a SQLite controller migrated
into etcd and served from there, and two replicas sharing one etcd (one CA, one set of nodes, a
token made on one is used up through the other)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller_api.gen.lispmesh.v1 import admin_pb2
from controller_api.settings import StoreSettings
from lispmesh.cli import main
from node.enroll import EnrollError
from node.state import StateDir
from tests.controller_harness import Running
from tests.etcd_cluster import EtcdCluster, unique_prefix


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def on_etcd(etcd_cluster: EtcdCluster) -> StoreSettings:
    return StoreSettings("etcd", tuple(etcd_cluster.endpoints), unique_prefix())


def _migrate(state_dir: Path, target: StoreSettings, capsys: pytest.CaptureFixture[str]) -> dict:
    argv = ["controller", "migrate", "--to", "etcd", "--state-dir", str(state_dir), "--json",
            "--etcd-endpoints", ",".join(target.etcd_endpoints), "--etcd-prefix",
            target.etcd_prefix]  # fmt: skip
    code = main(argv)
    out, err = capsys.readouterr()
    return {"code": code, "err": err, **(json.loads(out) if code == 0 else {})}


def test_migrate_then_serve_from_etcd(
    loop: asyncio.AbstractEventLoop,
    tmp_path: Path,
    on_etcd: StoreSettings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = Running(loop, tmp_path / "sqlite-ctl")
    token = old.token(uses=2)
    first = old.enroll(StateDir(tmp_path / "a"), token)
    old.admin("CreateToken", admin_pb2.CreateTokenRequest(ttl_seconds=600, max_uses=1))
    pin = old.controller.pin
    view = old.admin("ControllerStatus", admin_pb2.ControllerStatusRequest())
    assert view.store.endswith("controller.db") and view.store_health == "ok (SQLite)"
    assert view.leader == view.replica == old.controller.api_address
    old.stop()

    done = _migrate(tmp_path / "sqlite-ctl", on_etcd, capsys)
    assert done["code"] == 0 and done["keys_written"] > 0, done
    assert done["counts"]["tokens"] == {"sqlite": 2, "etcd": 2}
    assert done["counts"]["nodes"] == {"sqlite": 1, "etcd": 1}
    assert done["counts"]["ca"] == {"sqlite": 1, "etcd": 1}
    again = _migrate(tmp_path / "sqlite-ctl", on_etcd, capsys)
    assert again["code"] == 0 and again["keys_written"] == 0 and again["counts"] == done["counts"]

    # A replica with an empty state dir of its own takes the CA and the nodes from etcd.
    new = Running(loop, tmp_path / "etcd-ctl", store=on_etcd)
    try:
        assert new.controller.pin == pin
        nodes = new.admin("ListNodes", admin_pb2.ListNodesRequest()).nodes
        assert [(n.name, n.eid_prefixes[0]) for n in nodes] == [
            (first.name, str(first.eid_prefixes[0]))
        ]
        second = new.enroll(StateDir(tmp_path / "b"), token)  # the token's second use
        assert second.name != first.name
        with pytest.raises(EnrollError, match="used up"):
            new.enroll(StateDir(tmp_path / "c"), token)
    finally:
        new.stop()
    # etcd has moved on (a use counted, a node added): copying the old state again is refused.
    stale = _migrate(tmp_path / "sqlite-ctl", on_etcd, capsys)
    assert stale["code"] != 0 and "restore refused" in stale["err"]
    assert stale["err"].count("\n") == 1  # one line, no traceback


def test_two_replicas_share_the_ca_tokens_and_nodes(
    loop: asyncio.AbstractEventLoop, tmp_path: Path, on_etcd: StoreSettings
) -> None:
    a = Running(loop, tmp_path / "a", store=on_etcd)
    b = Running(loop, tmp_path / "b", store=on_etcd)
    try:
        assert a.controller.pin == b.controller.pin
        assert (tmp_path / "a" / "ca" / "ca.key").read_bytes() == (
            tmp_path / "b" / "ca" / "ca.key"
        ).read_bytes()
        token = a.token(uses=2)
        n1 = b.enroll(StateDir(tmp_path / "n1"), token)  # a token made on A, redeemed on B
        n2 = a.enroll(StateDir(tmp_path / "n2"), token)
        assert n1.eid_prefixes[0] != n2.eid_prefixes[0]
        with pytest.raises(EnrollError, match="used up"):
            b.enroll(StateDir(tmp_path / "n3"), token)
        for replica in (a, b):
            nodes = replica.admin("ListNodes", admin_pb2.ListNodesRequest()).nodes
            assert sorted(n.name for n in nodes) == sorted([n1.name, n2.name])
    finally:
        a.stop()
        b.stop()
