"""The RTR role in memory (mesh.rtr): a public node, an RTR and a node behind a port-restricted
NAT, with real identities, a real map-server and a NAT simulated on the in-memory wire."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

import tests.unit.test_xtr_memory as memory
from lisp.relay import is_relay, relay_prefix
from mesh.config import RtrRef, RtrRole
from mesh.xtr import DATA_PORT, Xtr
from tests.unit.test_xtr_memory import (
    Datagram,
    Node,
    Wire,
    authority,
    ipv4_packet,
    node_config,
    rloc,
)

pki = memory.pki  # the module's identities (a fixture)
PUBLIC, NATTED, RTR = 1, 2, 3
NAT_OUTSIDE = "10.77.0.99"
NOWHERE = ("0.0.0.0", 0)
NAT_TIMEOUT = 5.0  # seconds a mapping lives without a packet (lowered, as in the lab)


@dataclass
class Mapping:
    inside: tuple[str, int]
    outside: str
    port: int
    allowed: set[tuple[str, int]] = field(default_factory=set)  # port-restricted filtering
    last_used: float = 0.0


class NatWire(Wire):
    """The wire with `private` behind a port-restricted NAT (Linux masquerade): one outside port
    per inside address:port (endpoint-independent mapping); in only from an address:port the
    mapping sent to (port-restricted filtering); a mapping dies NAT_TIMEOUT s after its last packet.
    """

    def __init__(self, *private: str) -> None:
        super().__init__()
        # Each private address behind its own NAT: the first at NAT_OUTSIDE, then .98, .97...
        self.nats = {p: f"10.77.0.{99 - i}" for i, p in enumerate(private)}
        self.mappings: dict[tuple[str, int], Mapping] = {}
        self.filtered = 0
        self.queue = _TranslatingQueue(self)

    def _mapping(self, inside: tuple[str, int]) -> Mapping:
        found = self.mappings.get(inside)
        if found is None or self.now - found.last_used > NAT_TIMEOUT:
            found = Mapping(inside, self.nats[inside[0]], 40000 + len(self.mappings))
            self.mappings[inside] = found
        return found

    def _translate(self, datagram: Datagram) -> Datagram | None:
        source, dest, payload = datagram
        if source[0] in self.nats:
            mapping = self._mapping(source)
            mapping.allowed.add(dest)
            mapping.last_used = self.now
            return (mapping.outside, mapping.port), dest, payload
        if dest[0] in self.nats:
            return None  # a private address: not routed outside
        if dest[0] in self.nats.values():
            live = [
                m for m in self.mappings.values()
                if (m.outside, m.port) == dest and self.now - m.last_used <= NAT_TIMEOUT
            ]  # fmt: skip
            if not live or source not in live[0].allowed:
                self.filtered += 1
                return None
            live[0].last_used = self.now
            return source, live[0].inside, payload
        return datagram

    def _pop(self) -> Datagram:
        translated = self._translate(deque.popleft(self.queue))
        return translated if translated is not None else (NOWHERE, NOWHERE, b"")


class _TranslatingQueue(deque[Datagram]):
    """The wire's queue: each datagram crosses the NAT as it is taken off."""

    def __init__(self, wire: NatWire) -> None:
        super().__init__()
        self.wire = wire

    def popleft(self) -> Datagram:
        return self.wire._pop()


def _make(wire: NatWire, pki: dict[str, Path], index: int, **xtr: Any) -> Node:
    config = node_config(pki, index)
    assert config.xtr is not None
    config = replace(config, xtr=replace(config.xtr, **xtr))
    node = Node(config.name, wire)
    node.xtr = Xtr(config, node, authority(pki, config.name), wire.now)
    wire.add(node)
    return node


@pytest.fixture
def lab(pki: dict[str, Path]) -> tuple[NatWire, Node, Node, Node]:
    wire = NatWire(rloc(NATTED))
    rtr = RtrRef("n3", ip_address(rloc(RTR)))
    public = _make(wire, pki, PUBLIC, rtrs=(rtr,))
    relay = _make(wire, pki, RTR, rtrs=(rtr,), rtr=RtrRole(stale_after=3 * 2.0))
    natted = _make(wire, pki, NATTED, rtrs=(rtr,), rtr_keepalive=2.0)
    wire.run(3.0)
    return wire, public, relay, natted


def _send(wire: Wire, node: Node, src: str, dst: str, payload: bytes) -> bytes:
    packet = ipv4_packet(src, dst, payload)
    node.xtr.now = wire.now
    node.xtr.inside_packet(packet)
    wire.run(1.0)
    return packet


def test_a_node_behind_a_nat_is_reached_through_the_rtr_both_ways(
    lab: tuple[NatWire, Node, Node, Node],
) -> None:
    wire, public, relay, natted = lab
    assert natted.xtr.ctx.via_rtr is not None and natted.xtr.ctx.via_rtr.name == "n3"
    assert natted.status()["nat_relay"]["rtrs"][0]["seen_as"].startswith(NAT_OUTSIDE + ":")
    (binding,) = relay.status()["rtr"]["bindings"]
    assert binding["node"] == "n2" and binding["endpoint"].startswith(NAT_OUTSIDE)
    to_natted = _send(wire, public, "10.1.1.1", "10.1.2.1", b"in")
    assert to_natted in natted.inside
    to_public = _send(wire, natted, "10.1.2.1", "10.1.1.1", b"out")
    assert to_public in public.inside
    wire.run(5.0)  # several probe dead times: the relayed paths stay up (probes are answered)
    for node in (public, natted):
        (peer,) = [p for p in node.status()["peers"] if p["name"] != "n3"]
        assert peer["path"] == "rtr:n3", peer
    # End to end sealed: the RTR forwarded frames, it never held the keys of n1 and n2.
    assert relay.xtr.ctx.stats["rtr-control-relayed"] >= 1  # the Map-Request for n2
    assert relay.xtr.ctx.stats["rtr-relayed-to-nat"] >= 1
    assert relay.xtr.ctx.stats["rtr-relayed-from-nat"] >= 1
    assert not any(k["peer"] in ("n1", "n2") for k in relay.status()["keys"]["decap"])
    relayed = [p for _, d, p in wire.seen if d[0] == rloc(RTR) and is_relay(p)]
    assert relayed and not any(b"in" in p[-40:-16] for p in relayed)


