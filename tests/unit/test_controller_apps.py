"""Apps at the controller over real gRPC (no root): deploy through AppAdmin, the leader's loop
places the replicas on the nodes that report workload capacity, each node's desired state holds
its workloads with their EIDs (registered as more-specifics), the nodes' reports mark them
running, and rm takes them off again. A bad spec is refused with the field named."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest

from controller_api.client import aio_channel, credentials
from controller_api.gen.lispmesh.v1 import apps_pb2, apps_pb2_grpc, status_pb2, status_pb2_grpc
from lispmesh.waiting import wait_until
from node.state import StateDir
from tests.controller_harness import Running

DIGEST = "sha256:" + "ab" * 32
APP = f"""apiVersion: lispmesh/v1
kind: App
metadata: {{name: echo, labels: {{app: echo}}}}
spec:
  image: local/echo@{DIGEST}
  source: /srv/images/echo
  replicas: 2
  resources: {{memory: 64Mi, cpu: 100m, disk: 64Mi}}
  constraints: {{labels: {{site: a}}, distinct_hosts: true}}
  ports: [tcp/7]
  env: {{GREETING: hi}}
"""
CAPACITY = status_pb2.WorkloadCapacity(
    memory_bytes=1 << 30, millicpu=2000, disk_bytes=10 << 30, kinds=["container"]
)


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[Running]:
    loop = asyncio.new_event_loop()
    running = Running(loop, tmp_path / "ctl", app_interval=0.2)
    yield running
    running.stop()
    loop.close()


def apps(ctl: Running, rpc: str, request: Any) -> Any:
    async def call() -> Any:
        async with aio_channel(ctl.controller.api_address, ctl.admin_creds()) as ch:
            return await getattr(apps_pb2_grpc.AppAdminStub(ch), rpc)(request, timeout=10)

    return ctl.loop.run_until_complete(call())


def report(ctl: Running, state: StateDir, report: status_pb2.StatusReport) -> None:
    creds = credentials(state.ca.read_bytes(), state.cert.read_bytes(), state.key.read_bytes())

    async def call() -> None:
        async with aio_channel(ctl.controller.api_address, creds) as ch:
            await status_pb2_grpc.StatusStub(ch).Report(report, timeout=5)

    ctl.loop.run_until_complete(call())


def desired(ctl: Running, name: str) -> Any:
    core = ctl.controller.core
    assert core is not None
    row = core.store.find_node(name)
    assert row is not None
    return core.desired_state(row)


def test_an_app_deployed_at_the_controller_reaches_the_nodes_desired_state(
    ctl: Running, tmp_path: Path
) -> None:
    nodes = {}
    for i, tags in enumerate((["site=a"], ["site=a"], ["site=b"])):
        state = StateDir(tmp_path / f"n{i}")
        nodes[ctl.enroll(state, ctl.token(tags=tuple(tags))).name] = state
        report(ctl, state, status_pb2.StatusReport(workload_capacity=CAPACITY))

    bad = apps(ctl, "Deploy", apps_pb2.AppDocument(text=APP.replace("100m", "lots"),
                                                   filename="echo.yml"))  # fmt: skip
    assert not bad.ok and bad.error.startswith("echo.yml:") and "spec.resources.cpu" in bad.error
    result = apps(ctl, "Deploy", apps_pb2.AppDocument(text=APP, filename="echo.yml"))
    assert result.ok and result.created, result

    def placed() -> Any:
        return apps(ctl, "Status", apps_pb2.AppRequest(name="echo"))

    wait_until(lambda: len(placed().placed) == 2, 10, "both replicas placed")
    status = placed()
    hosts = {r.node for r in status.placed}
    assert len(hosts) == 2 and all(nodes[h] for h in hosts)  # distinct hosts
    site_b = next(n for n in nodes if n not in hosts)
    assert not desired(ctl, site_b).workloads  # filtered by label site=a
    eids = set()
    for r in status.placed:
        assert r.state == "PENDING" and not r.running
        d = desired(ctl, r.node)
        (w,) = d.workloads
        assert (w.app, w.replica, w.image_digest) == ("echo", r.replica, DIGEST)
        assert w.image_source == "file:///srv/images/echo" and w.env["GREETING"] == "hi"
        assert w.resources.memory_bytes == 64 << 20 and list(w.ports) == ["tcp/7"]
        assert ip_network(w.eids[0]).subnet_of(ip_network("10.251.0.0/16"))  # the app pool
        assert set(w.eids) <= set(d.eid_prefixes)  # the node registers them
        assert "10.251.0.0/16" in d.overlay_routes
        eids.add(w.eids[0])
        running = status_pb2.WorkloadStatus(name=w.name, app="echo", replica=w.replica,
                                            state="RUNNING", version=w.version, restarts=2,
                                            exit_code=137)  # fmt: skip
        seen = status_pb2.StatusReport(workload_capacity=CAPACITY, workloads=[running])
        report(ctl, nodes[r.node], seen)
    assert len(eids) == 2
    # The map-server lets exactly the hosting node register each replica's EID.
    ms = ctl.controller.map_server
    assert ms is not None
    wait_until(lambda: all(
        f"{r.eids[0]}/32" in {str(p) for _, p in _site(ms, r.node).allowed}
        for r in status.placed), 10, "the map-server to allow the replicas' EIDs")  # fmt: skip
    wait_until(lambda: all(r.running and r.state == "RUNNING" for r in placed().placed), 10,
               "both replicas reported running, and counted so")  # fmt: skip
    assert placed().running == 2
    # Restarts and how it last exited, as the nodes report them (137: killed).
    assert all(r.restarts == 2 and r.exit_code == 137 for r in placed().placed)

    explained = apps(ctl, "Explain", apps_pb2.AppRequest(name="echo"))
    assert "nothing to do" in explained.plan[-1] and explained.events

    removed = apps(ctl, "Remove", apps_pb2.AppRequest(name="echo"))
    assert removed.removed
    wait_until(lambda: not any(desired(ctl, h).workloads for h in hosts), 10, "replicas stopped")
    listed = apps(ctl, "List", apps_pb2.ListAppsRequest())
    assert not listed.apps


def _site(ms: Any, node: str) -> Any:
    return next(s for s in ms.core.registry.sites if s.name == f"node-{node}")
