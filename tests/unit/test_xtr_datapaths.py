"""xTRs on both data paths, in memory, against each other: the C engine (mesh.fastpath) and the
Python reference behind the one DataPath interface, in every pairing.

The control plane runs through the in-memory `Wire` of test_xtr_memory as there; only the data
packets take real sockets, because the C engine sends and receives them itself: each node's data
socket is bound on a loopback address (its RLOC, no root needed) and its TUN is one end of a
socketpair. The wire pumps those too, so a test still drives everything with its own clock.
"""

from __future__ import annotations

import dataclasses
import os
import random
import select
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesh import fastpath
from mesh.xtr import DATA_PORT, LocalRloc, Xtr
from tests.unit import test_xtr_memory as memory
from tests.unit.test_xtr_memory import Node, Wire, ipv4_packet

pytestmark = pytest.mark.skipif(not fastpath.available(), reason="mesh._fastpath is not built")
pki = memory.pki
VNET_HEADER = b"\0" * 10  # the engine's TUN carries a virtio-net header
KINDS = [("python", "python"), ("python", "c"), ("c", "python"), ("c", "c")]


class SocketNode(Node):
    """A node whose data packets go through a real UDP socket (and, for the C engine, whose
    TUN is a socketpair the engine reads and writes itself)."""

    sock: socket.socket
    tun: socket.socket | None = None  # our end of the engine's TUN
    engine_tun: socket.socket | None = None

    def send_data(self, local: LocalRloc, packet: bytes, dest: tuple[str, int]) -> None:
        self.sock.sendto(packet, dest)

    def send_inside(self, packet: bytes) -> None:
        """A packet from a workload: into the TUN (C) or to the xTR (Python)."""
        if self.tun is not None:
            self.tun.send(VNET_HEADER + packet)
        else:
            self.xtr.inside_packet(packet)

    def close(self) -> None:
        for sock in (self.sock, self.tun, self.engine_tun):
            if sock is not None:
                sock.close()


class SocketWire(Wire):
    """The in-memory wire, plus the nodes' data sockets and engine TUNs."""

    def __init__(self) -> None:
        super().__init__()
        # A loopback /24 of our own, so parallel runs do not meet on port 4341.
        self.base = f"127.{random.randrange(100, 250)}.{random.randrange(1, 250)}"

    def rloc(self, index: int, uplink: int = 0) -> str:
        return f"{self.base}.{10 * (uplink + 1) + index}"

    def pump(self, limit: int = 1000) -> int:
        total = 0
        for _ in range(limit):
            moved = super().pump(limit) + self._sockets()
            total += moved
            if not moved:
                return total
        raise AssertionError("the packets never stop")

    def _sockets(self) -> int:
        """Let every node read what is waiting on its sockets; how many were ready (what the
        engine handles itself never comes back to Python, so readiness is what counts)."""
        nodes = [n for n in {id(n): n for n in self.nodes.values()}.values()]
        ready = 0
        for node in nodes:
            assert isinstance(node, SocketNode)
            socks = [s for s in (node.sock, node.tun, node.engine_tun) if s is not None]
            readable = select.select(socks, [], [], 0)[0]
            ready += len(readable)
            xtr = node.xtr
            xtr.now = self.now
            if node.engine_tun in readable:
                for packet in xtr.datapath.pump_inside(node.engine_tun.fileno(), 64):
                    xtr.inside_packet(packet)  # the engine's misses
            if node.sock in readable:
                for packet, source in xtr.datapath.pump_outside(node.sock, 64):
                    xtr.outside_data(packet, source)
            if node.tun in readable:
                while select.select([node.tun], [], [], 0)[0]:
                    node.inside.append(node.tun.recv(65535)[len(VNET_HEADER) :])
        return ready