def test_traffic_flows_after_idling_past_the_nat_timeout(
    lab: tuple[NatWire, Node, Node, Node],
) -> None:
    wire, public, _, natted = lab
    assert _send(wire, public, "10.1.1.1", "10.1.2.1", b"first") in natted.inside
    wire.run(3 * NAT_TIMEOUT)
    assert _send(wire, public, "10.1.1.1", "10.1.2.1", b"later") in natted.inside
    assert _send(wire, natted, "10.1.2.1", "10.1.1.1", b"back") in public.inside


def test_without_keepalives_the_binding_goes_stale(
    lab: tuple[NatWire, Node, Node, Node],
) -> None:
    wire, _, relay, natted = lab
    wire.cut.add(NAT_OUTSIDE)
    wire.run(3 * 2.0 + 1)
    assert relay.status()["rtr"]["bindings"] == []
    assert natted.xtr.ctx.via_rtr is None


def test_a_replayed_or_foreign_keepalive_cannot_move_the_binding(
    lab: tuple[NatWire, Node, Node, Node],
) -> None:
    wire, public, relay, natted = lab
    keepalive = next(
        p for s, d, p in wire.seen if s[0] == NAT_OUTSIDE and d == (rloc(RTR), DATA_PORT)
    )
    attacker = ("10.77.0.66", 4341)
    wire.queue.append((attacker, (rloc(RTR), DATA_PORT), keepalive))
    wire.pump()
    assert relay.xtr.ctx.drops["rtr-binding-replayed"] == 1
    # A node signing for itself moves only its own binding, whatever uplink name it claims.
    public.xtr.rtr_client._send(natted.xtr.ctx.xcfg.rtrs[0], public.xtr.locals[0])
    wire.pump()
    bindings = {b["node"]: b["endpoint"] for b in relay.status()["rtr"]["bindings"]}
    assert bindings["n2"].startswith(NAT_OUTSIDE) and bindings["n1"] == f"{rloc(PUBLIC)}:4341"
    assert _send(wire, public, "10.1.1.1", "10.1.2.1", b"still") in natted.inside
    assert not [p for s, d, p in wire.seen if d[0] == attacker[0] and d[1] == DATA_PORT]


def test_the_rtr_is_no_open_relay(lab: tuple[NatWire, Node, Node, Node]) -> None:
    wire, _, relay, _ = lab
    frame = relay_prefix(ip_address(rloc(PUBLIC)), ip_address("10.77.0.66"), 4341) + bytes(40)
    wire.queue.append((("10.77.0.66", 4341), (rloc(RTR), DATA_PORT), frame))
    wire.pump()
    assert relay.xtr.ctx.drops["rtr-sender-not-bound"] == 1
    assert not [p for s, d, p in wire.seen if s[0] == rloc(RTR) and d == (rloc(PUBLIC), 4341)
                and p == frame]  # fmt: skip


def test_the_rtr_node_itself_is_reached_directly_both_ways(
    lab: tuple[NatWire, Node, Node, Node],
) -> None:
    wire, public, relay, natted = lab
    assert _send(wire, public, "10.1.1.1", "10.1.3.1", b"to-rtr") in relay.inside
    assert _send(wire, relay, "10.1.3.1", "10.1.1.1", b"from-rtr") in public.inside
    peers = {p["name"]: p["path"] for p in public.status()["peers"]}
    assert peers["n3"] == "direct"
    # The node behind it reaches it (and back) through its binding.
    assert _send(wire, natted, "10.1.2.1", "10.1.3.1", b"up") in relay.inside
    assert _send(wire, relay, "10.1.3.1", "10.1.2.1", b"down") in natted.inside


def test_two_nodes_behind_two_nats_reach_each_other_through_the_rtr(
    pki: dict[str, Path],
) -> None:
    wire = NatWire(rloc(NATTED), rloc(PUBLIC))
    rtr = RtrRef("n3", ip_address(rloc(RTR)))
    first = _make(wire, pki, PUBLIC, rtrs=(rtr,), rtr_keepalive=2.0)
    relay = _make(wire, pki, RTR, rtrs=(rtr,), rtr=RtrRole(stale_after=3 * 2.0))
    second = _make(wire, pki, NATTED, rtrs=(rtr,), rtr_keepalive=2.0)
    wire.run(3.0)
    assert {b["node"] for b in relay.status()["rtr"]["bindings"]} == {"n1", "n2"}
    assert _send(wire, first, "10.1.1.1", "10.1.2.1", b"one") in second.inside
    assert _send(wire, second, "10.1.2.1", "10.1.1.1", b"two") in first.inside
    for node, other in ((first, "n2"), (second, "n1")):
        peers = {p["name"]: p["path"] for p in node.status()["peers"]}
        assert peers[other] == "rtr:n3", peers
