"""Three controller replica processes on one real etcd: the leader is SIGSTOPped past its lease,
another takes over, and the old one, resumed, never writes as leader again; a one-use token
redeemed through two replicas at the same moment enrolls exactly one node; a node whose
replica is killed moves to another one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller_api.offline import create_token
from controller_api.settings import StoreSettings
from controller_api.store.etcd_client import EtcdClient
from lispmesh.cli import main
from lispmesh.waiting import wait_until
from node.agent import Agent, AgentOptions
from node.enroll import EnrollError, enroll
from node.node_key import NodeKey
from node.state import StateDir
from tests.etcd_cluster import EtcdCluster, unique_prefix
from tests.replica_harness import Replica, leader, leader_record, start_replicas

# Several controller replica processes on a real etcd cluster: the cluster tier (tests/conftest.py).
pytestmark = pytest.mark.cluster

TTL = 2


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


@pytest.fixture
def replicas(tmp_path: Path, etcd_cluster: EtcdCluster, prefix: str) -> Iterator[list[Replica]]:
    started = start_replicas(tmp_path, etcd_cluster.endpoints, prefix, 3, leader_ttl=TTL)
    yield started
    for r in started:
        r.stop()


@pytest.fixture
def etcd(etcd_cluster: EtcdCluster) -> Iterator[EtcdClient]:
    client = EtcdClient(etcd_cluster.endpoints)
    yield client
    client.close()


def test_a_paused_leader_is_replaced_and_cannot_write_when_resumed(
    replicas: list[Replica], etcd: EtcdClient, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    by_name = {r.name: r for r in replicas}
    old_name, old_term = wait_until(lambda: leader(etcd, prefix), 10, "a leader")
    record = wait_until(lambda: leader_record(etcd, prefix), 10, "the leader's first round")
    assert (record["replica"], record["term"]) == (old_name, old_term)
    old = by_name[old_name]

    old.signal(signal.SIGSTOP)
    try:
        new_name, new_term = wait_until(
            lambda: (now := leader(etcd, prefix)) and now[0] != old_name and now,
            TTL * 5,
            "another replica to lead",
        )
        assert new_term > old_term
        wait_until(
            lambda: (r := leader_record(etcd, prefix)) and r["term"] == new_term,
            TTL * 5,
            "the new leader's first round",
        )
    finally:
        old.signal(signal.SIGCONT)
    wait_until(lambda: "this replica follows" in old.log, TTL * 5, "the old leader to step down")
    # Let the new leader record two more rounds while the old one runs again: every record
    # is the new term's, and the old replica never leads again.
    first = leader_record(etcd, prefix)
    assert first is not None
    for _ in range(2):
        seen = first["at"]
        first = wait_until(
            lambda seen=seen: (r := leader_record(etcd, prefix)) and r["at"] > seen and r,
            TTL * 5,
            "a further round",
        )
        assert (first["replica"], first["term"]) == (new_name, new_term)
    assert leader(etcd, prefix) == (new_name, new_term)
    assert old.log.count("this replica leads") == 1
    assert old.process is not None and old.process.poll() is None  # it survived the pause
    # The operator's view, asked of the old leader: who leads now, every replica, etcd healthy.
    assert main(["controller", "status", "--state-dir", str(old.state_dir), "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert (view["replica"], view["leader"], int(view["leader_term"])) == (
        old_name, new_name, new_term,
    )  # fmt: skip
    assert [(r["name"], r.get("leader", False)) for r in view["replicas"]] == [
        (r.name, r.name == new_name) for r in replicas
    ]
    assert view["store_health"].startswith("ok (etcd 3.") and int(view["store_revision"]) > 0


def test_one_use_token_raced_through_two_replicas_enrolls_once(
    etcd_cluster: EtcdCluster, etcd: EtcdClient, prefix: str, tmp_path: Path
) -> None:
    replicas = start_replicas(tmp_path / "replicas", etcd_cluster.endpoints, prefix, 2)
    try:
        _race(replicas, etcd_cluster, etcd, prefix, tmp_path)
    finally:
        for r in replicas:
            r.stop()


def _race(
    replicas: list[Replica],
    etcd_cluster: EtcdCluster,
    etcd: EtcdClient,
    prefix: str,
    tmp_path: Path,
) -> None:
    settings = StoreSettings("etcd", tuple(etcd_cluster.endpoints), prefix)
    token, _ = create_token(replicas[0].state_dir, 600, 1, store_settings=settings)
    start, results = threading.Barrier(2), ["", ""]

    def redeem(i: int) -> None:
        start.wait(timeout=10)
        try:
            results[i] = enroll(StateDir(tmp_path / f"n{i}"), replicas[i].address, str(token)).name
        except EnrollError as exc:
            results[i] = f"refused: {exc}"

    threads = [threading.Thread(target=redeem, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    refused = [r for r in results if r.startswith("refused")]
    assert len(refused) == 1 and "used up" in refused[0], results
    assert etcd.range(f"{prefix}nodes/".encode(), prefix=True).count == 1


async def _until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """wait_until for a coroutine: polls without blocking the loop the agent runs in."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def test_a_node_moves_to_another_replica_when_its_controller_dies(
    etcd_cluster: EtcdCluster, prefix: str, tmp_path: Path
) -> None:
    replicas = start_replicas(tmp_path / "replicas", etcd_cluster.endpoints, prefix, 2)
    try:
        settings = StoreSettings("etcd", tuple(etcd_cluster.endpoints), prefix)
        token, _ = create_token(replicas[0].state_dir, 600, 1, store_settings=settings)
        state = StateDir(tmp_path / "node")
        enrollment = enroll(state, replicas[0].address, str(token))
        apis = [r.info["api_address"] for r in replicas]
        assert enrollment.controllers() == tuple(apis)  # the one it joined first
        assert state.load_enrollment().controllers() == tuple(apis)
        options = AgentOptions(state.path, tmp_path / "run", backoff_base=0.2, backoff_cap=1.0)
        agent = Agent(state, enrollment, options, NodeKey.open(state, None))
        received: list[str] = []

        async def apply(desired: Any, checkpointed: bool = False) -> tuple[bool, str]:
            # Running the mesh needs root: here only the controller session is under test.
            received.append(agent.api_address)
            return True, ""

        agent._apply = apply  # type: ignore[method-assign]

        async def scenario() -> dict[str, Any]:
            session = asyncio.create_task(agent._controller_loop())
            try:
                await _until(lambda: agent.controller_state == "connected" and received, 15,
                             "the node to connect")  # fmt: skip
                assert received[-1] == apis[0]
                replicas[0].signal(signal.SIGKILL)
                await _until(lambda: received[-1] == apis[1], 15, "the node on the other replica")
                await _until(lambda: agent.controller_state == "connected", 5, "connected")
                return agent.status()
            finally:
                session.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await session

        loop = asyncio.new_event_loop()
        try:
            status = loop.run_until_complete(scenario())
        finally:
            loop.close()
        assert status["controller_address"] == apis[1]
        # The one in use first; r0 is listed until its registration lapses.
        assert status["controller_addresses"][0] == apis[1]
        assert set(status["controller_addresses"]) <= set(apis)
    finally:
        for r in replicas:
            r.stop()