@pytest.fixture
def lab(pki: dict[str, Path]) -> Iterator[tuple[SocketWire, Any]]:
    wire = SocketWire()
    made: list[SocketNode] = []

    def make(index: int, kind: str, **security: Any) -> SocketNode:
        config = memory.node_config(pki, index, rloc_of=wire.rloc, **security)
        node = SocketNode(config.name, wire)
        made.append(node)
        node.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        node.sock.setblocking(False)
        node.sock.bind((wire.rloc(index), DATA_PORT))
        node.xtr = Xtr(config, node, memory.authority(pki, config.name), wire.now)
        if kind == "c":
            node.tun, node.engine_tun = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            os.set_blocking(node.engine_tun.fileno(), False)
            engine = fastpath.FastPath(
                node.engine_tun.fileno(),
                config.xtr.instance_id if config.xtr else 0,
                config.security.cipher_suite,
                data_fd=lambda _local: node.sock.fileno(),
                send_relayed=node.send_data,
            )
            node.xtr.attach_datapath(engine)
        wire.add(node)
        return node

    yield wire, make
    for node in made:
        node.close()


def _joined(lab: tuple[SocketWire, Any], *kinds: str) -> list[SocketNode]:
    wire, make = lab
    nodes = [make(index, kind) for index, kind in enumerate(kinds, start=1)]
    wire.tick()
    return nodes


def _exchange(wire: SocketWire, a: SocketNode, b: SocketNode, payload: bytes) -> None:
    """`payload` from a's EID to b's and back; both must arrive."""
    ia, ib = int(a.name[1:]), int(b.name[1:])
    out = ipv4_packet(f"10.1.{ia}.1", f"10.1.{ib}.1", payload)
    back = ipv4_packet(f"10.1.{ib}.1", f"10.1.{ia}.1", payload + b" back")
    a.send_inside(out)
    wire.pump()
    assert b.inside[-1:] == [out]
    b.send_inside(back)
    wire.pump()
    assert a.inside[-1:] == [back]


@pytest.mark.parametrize("kinds", KINDS, ids="-".join)
def test_a_miss_resolves_and_packets_flow_both_ways(
    lab: tuple[SocketWire, Any], kinds: tuple[str, str]
) -> None:
    wire, _ = lab
    n1, n2 = _joined(lab, *kinds)
    assert n1.xtr.datapath.name == kinds[0] and n2.xtr.datapath.name == kinds[1]
    _exchange(wire, n1, n2, b"first")  # the first packet waited for the key exchange
    _exchange(wire, n1, n2, b"second")  # then straight through the data path
    (entry,) = n1.status()["map_cache"]
    assert (entry["prefix"], entry["peer"]) == ("10.1.2.0/24", "n2")
    peers = {p["name"]: p for p in n2.status()["peers"]}
    assert peers["n1"]["packets_received"] == 2 and peers["n1"]["packets_sent"] == 2


@pytest.mark.parametrize("kinds", KINDS, ids="-".join)
def test_traffic_keeps_flowing_while_key_ids_cycle(
    lab: tuple[SocketWire, Any], kinds: tuple[str, str]
) -> None:
    wire, _ = lab
    n1, n2 = _joined(lab, *kinds)
    _exchange(wire, n1, n2, b"key-id 1")
    for expected in (2, 3, 1):
        n1.xtr.prober.rekey()
        wire.tick(0.1)
        assert n1.status()["keys"]["itr_key_id"] == expected
        _exchange(wire, n1, n2, f"after rekey to {expected}".encode())
    decap = {(d["rloc"], d["key_id"]) for d in n2.status()["keys"]["decap"]}
    assert (wire.rloc(1), 1) in decap and len({k for _, k in decap}) >= 2


@pytest.mark.parametrize("kinds", KINDS, ids="-".join)
def test_a_replayed_data_packet_is_refused(
    lab: tuple[SocketWire, Any], kinds: tuple[str, str]
) -> None:
    wire, _ = lab
    n1, n2 = _joined(lab, *kinds)
    _exchange(wire, n1, n2, b"warm up")
    packet = ipv4_packet("10.1.1.1", "10.1.2.1", b"once")
    n1.send_inside(packet)
    # Take the sealed datagram off n2's socket before n2 reads it, as an on-path attacker
    # records it; deliver it, then replay it from n1's address.
    if n1.tun is not None:
        n1.xtr.datapath.pump_inside(n1.engine_tun.fileno(), 64)  # type: ignore[union-attr]
    assert select.select([n2.sock], [], [], 1.0)[0]
    sealed = n2.sock.recv(65535)
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        attacker.bind((wire.rloc(1), 0))
        for _ in range(2):
            attacker.sendto(sealed, (wire.rloc(2), DATA_PORT))
            wire.pump()
    finally:
        attacker.close()
    assert [p for p in n2.inside if p == packet] == [packet]
    assert n2.status()["drops"].get("replay") == 1


