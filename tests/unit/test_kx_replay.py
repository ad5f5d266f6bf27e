"""Replayed key exchanges (issue 12 finding 1), performed against real xTRs in memory: an on-path
attacker records A's keyed Map-Request to C and A's data, waits until A's key-id cycles back, then
replays them. It must not bring A's old key back, nor reset the replay window, nor move to another
ETR. The wall clock (proof times, certificates) is the test's, like the xTR clock."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest

from lisp import EncapsulatedControl, MapRequest, RequestRecord, decode_control
from mesh.kx import FRESHNESS
from mesh.xtr import CONTROL_PORT, DATA_PORT
from tests.unit import test_xtr_memory as memory
from tests.unit.test_xtr_memory import MakeNode, Node, Wire, ipv4_packet, rloc

pki = memory.pki
mesh = memory.mesh


class WallClock:
    def __init__(self) -> None:
        self.now = time.time()  # the lab certificates are valid from now on

    def __call__(self) -> float:
        return self.now


def _nodes(mesh: tuple[Wire, MakeNode], clock: WallClock, *indexes: int) -> tuple[Wire, list[Node]]:
    wire, make = mesh
    nodes = [make(index, clock=clock) for index in indexes]
    wire.tick()
    return wire, nodes


def _send(wire: Wire, node: Node, payload: bytes) -> None:
    node.xtr.now = wire.now
    node.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.2.1", payload))
    wire.pump()


def _keyed_requests_to(wire: Wire, address: str) -> list[tuple[tuple[str, int], bytes]]:
    out = []
    for source, dest, payload in wire.seen:
        if dest == (address, CONTROL_PORT):
            message = decode_control(payload)
            inner = message
            if isinstance(message, EncapsulatedControl):
                inner = decode_control(message.message)
            if isinstance(inner, MapRequest) and not inner.smr:
                out.append((source, payload))
    return out


def _cycle_key_ids(wire: Wire, clock: WallClock, n1: Node, seconds: float) -> None:
    for _ in range(3):  # 1 -> 2 -> 3 -> 1
        clock.now += seconds
        wire.tick(0.1)
        n1.xtr.prober.rekey()
        wire.pump()
    assert n1.status()["keys"]["itr_key_id"] == 1


@pytest.mark.parametrize("seconds", [20.0, FRESHNESS / 2])
def test_a_recorded_request_replayed_after_the_key_ids_cycled_is_refused(
    mesh: tuple[Wire, MakeNode], seconds: float
) -> None:
    clock = WallClock()
    wire, (n1, n2) = _nodes(mesh, clock, 1, 2)
    _send(wire, n1, b"old")
    assert [p[28:] for p in n2.inside] == [b"old"]
    recorded = _keyed_requests_to(wire, rloc(2))
    old_data = wire.to(rloc(2), DATA_PORT)
    assert recorded and old_data
    _cycle_key_ids(wire, clock, n1, seconds)
    _send(wire, n1, b"current")
    assert n2.inside[-1][28:] == b"current"
    # The attack: the old request again (its key-id is 1 again), then the old data.
    for source, payload in recorded:
        wire.queue.append((source, (rloc(2), CONTROL_PORT), payload))
    wire.pump()
    for sealed in old_data:
        wire.queue.append(((rloc(1), DATA_PORT), (rloc(2), DATA_PORT), sealed))
    wire.pump()
    assert n2.xtr.ctx.drops["kx-replayed"] >= 1
    assert [p[28:] for p in n2.inside].count(b"old") == 1  # not accepted a second time
    _send(wire, n1, b"after the replay")  # n1's current key still works at n2
    assert n2.inside[-1][28:] == b"after the replay"


def test_a_request_older_than_the_freshness_window_is_refused_even_by_a_fresh_etr(
    pki: dict[str, Path], mesh: tuple[Wire, MakeNode]
) -> None:
    clock = WallClock()
    wire, (n1, n2) = _nodes(mesh, clock, 1, 2)
    _send(wire, n1, b"old")
    recorded = _keyed_requests_to(wire, rloc(2))
    # n2 restarts (it remembers no peer) long after the recording.
    clock.now += FRESHNESS + 60
    n2.xtr.ctx.kx = memory.authority(pki, "n2", clock)
    before = n2.xtr.ctx.drops["kx-replayed"]
    for source, payload in recorded:
        wire.queue.append((source, (rloc(2), CONTROL_PORT), payload))
    wire.pump()
    assert n2.xtr.ctx.drops["kx-replayed"] > before
    assert "replayed, or a clock is wrong" in n2.xtr.ctx.errors[-1]


def _retarget(payload: bytes, eid: Any) -> bytes:
    """The attacker rewrites the (unsigned) EID record of a recorded request."""
    ecm = decode_control(payload)
    assert isinstance(ecm, EncapsulatedControl)
    request = decode_control(ecm.message)
    assert isinstance(request, MapRequest)
    moved = dataclasses.replace(request, records=(RequestRecord(eid, 24),))
    return dataclasses.replace(ecm, message=moved.encode()).encode()


def test_a_request_recorded_for_one_etr_is_refused_by_another(mesh: tuple[Wire, MakeNode]) -> None:
    clock = WallClock()
    wire, (n1, _n2, n3) = _nodes(mesh, clock, 1, 2, 3)
    _send(wire, n1, b"to n2")
    (source, payload), *_ = _keyed_requests_to(wire, rloc(2))
    # Sent as is to n3, it asks for n2's EID: not n3's to answer.
    wire.queue.append((source, (rloc(3), CONTROL_PORT), payload))
    wire.pump()
    assert n3.xtr.ctx.drops["map-request-not-ours"] == 1
    # Rewritten to ask for n3's EID, its signature no longer matches: refused, nothing installed.
    from ipaddress import ip_address

    forged = _retarget(payload, ip_address("10.1.3.0"))
    wire.queue.append((source, (rloc(3), CONTROL_PORT), forged))
    wire.pump()
    assert n3.xtr.ctx.drops["kx-auth-failed"] == 1
    assert n3.status()["keys"]["decap"] == []
