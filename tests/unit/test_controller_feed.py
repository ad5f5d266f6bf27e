"""Config streams driven by etcd watches (real etcd, two controller replicas in this process):
a change made through one replica reaches a stream on the other with no periodic re-read (the
config cycle is an hour), status reports wake nobody, a node that reconnects to the other
replica gets what it missed and nothing twice, and a replica whose watch fell behind etcd's
compaction resynchronises."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller_api import ca_admin
from controller_api.client import aio_channel, credentials
from controller_api.gen.lispmesh.v1 import config_pb2, config_pb2_grpc, status_pb2, status_pb2_grpc
from controller_api.settings import StoreSettings
from controller_api.store.etcd_client import EtcdClient
from node.state import StateDir
from tests.controller_harness import Running
from tests.etcd_cluster import EtcdCluster, unique_prefix

POLICY = """\
version: 1
rules:
  - {name: ping-all, from: any, to: any, proto: icmp}
"""
WAIT = 10.0


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def pair(
    loop: asyncio.AbstractEventLoop, tmp_path: Path, etcd_cluster: EtcdCluster
) -> Iterator[tuple[Running, Running]]:
    on_etcd = StoreSettings("etcd", tuple(etcd_cluster.endpoints), unique_prefix())
    # An hour-long config cycle: whatever reaches a stream in this test came by the watch.
    a = Running(loop, tmp_path / "a", store=on_etcd, config_cycle=3600.0)
    b = Running(loop, tmp_path / "b", store=on_etcd, config_cycle=3600.0)

    async def both_known() -> None:  # each replica lists both map-servers: documents settle
        while not all(len(r.controller.core.map_servers) == 2 for r in (a, b)):  # type: ignore[union-attr]
            await asyncio.sleep(0.05)

    loop.run_until_complete(asyncio.wait_for(both_known(), WAIT))
    yield a, b
    a.stop()
    b.stop()


class Node:
    def __init__(self, ctl: Running, tmp_path: Path, name: str) -> None:
        self.state = StateDir(tmp_path / name)
        self.enrollment = ctl.enroll(self.state, ctl.token())
        self.creds = credentials(
            self.state.ca.read_bytes(), self.state.cert.read_bytes(), self.state.key.read_bytes()
        )

    async def watch(self, replica: Running, known: int = 0) -> Stream:
        stream = Stream(self, replica.controller.api_address, known)
        await stream.open()
        return stream


class Stream:
    def __init__(self, node: Node, address: str, known: int) -> None:
        self.node, self.address, self.known = node, address, known

    async def open(self) -> None:
        self._channel_cm = aio_channel(self.address, self.node.creds)
        channel = await self._channel_cm.__aenter__()
        self.config = config_pb2_grpc.NodeConfigStub(channel)
        self.status = status_pb2_grpc.StatusStub(channel)
        self.call = self.config.Watch(config_pb2.WatchRequest(known_version=self.known))
        await asyncio.wait_for(self.call.wait_for_connection(), WAIT)
        self._messages: AsyncIterator[config_pb2.DesiredState] = self.call.__aiter__()

    async def next(self) -> config_pb2.DesiredState:
        message = await asyncio.wait_for(self._messages.__anext__(), WAIT)
        await self.config.Ack(config_pb2.AckRequest(version=message.version, ok=True), timeout=5)
        return message

    async def close(self) -> None:
        self.call.cancel()
        await self._channel_cm.__aexit__(None, None, None)


def _run(loop: asyncio.AbstractEventLoop, coroutine: Any) -> Any:
    return loop.run_until_complete(asyncio.wait_for(coroutine, 60))


def test_a_change_on_one_replica_reaches_streams_on_the_other_by_the_watch(
    loop: asyncio.AbstractEventLoop, pair: tuple[Running, Running], tmp_path: Path
) -> None:
    a, b = pair
    n1, n2 = Node(a, tmp_path, "n1"), Node(a, tmp_path, "n2")
    core_a, core_b = a.controller.core, b.controller.core
    assert core_a is not None and core_b is not None

    async def scenario() -> None:
        s1 = await n1.watch(b)
        first = await s1.next()
        assert first.node_name == n1.enrollment.name and not first.policies
        # Status reports (every node, every few seconds) wake no stream: nothing is built.
        built = core_b.built
        for i in range(3):
            await s1.status.Report(status_pb2.StatusReport(map_cache_size=i), timeout=5)
        # A policy applied through A reaches the stream on B: exactly one new version.
        await asyncio.to_thread(core_a.apply_policy, POLICY, "p.yml", "test")
        with_policy = await s1.next()
        assert with_policy.version == first.version + 1
        assert [p.version for p in with_policy.policies] == [1]
        # The status reports were received by B while it built only for the policy.
        assert core_b.built - built <= 2
        # A revocation through A: n1's document on B lists n2 at once.
        row = a.controller.store.find_node(n2.enrollment.name)
        await asyncio.to_thread(core_a.revoke, row)
        revoked = await s1.next()
        while list(revoked.revoked_nodes) != [n2.enrollment.name]:
            revoked = await s1.next()  # a generation bump may come first
        assert revoked.version > with_policy.version
        await s1.close()

    _run(loop, scenario())
    row = b.controller.store.find_node(n1.enrollment.name)
    assert row is not None and row.status.get("map_cache_size") == 2


def test_a_node_reconnecting_to_the_other_replica_gets_what_it_missed_once(
    loop: asyncio.AbstractEventLoop, pair: tuple[Running, Running], tmp_path: Path
) -> None:
    a, b = pair
    n1, n2 = Node(a, tmp_path, "n1"), Node(a, tmp_path, "n2")
    core_a = a.controller.core
    assert core_a is not None

    async def scenario() -> None:
        on_a = await n1.watch(a)
        seen = (await on_a.next()).version
        await on_a.close()
        # While the node is away, a policy is applied: on B it gets the newer document.
        await asyncio.to_thread(core_a.apply_policy, POLICY, "p.yml", "test")
        on_b = await n1.watch(b, known=seen)
        missed = await on_b.next()
        assert missed.version > seen and [p.version for p in missed.policies] == [1]
        await on_b.close()
        # Back to A with what it has: nothing is sent again; the next message is the next change.
        again = await n1.watch(a, known=missed.version)
        row = a.controller.store.find_node(n2.enrollment.name)
        await asyncio.to_thread(core_a.revoke, row)
        following = await again.next()
        assert following.version > missed.version
        assert n2.enrollment.name in following.revoked_nodes
        await again.close()

    _run(loop, scenario())


def test_a_replica_whose_watch_fell_behind_compaction_resynchronises(
    loop: asyncio.AbstractEventLoop,
    pair: tuple[Running, Running],
    tmp_path: Path,
    etcd_cluster: EtcdCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = pair
    n1, n2 = Node(a, tmp_path, "n1"), Node(a, tmp_path, "n2")
    core_a, feed = a.controller.core, b.controller.feed
    assert core_a is not None and feed is not None
    etcd = EtcdClient(etcd_cluster.endpoints)

    async def scenario() -> None:
        s1 = await n1.watch(b)
        first = await s1.next()
        # B's watch goes away (as over a long partition); meanwhile n2 is revoked, and etcd
        # compacts its history past the revision B would resume from.
        await asyncio.to_thread(feed.stop)
        behind = feed.revision
        row = a.controller.store.find_node(n2.enrollment.name)
        await asyncio.to_thread(core_a.revoke, row)
        await s1.status.Report(status_pb2.StatusReport(map_cache_size=1), timeout=5)
        await asyncio.to_thread(etcd.compact, etcd.revision())
        feed.start()
        caught_up = await s1.next()
        assert n2.enrollment.name in caught_up.revoked_nodes
        assert caught_up.version > first.version
        assert feed.resyncs == 1 and feed.revision > behind
        await s1.close()

    try:
        _run(loop, scenario())
    finally:
        etcd.close()
    assert "compacted up to" in caplog.text and "resynchronised at revision" in caplog.text


def test_every_replica_serves_every_node_as_a_map_server(
    loop: asyncio.AbstractEventLoop, pair: tuple[Running, Running], tmp_path: Path
) -> None:
    a, b = pair
    n1 = Node(a, tmp_path, "n1")
    ms_a, ms_b = a.controller.map_server, b.controller.map_server
    assert ms_a is not None and ms_b is not None
    a_port = ms_a.bound_port
    servers = sorted([("127.0.0.1", a_port), ("127.0.0.1", ms_b.bound_port)])

    async def scenario() -> None:
        stream = await n1.watch(a)
        state = await stream.next()
        while len(state.map_servers) < 2:  # B's registration may arrive after the first
            state = await stream.next()
        assert [(m.address, m.port) for m in state.map_servers] == servers
        assert {m.site_key for m in state.map_servers} == {state.map_servers[0].site_key}
        assert list(state.map_resolvers) == ["127.0.0.1"]
        # B learnt the node (enrolled through A) from the feed: its map-server has the site.
        site = f"node-{n1.enrollment.name}"
        assert site in {s.name for s in ms_b.core.registry.sites}
        # B goes (its lease is revoked): the node is told to register with A alone.
        await b.controller.stop()
        alone = await stream.next()
        assert [(m.address, m.port) for m in alone.map_servers] == [("127.0.0.1", a_port)]
        await stream.close()

    _run(loop, scenario())


def test_a_ca_rotation_through_one_replica_reaches_nodes_on_the_other(
    loop: asyncio.AbstractEventLoop, pair: tuple[Running, Running], tmp_path: Path
) -> None:
    a, b = pair
    n1 = Node(a, tmp_path, "n1")
    core_a, core_b = a.controller.core, b.controller.core
    assert core_a is not None and core_b is not None and core_b.pki is not None

    async def scenario() -> None:
        s1 = await n1.watch(b)
        first = await s1.next()
        assert first.ca_bundle_pem.count(b"BEGIN") == 1
        started = ca_admin.rotate(core_a, False, False, "test")
        # n1 is live (on B): the new CA may not issue before n1 has taken the bundle.
        assert started.phase == "distributing" and started.nodes_without_bundle == 1
        bundle = await s1.next()  # came by the watch: B follows the stored CAs
        while bundle.ca_bundle_pem.count(b"BEGIN") != 2:
            bundle = await s1.next()
        assert bundle.issuing_ca == first.issuing_ca
        switched = await s1.next()  # its Ack on B was the last one: B switches the issuer
        while switched.issuing_ca == first.issuing_ca:
            switched = await s1.next()
        assert switched.issuing_ca == started.cas[1].fingerprint
        await s1.close()

    _run(loop, scenario())
    assert core_b.pki.phase == "switching"
    assert ca_admin.status(core_a).phase == "switching"