@pytest.mark.parametrize("kinds", KINDS, ids="-".join)
def test_revocation_cuts_a_peer_off_in_either_data_path(
    lab: tuple[SocketWire, Any], kinds: tuple[str, str]
) -> None:
    wire, _ = lab
    n1, n2 = _joined(lab, *kinds)
    _exchange(wire, n1, n2, b"before")
    n2.xtr.revocation.apply(frozenset({"n1"}))
    received = len(n2.inside)
    n1.send_inside(ipv4_packet("10.1.1.1", "10.1.2.1", b"after"))
    wire.pump()
    assert len(n2.inside) == received  # n1's key is gone from n2's data path
    assert n2.status()["drops"].get("no-key", 0) >= 1


@pytest.mark.parametrize("etr", ["python", "c"])
def test_an_etr_is_no_open_relay(lab: tuple[SocketWire, Any], etr: str) -> None:
    """A peer with a valid key seals packets for destinations that are not the ETR's EIDs (to
    reach whatever the ETR's TUN side routes): they are dropped, in either data path."""
    wire, _ = lab
    n1, n2 = _joined(lab, "python", etr)
    _exchange(wire, n1, n2, b"a genuine one first")
    (path,) = n1.xtr.path_table.paths.values()  # n1's key and RLOC for n2
    received = len(n2.inside)
    for foreign in ("10.1.3.1", "192.168.7.1"):  # another node's EID; n2's LAN side
        assert n1.xtr.datapath.send(path, ipv4_packet("10.1.1.1", foreign, b"through n2"))
        wire.pump()
    assert len(n2.inside) == received
    assert n2.status()["drops"].get("foreign-destination") == 2
    _exchange(wire, n1, n2, b"and genuine ones still pass")


@pytest.mark.parametrize("etr", ["python", "c"])
def test_a_live_instance_id_change_reaches_the_data_path(
    lab: tuple[SocketWire, Any], etr: str
) -> None:
    """n2 moves to instance-id 5 while n1 still holds a key for it in instance 0: n1's packets
    (header instance-id 0) are another network's from then on, in either data path."""
    wire, _ = lab
    n1, n2 = _joined(lab, "python", etr)
    _exchange(wire, n1, n2, b"in instance 0")
    (path,) = n1.xtr.path_table.paths.values()
    config = n2.xtr.config
    assert config.xtr is not None
    moved = dataclasses.replace(config, xtr=dataclasses.replace(config.xtr, instance_id=5))
    n2.xtr.reconfigure(moved, n2.xtr.kx)
    received = len(n2.inside)
    assert n1.xtr.datapath.send(path, ipv4_packet("10.1.1.1", "10.1.2.1", b"still iid 0"))
    wire.pump()
    assert len(n2.inside) == received
    assert n2.status()["drops"].get("wrong-instance") == 1


@pytest.mark.parametrize("kinds", KINDS, ids="-".join)
def test_lispers_profile_peers_run_in_python_beside_either_engine(
    lab: tuple[SocketWire, Any], kinds: tuple[str, str]
) -> None:
    """security.lispers_peers (mesh.lispers_peer): the C engine never holds these keys (it does
    not speak the framing); their packets are sealed and opened in Python, both ways."""
    wire, make = lab
    n1 = make(1, kinds[0], lispers_peers=[f"{wire.rloc(2)}/32"])
    n2 = make(2, kinds[1], lispers_peers=[f"{wire.rloc(1)}/32"])
    wire.tick()
    _exchange(wire, n1, n2, b"first")
    _exchange(wire, n1, n2, b"second")
    for node in (n1, n2):
        assert node.xtr.ctx.stats["lispers-key-exchanges"] >= 1
        if node.xtr.datapath.name == "c":
            engine = node.xtr.datapath
            assert isinstance(engine, fastpath.FastPath)
            assert engine.stats().get("opened", 0) == 0 and engine.stats().get("sealed", 0) == 0
