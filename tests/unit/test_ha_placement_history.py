"""Placements through leader changes (issue 18): three controller replica processes on a real
etcd place an app on four enrolled nodes and roll it to two new versions; the leader is killed
(-9) in the middle of the first rollout and paused past its lease (SIGSTOP, then SIGCONT) in the
middle of the second. etcd's record of the run is then checked (tests/placement_history.py): no
replica on two nodes, no node overcommitted, every placement fenced by the term leading then.

The nodes' side is played by the test: each reports its capacity and every workload of its
desired state running at its version, written to the store as the Status service does.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format

from controller_api.apps.spec import parse_app
from controller_api.apps.workloads import workload_name
from controller_api.gen.lispmesh.v1 import status_pb2
from controller_api.offline import create_token
from controller_api.placement.commit import read_allocations, read_node_allocations
from controller_api.settings import StoreSettings
from controller_api.store import StoreError
from controller_api.store.etcd import EtcdStore
from lispmesh.cli import main
from lispmesh.waiting import wait_until
from node.enroll import enroll
from node.state import StateDir
from tests.etcd_cluster import EtcdCluster, unique_prefix
from tests.placement_history import check_placements
from tests.replica_harness import Replica, leader, start_replicas

# Several controller replica processes on a real etcd cluster: the cluster tier (tests/conftest.py).
pytestmark = pytest.mark.cluster

TTL = 2
REPLICAS = 6
APP = """apiVersion: lispmesh/v1
kind: App
metadata: {{name: echo}}
spec:
  image: local/echo@sha256:{digest}
  source: /srv/images/echo
  replicas: {replicas}
  resources: {{memory: 96Mi, cpu: 100m, disk: 64Mi}}
  update: {{strategy: rolling, max_unavailable: 1}}
  env: {{ROUND: "{round}"}}
"""
# Room for two replicas a node: eight places for six replicas, so a doubled one would show.
CAPACITY = status_pb2.WorkloadCapacity(
    memory_bytes=200 << 20, millicpu=1000, disk_bytes=1 << 30, kinds=["container"]
)


def app(round_: int) -> str:
    return APP.format(digest="ab" * 32, replicas=REPLICAS, round=round_)


class Nodes:
    """The enrolled nodes' reports: capacity, and each allocation running at its version."""

    def __init__(self, store: EtcdStore, names: dict[str, str]) -> None:
        self.store = store
        self.names = names  # name -> node id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def report(self) -> None:
        for name, node_id in self.names.items():
            running = [
                status_pb2.WorkloadStatus(name=workload_name(a.app, a.replica), app=a.app,
                                          replica=a.replica, state="RUNNING", version=a.version)
                for a in read_node_allocations(self.store, name)
            ]  # fmt: skip
            report = status_pb2.StatusReport(workload_capacity=CAPACITY, workloads=running)
            status = json_format.MessageToDict(report, preserving_proto_field_name=True)
            self.store.record_status(node_id, status, time.time())

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            with contextlib.suppress(StoreError):  # etcd busy: the next report
                self.report()

    def __enter__(self) -> Nodes:
        self.report()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


@pytest.fixture
def store(etcd_cluster: EtcdCluster, prefix: str) -> Iterator[EtcdStore]:
    s = EtcdStore(etcd_cluster.endpoints, prefix)
    yield s
    s.close()


def test_placements_through_leader_changes_keep_the_history_sound(
    etcd_cluster: EtcdCluster, store: EtcdStore, prefix: str, tmp_path: Path
) -> None:
    start = store.revision() + 1
    replicas = start_replicas(tmp_path / "r", etcd_cluster.endpoints, prefix, 3, TTL, 0.3)
    try:
        by_name = {r.name: r for r in replicas}
        settings = StoreSettings("etcd", tuple(etcd_cluster.endpoints), prefix)
        token, _ = create_token(replicas[0].state_dir, 600, 4, store_settings=settings)
        names = {}
        for i in range(4):
            e = enroll(StateDir(tmp_path / f"n{i}"), replicas[i % 3].address, str(token))
            names[e.name] = e.node_id
        with Nodes(store, names):
            deploy(replicas[0], app(1), tmp_path)
            rolled(store, app(1))
            # Kill -9 the leader in the middle of a rolling update (deployed at a follower).
            paused: Replica | None = None
            for round_, sig in ((2, signal.SIGKILL), (3, signal.SIGSTOP)):
                old, _ = wait_until(lambda: leader(store.etcd, prefix), 10, "a leader")
                follower = next(r for r in replicas if r.name != old and r.process)
                deploy(follower, app(round_), tmp_path)
                wait_until(lambda round_=round_: mid_rollout(store, app(round_)), 30,
                           f"the rollout to round {round_} under way")  # fmt: skip
                by_name[old].signal(sig)
                if sig == signal.SIGKILL:
                    by_name[old].stop()
                else:
                    paused = by_name[old]
                wait_until(
                    lambda old=old: (now := leader(store.etcd, prefix)) and now[0] != old,
                    TTL * 5, f"a leader after {old}",
                )  # fmt: skip
                if paused is not None:
                    wait_until(lambda round_=round_: placed(store, app(round_)) >= 3, 30,
                               "the new leader to go on with the rollout")  # fmt: skip
                    paused.signal(signal.SIGCONT)  # its stale round, if any, must be refused
                rolled(store, app(round_))
            assert paused is not None
            wait_until(lambda: "this replica follows" in paused.log, TTL * 5,
                       "the paused leader to step down")  # fmt: skip
        history = check_placements(store.etcd, prefix, start)
    finally:
        for r in replicas:
            r.stop()
    print(
        f"\n{history.placement_writes} placement writes, leaders by term: {history.placement_terms}"
    )
    assert not history.violations, "\n".join(history.violations[:20])
    # Three terms placed replicas (the run really crossed two leader changes), and the end
    # state is the spec: six replicas of the last version, on nodes that hold them.
    assert len(history.placement_terms) >= 3, history.placement_terms
    final = sorted((a["replica"], a["version"]) for v in history.final.values() for a in v)
    assert final == [(i, parse_app(app(3), "echo.yml").version) for i in range(REPLICAS)]


def deploy(replica: Replica, text: str, tmp_path: Path) -> None:
    spec = tmp_path / "echo.yml"
    spec.write_text(text)
    assert main(["app", "deploy", str(spec), "--state-dir", str(replica.state_dir)]) == 0


def placed(store: EtcdStore, text: str) -> int:
    version = parse_app(text, "echo.yml").version
    return sum(1 for a in read_allocations(store) if a.version == version)


def mid_rollout(store: EtcdStore, text: str) -> bool:
    """Some replicas are on the new version, at least two still on an older one."""
    new = placed(store, text)
    return new >= 1 and len(read_allocations(store)) - new >= 2


def rolled(store: EtcdStore, text: str) -> None:
    version = parse_app(text, "echo.yml").version

    def done() -> bool:
        allocations = read_allocations(store)
        return len(allocations) == REPLICAS and all(
            a.version == version and a.running for a in allocations
        )

    wait_until(done, 60, f"every replica running version {version}")