def test_replicas_added_and_removed_after_enrollment_reach_the_node(
    etcd_cluster: EtcdCluster, prefix: str, tmp_path: Path
) -> None:
    """The node enrolls with r0 and r1; r2 starts later, r1 stops: the node's list follows
    (and is saved), so when r0 dies the node moves to r2, which it never enrolled with."""
    replicas = start_replicas(tmp_path / "replicas", etcd_cluster.endpoints, prefix, 2)
    try:
        settings = StoreSettings("etcd", tuple(etcd_cluster.endpoints), prefix)
        token, _ = create_token(replicas[0].state_dir, 600, 1, store_settings=settings)
        state = StateDir(tmp_path / "node")
        enrollment = enroll(state, replicas[0].address, str(token))
        options = AgentOptions(state.path, tmp_path / "run", backoff_base=0.2, backoff_cap=1.0)
        agent = Agent(state, enrollment, options, NodeKey.open(state, None))
        received: list[str] = []

        async def apply(desired: Any, checkpointed: bool = False) -> tuple[bool, str]:
            received.append(agent.api_address)  # the mesh needs root: only the session here
            return True, ""

        agent._apply = apply  # type: ignore[method-assign]

        def listed() -> tuple[str, ...]:
            return agent.enrollment.controllers()

        async def scenario() -> None:
            session = asyncio.create_task(agent._controller_loop())
            try:
                await _until(lambda: agent.controller_state == "connected" and received, 15,
                             "the node to connect")  # fmt: skip
                late = start_replicas(tmp_path / "replicas", etcd_cluster.endpoints, prefix, 1,
                                      first=2)  # fmt: skip
                replicas.extend(late)
                r2 = late[0].info["api_address"]
                await _until(lambda: r2 in listed(), 15, "the node to learn of r2")
                r1 = replicas[1].info["api_address"]
                replicas[1].stop()  # its registration goes with it
                await _until(lambda: r1 not in listed(), 15, "the node to forget r1")
                saved = state.load_enrollment().controllers()
                assert r2 in saved and r1 not in saved  # a restart starts from this list
                replicas[0].signal(signal.SIGKILL)
                await _until(lambda: received[-1] == r2, 20, "the node on r2")
                await _until(lambda: agent.controller_state == "connected", 5, "connected")
            finally:
                session.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await session

        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(scenario())
        finally:
            loop.close()
        assert agent.status()["controller_address"] == replicas[2].info["api_address"]
    finally:
        for r in replicas:
            r.stop()
