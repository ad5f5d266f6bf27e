"""Three controller replica processes on one real etcd: the leader is SIGSTOPped past its lease,
another takes over, and the old one, resumed, never writes as leader again; a one-use token
redeemed through two replicas at the same moment enrolls exactly one node."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller_api.offline import create_token
from controller_api.settings import StoreSettings
from controller_api.store.etcd_client import EtcdClient
from lispmesh.waiting import wait_until
from node.enroll import EnrollError, enroll
from node.state import StateDir
from tests.etcd_cluster import EtcdCluster, unique_prefix
from tests.replica_harness import Replica, leader, leader_record, start_replicas

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
    replicas: list[Replica], etcd: EtcdClient, prefix: str
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
