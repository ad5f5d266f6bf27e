"""The address follows the workload (issue 14 item 4): a one-replica app runs on n1 or n2, n3
pings its EID all along; the hosting node dies (its agent SIGKILLed: no more Watch stream, no
xTR) → after the controller's node timeout and the app's lost_after the replica is replaced on
the other node with the SAME EID, the new node registers it, and n3, whose mapping pointed at
the dead node, asks the mapping system again once that RLOC is down and reaches the new copy.
The move gap (the longest time without a reply) is printed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lispmesh.mesh_lab import MeshLab, wait_for
from tests.integration.move_lab import (
    CLIENT,
    Pinger,
    client_view,
    deploy,
    hosts_ready,
    lab_node,
    move_lab,
    now,
    wait_running,
)
from tests.oci_build import BUSYBOX

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and runc"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc not installed (bootstrap.sh)"),
    pytest.mark.skipif(not BUSYBOX.exists(), reason="busybox-static not installed"),
]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[MeshLab]:
    with move_lab(tmp_path) as built:
        try:
            wait_for(lambda: hosts_ready(built), 60, "the hosts' capacity and a full mesh", 0.2)
        except TimeoutError:
            pytest.fail(f"no full mesh, or no capacity reported\n{built.dump()}")
        yield built


def test_a_replica_on_a_lost_node_moves_with_its_eid_and_its_client_follows(
    lab: MeshLab, tmp_path: Path
) -> None:
    first = deploy(lab, tmp_path)
    eid4 = first["eids"][0]
    old = lab_node(lab, first["node"])
    pinger = Pinger(lab, eid4, tmp_path / "ping.log")
    try:
        try:
            wait_for(lambda: pinger.answered_since(0), 30, f"{CLIENT} to reach {eid4}", 0.1)
        except TimeoutError:
            pytest.fail(f"{CLIENT} cannot reach {eid4}\n{lab.dump()}")
        killed = now()
        lab.stop_process(old)  # SIGKILL: the workload keeps running there, unreachable
        try:
            moved = wait_running(lab, lambda node: node != first["node"], 90)
            wait_for(lambda: pinger.answered_since(killed), 60, f"{eid4} to answer again", 0.1)
        except TimeoutError:
            pytest.fail(f"not moved or not answering\n{pinger.out.read_text()[-800:]}\n"
                        f"{client_view(lab)}\n{lab.dump()}")  # fmt: skip
        gap = pinger.gap(killed)
    finally:
        pinger.stop()
    assert moved["eids"] == first["eids"]  # the EID followed the replica
    new = lab_node(lab, moved["node"])
    # The client resolved the EID again and now sends to the new node.
    status = lab.status(CLIENT)
    assert status is not None
    peers = {p["name"]: p for p in status["xtr"]["peers"]}
    assert peers[moved["node"]]["packets_received"] > 0
    assert status["xtr"]["stats"].get("map-requests-moved", 0) > 0
    print(f"\nmove gap after {old} was lost ({new} took the replica): {gap:.2f} s "
          "(node timeout 2 s + lost_after 2 s included)")  # fmt: skip
