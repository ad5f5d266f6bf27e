"""A hung etcd does not stall the controller's event loop (issue 18): while node calls wait on
the store (its only member SIGSTOPped), the gRPC server keeps answering calls that need no
store. Before, every store call ran on the event loop, so one node's status report froze the
whole replica (every RPC, the embedded map-server) for the etcd client's timeout."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from controller_api.client import credentials, sync_channel
from controller_api.gen.lispmesh.v1 import apps_pb2, apps_pb2_grpc, status_pb2, status_pb2_grpc
from controller_api.settings import StoreSettings
from node.state import StateDir
from tests.controller_harness import Running
from tests.etcd_cluster import EtcdCluster, unique_prefix

PROBE_DEADLINE = 2.0  # well under the etcd client's 5 s timeout a blocked loop waits out


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    with EtcdCluster.start(tmp_path / "etcd") as cluster:  # its own: this test stops it
        yield cluster


def test_a_hung_etcd_does_not_stall_other_calls(etcd: EtcdCluster, tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    store = StoreSettings("etcd", tuple(etcd.endpoints), unique_prefix())
    ctl = Running(loop, tmp_path / "ctl", store=store, leader_ttl=30)
    try:
        state = StateDir(tmp_path / "n1")
        ctl.enroll(state, ctl.token())
        node = credentials(state.ca.read_bytes(), state.cert.read_bytes(), state.key.read_bytes())
        admin = ctl.admin_creds()
        address = ctl.controller.api_address
        outcome = loop.run_until_complete(
            asyncio.to_thread(_while_etcd_hangs, etcd, address, node, admin)
        )
    finally:
        ctl.stop()
        loop.close()
    reported, probes = outcome
    assert reported in ("ok", "UNAVAILABLE"), reported  # answered, or refused in one line
    assert len(probes) >= 2 and all(p == "ok" for p in probes), probes


def _while_etcd_hangs(
    etcd: EtcdCluster,
    address: str,
    node: grpc.ChannelCredentials,
    admin: grpc.ChannelCredentials,
) -> tuple[str, list[str]]:
    """Stop etcd, send a node's status report (it waits on the store), and while it waits
    ask the controller, again and again, something that needs no store: a refused app spec."""
    done, reported = threading.Event(), ["pending"]

    def report() -> None:
        with sync_channel(address, node) as ch:
            try:
                status_pb2_grpc.StatusStub(ch).Report(status_pb2.StatusReport(), timeout=20)
                reported[0] = "ok"
            except grpc.RpcError as exc:
                reported[0] = exc.code().name
        done.set()

    probes: list[str] = []
    etcd.members[0].signal(signal.SIGSTOP)
    try:
        with sync_channel(address, admin) as ch:
            stub = apps_pb2_grpc.AppAdminStub(ch)
            bad = apps_pb2.AppDocument(text="kind: nonsense", filename="bad.yml")
            stub.Deploy(bad, timeout=10)  # the channel is up before etcd is needed
            sender = threading.Thread(target=report)
            sender.start()
            deadline = time.monotonic() + 30
            while not done.is_set() and time.monotonic() < deadline:
                try:
                    answer = stub.Deploy(bad, timeout=PROBE_DEADLINE)
                    probes.append("ok" if not answer.ok and "bad.yml" in answer.error else "?")
                except grpc.RpcError as exc:
                    probes.append(exc.code().name)
            sender.join(timeout=30)
    finally:
        etcd.members[0].signal(signal.SIGCONT)
    return reported[0], probes
