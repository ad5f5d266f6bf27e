"""etcd without quorum (a real 3-member cluster, 2 members killed by pid): a write through a
controller replica fails with one line naming the replica and etcd, and the replica ends its
config streams (so nodes try another replica) while its map-server keeps every site."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from controller_api.client import aio_channel, credentials
from controller_api.gen.lispmesh.v1 import admin_pb2, config_pb2, config_pb2_grpc
from controller_api.settings import StoreSettings
from lispmesh.cli import main
from node.state import StateDir
from tests.controller_harness import Running
from tests.etcd_cluster import EtcdCluster, unique_prefix

# Several controller replica processes on a real etcd cluster: the cluster tier (tests/conftest.py).
pytestmark = pytest.mark.cluster

TTL = 2


async def _until(condition: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s")
        await asyncio.sleep(0.05)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    with EtcdCluster.start(tmp_path / "etcd", members=3) as started:
        yield started


def test_without_quorum_writes_fail_in_one_line_and_streams_move_away(
    cluster: EtcdCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = asyncio.new_event_loop()
    on_etcd = StoreSettings("etcd", tuple(cluster.endpoints), unique_prefix())
    ctl = Running(loop, tmp_path / "ctl", store=on_etcd, leader_ttl=TTL, replica_name="r1")
    try:
        state = StateDir(tmp_path / "n1")
        enrollment = ctl.enroll(state, ctl.token())
        creds = credentials(state.ca.read_bytes(), state.cert.read_bytes(), state.key.read_bytes())
        ms = ctl.controller.map_server
        assert ms is not None

        async def stream_until_ended() -> grpc.aio.AioRpcError:
            async with aio_channel(enrollment.api_address, creds) as channel:
                call = config_pb2_grpc.NodeConfigStub(channel).Watch(config_pb2.WatchRequest())
                first = await asyncio.wait_for(call.__aiter__().__anext__(), 10)
                assert first.node_name == enrollment.name
                for member in cluster.members[1:]:
                    member.stop()  # SIGKILL: two of three members gone, no quorum
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await asyncio.wait_for(call.__aiter__().__anext__(), TTL * 10)
                return ended.value

        ended = loop.run_until_complete(stream_until_ended())
        assert ended.code() == grpc.StatusCode.UNAVAILABLE
        # Ended either when the stream next read the store or when the replica's lease
        # round failed for a TTL: both say which replica and that etcd did not answer.
        assert (ended.details() or "").startswith("controller replica r1")
        assert "etcd at " in (ended.details() or "")
        # A write: refused in one line that says which replica and that etcd did not answer.
        argv = ["controller", "token", "create", "--state-dir", str(tmp_path / "ctl")]
        assert loop.run_until_complete(asyncio.to_thread(main, argv)) != 0
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        # (Either the write's own store call failed, or the replica already knew: both say so.)
        assert "controller replica r1" in err and "etcd at " in err
        assert "no quorum, or out of reach" in err
        # Once the replica knows (a TTL of failed lease rounds), it refuses at once with that
        # reason rather than block its event loop (and its map-server) on etcd per call;
        # the operator's status still answers and says what is wrong.
        core = ctl.controller.core
        assert core is not None
        loop.run_until_complete(_until(lambda: core.unavailable is not None, TTL * 10))
        with pytest.raises(grpc.RpcError) as listed:
            ctl.admin("ListNodes", admin_pb2.ListNodesRequest())
        assert listed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert (listed.value.details() or "").startswith("controller replica r1 cannot reach etcd")
        view = ctl.admin("ControllerStatus", admin_pb2.ControllerStatusRequest(), timeout=20)
        assert "etcd at" in view.store_health and not view.store_health.startswith("ok")
        # The mapping system needs no etcd: the map-server still holds the node's site.
        assert f"node-{enrollment.name}" in {s.name for s in ms.core.registry.sites}
    finally:
        ctl.stop()
        loop.close()
