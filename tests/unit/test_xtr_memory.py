"""xTRs and a map-server in memory: no root, no sockets, the clock in the test's hands.

As aioquic's tests pair a client and a server, these wire real `Xtr` objects and a real
`lisp.map_server.MapServer` through `Wire`, an in-memory underlay that queues every datagram and
delivers it in order when the test pumps it. Nodes have real identities (a lab CA per module),
so every key exchange is the authenticated one the product runs.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest

from certs.files import read_certificate
from certs.format import IdentityError
from certs.verify import CaVerifier, VerifiedCertificate
from lisp import EncapsulatedControl, decode_control
from lisp.map_server import MapServer, Site
from lisp.map_server.site import SendTo
from mesh.config import NodeConfig, parse_config
from mesh.kx import Clock, KxAuthority
from mesh.xtr import CONTROL_PORT, DATA_PORT, LocalRloc, Xtr
from tests.lab_identities import provision_lab_identities

MS = "10.77.0.1"
SITE_KEY = "memory-site-key-0123"
START = 1000.0
Datagram = tuple[tuple[str, int], tuple[str, int], bytes]  # source, destination, payload


def rloc(index: int, uplink: int = 0) -> str:
    return f"10.77.0.{10 * (uplink + 1) + index}"


def ipv4_packet(src: str, dst: str, payload: bytes = b"hello") -> bytes:
    """A UDP/IPv4 packet as a TUN hands it over (checksums are not looked at)."""
    total = 20 + 8 + len(payload)
    header = bytes([0x45, 0, total >> 8, total & 0xFF, 0, 0, 0x40, 0, 64, 17, 0, 0])
    udp = struct.pack("!HHH", 40000, 7, 8 + len(payload))
    return header + _ip(src) + _ip(dst) + udp + b"\0\0" + payload


def _ip(text: str) -> bytes:
    return bytes(int(part) for part in text.split("."))


@dataclass
class Node:
    """One xTR and what it wrote to its TUN."""

    name: str
    wire: Wire
    xtr: Xtr = field(init=False)
    inside: list[bytes] = field(default_factory=list)

    def send_data(self, local: LocalRloc, packet: bytes, dest: tuple[str, int]) -> None:
        self.wire.queue.append(((local.key, DATA_PORT), dest, packet))

    def send_control(self, local: LocalRloc, packet: bytes, dest: tuple[str, int]) -> None:
        self.wire.queue.append(((local.key, CONTROL_PORT), dest, packet))

    def write_inside(self, packet: bytes) -> None:
        self.inside.append(packet)

    def status(self) -> dict[str, Any]:
        return self.xtr.status()


class Wire:
    """The underlay: datagrams queue up and are delivered in order by `pump`."""

    def __init__(self) -> None:
        self.now = START
        self.queue: deque[Datagram] = deque()
        self.nodes: dict[str, Node] = {}  # by RLOC address
        self.ms = MapServer(
            [Site("lab", {0: SITE_KEY.encode()}, ((0, ip_network("10.1.0.0/16")),))]
        )
        self.cut: set[str] = set()  # addresses whose datagrams are lost, both ways
        self.seen: list[Datagram] = []

    def add(self, node: Node) -> None:
        for local in node.xtr.locals:
            self.nodes[local.key] = node

    def pump(self, limit: int = 1000) -> int:
        delivered = 0
        while self.queue:
            assert delivered < limit, "the datagrams never stop: a loop between the nodes?"
            source, dest, payload = self.queue.popleft()
            delivered += 1
            self.seen.append((source, dest, payload))
            if source[0] in self.cut or dest[0] in self.cut:
                continue
            if dest == (MS, CONTROL_PORT):
                for action in self.ms.handle(payload, source, self.now):
                    if isinstance(action, SendTo):
                        self.queue.append(((MS, CONTROL_PORT), action.address, action.data))
                continue
            node = self.nodes.get(dest[0])
            if node is None:
                continue
            node.xtr.now = self.now
            if dest[1] == DATA_PORT:
                node.xtr.outside_data(payload, source)
            else:
                self._control(node, payload, source, dest)
        return delivered

    def _control(
        self, node: Node, payload: bytes, source: tuple[str, int], dest: tuple[str, int]
    ) -> None:
        """What mesh.node does with a datagram on an xTR's control port."""
        local = next(r for r in node.xtr.locals if r.key == dest[0])
        message = decode_control(payload)
        ecm = None
        raw = payload
        if isinstance(message, EncapsulatedControl):
            ecm = message
            raw = ecm.message
            message = decode_control(raw)
        node.xtr.control(message, raw, source, local, ecm)

    def tick(self, seconds: float = 0.0) -> None:
        """Advance the clock, tick every xTR, deliver what that sent."""
        self.now += seconds
        for node in {id(n): n for n in self.nodes.values()}.values():
            node.xtr.tick(self.now)
        self.pump()

    def run(self, seconds: float, step: float = 0.1) -> None:
        for _ in range(round(seconds / step)):
            self.tick(step)

    def to(self, address: str, kind: int) -> list[bytes]:
        """Datagrams seen towards `address` on port `kind`."""
        return [p for _, d, p in self.seen if d == (address, kind)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    nodes = {f"n{i}": [(0, f"10.1.{i}.0/24")] for i in (1, 2, 3)}
    return provision_lab_identities(tmp_path_factory.mktemp("pki"), "memory-ca", nodes)


def node_config(
    pki: dict[str, Path],
    index: int,
    uplinks: int = 1,
    rloc_of: Callable[[int, int], str] = rloc,
    **security: Any,
) -> NodeConfig:
    name = f"n{index}"
    data = {
        "name": name,
        "identity": {
            "key": str(pki[name] / "node.key"),
            "cert": str(pki[name] / "node.crt"),
            "ca": str(pki[name] / "ca.crt"),
        },
        "security": security,
        "dataplane": "python",
        "xtr": {
            "eid_prefixes": [f"10.1.{index}.0/24"],
            "eid_addresses": [f"10.1.{index}.1"],
            "rlocs": [
                {"address": rloc_of(index, u), "priority": u + 1, "weight": 100}
                for u in range(uplinks)
            ],
            "map_servers": [{"address": MS, "key": SITE_KEY}],
            "map_resolvers": [MS],
            "timers": {
                "register_interval": 5,
                "probe_interval": 0.3,
                "probe_dead_after": 1.5,
                "map_request_retry": 0.5,
            },
        },
    }
    if not security:
        del data["security"]
    return parse_config(data, pki[name] / f"{name}.yml")


def authority(pki: dict[str, Path], name: str, clock: Clock = time.time) -> KxAuthority:
    d = pki[name]
    files = (str(d / "node.key"), str(d / "node.crt"), str(d / "ca.crt"))
    return KxAuthority.from_files(name, *files, clock=clock)


MakeNode = Callable[..., Node]


@pytest.fixture
def mesh(pki: dict[str, Path]) -> Iterator[tuple[Wire, MakeNode]]:
    wire = Wire()

    def make(
        index: int,
        uplinks: int = 1,
        kx: KxAuthority | None = None,
        clock: Clock = time.time,
        **security: Any,
    ) -> Node:
        """`clock` is the node's wall clock (proof times, certificate validity); the xTR's
        own clock is the wire's."""
        config = node_config(pki, index, uplinks, **security)
        node = Node(config.name, wire)
        node.xtr = Xtr(config, node, kx or authority(pki, config.name, clock), wire.now)
        wire.add(node)
        return node

    yield wire, make


def joined(mesh: tuple[Wire, MakeNode], *specs: int | tuple[int, int]) -> list[Node]:
    """xTRs that registered with the map-server (index, or (index, uplinks))."""
    wire, make = mesh
    nodes = [make(*s) if isinstance(s, tuple) else make(s) for s in specs]
    wire.tick()
    return nodes


def test_registration_is_confirmed_by_a_map_notify(mesh: tuple[Wire, MakeNode]) -> None:
    wire, make = mesh
    n1 = make(1)
    registrations = n1.status()["map_servers"]
    assert registrations == [
        {"address": MS, "registered": False, "registers_sent": 0, "notifies": 0}
    ]
    wire.tick()
    assert n1.status()["map_servers"][0]["registered"] is True
    assert n1.xtr.ctx.stats["map-notifies"] == 1
    assert wire.ms.registration_count() == 1


def test_a_map_notify_with_a_wrong_key_is_refused(mesh: tuple[Wire, MakeNode]) -> None:
    wire, make = mesh
    n1 = make(1)
    wire.tick()
    notify = next(p for s, d, p in wire.seen if s == (MS, CONTROL_PORT))
    forged = bytearray(notify)
    forged[-1] ^= 1  # the authentication data
    wire.queue.append(((MS, CONTROL_PORT), (rloc(1), CONTROL_PORT), bytes(forged)))
    wire.pump()
    assert n1.xtr.ctx.drops["bad-auth"] == 1
    assert n1.xtr.ctx.errors[-1] == f"Map-Notify from {MS} failed authentication"


def test_a_miss_resolves_through_the_map_server_and_the_packet_follows(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, _ = mesh
    n1, n2 = joined(mesh, 1, 2)
    packet = ipv4_packet("10.1.1.1", "10.1.2.1")
    n1.xtr.now = wire.now
    n1.xtr.inside_packet(packet)
    wire.pump()
    assert n2.inside == [packet]  # queued on the miss, sent once the key exchange finished
    assert n1.xtr.ctx.stats["map-requests"] == 1
    assert n2.xtr.ctx.stats["map-replies-sent"] == 1
    (entry,) = n1.status()["map_cache"]
    assert (entry["prefix"], entry["peer"], entry["in_use"]) == ("10.1.2.0/24", "n2", rloc(2))
    # On the wire the packet is sealed: the inner bytes never appear.
    (sealed,) = wire.to(rloc(2), DATA_PORT)
    assert packet[20:] not in sealed and sealed[0] & 0x03 == 1  # KK: key-id 1
    # And back, over the key n2 agreed as ETR (n2 resolves n1 in turn).
    reply = ipv4_packet("10.1.2.1", "10.1.1.1", b"back")
    n2.xtr.inside_packet(reply)
    wire.pump()
    assert n1.inside == [reply]
    peers = {p["name"]: p for p in n2.status()["peers"]}
    assert peers["n1"]["packets_received"] == 1 and peers["n1"]["packets_sent"] == 1


def test_an_unregistered_eid_gets_a_negative_reply(mesh: tuple[Wire, MakeNode]) -> None:
    wire, _ = mesh
    (n1,) = joined(mesh, 1)
    n1.xtr.now = wire.now
    n1.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.9.1"))
    wire.pump()
    assert n1.xtr.ctx.stats["negative-replies"] == 1
    (entry,) = n1.status()["map_cache"]
    assert entry["rlocs"] == [] and entry["action"] is not None
    # The queued packet was dropped, not sent anywhere.
    assert not any(d[1] == DATA_PORT for _, d, _ in wire.seen)


def test_a_map_request_for_someone_elses_eid_is_not_answered(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, _ = mesh
    n1, n2 = joined(mesh, 1, 2)
    n1.xtr.now = wire.now
    nonce = n1.xtr.prober.send_probe(
        _fake_entry("10.1.3.0/24"), rloc(2), with_key=False
    )  # asks n2 about n3's prefix
    assert nonce is not None
    wire.pump()
    assert n2.xtr.ctx.drops["map-request-not-ours"] == 1
    assert n2.xtr.ctx.stats["map-replies-sent"] == 0


def _fake_entry(prefix: str) -> Any:
    from lisp.map_cache import MapCacheEntry

    return MapCacheEntry(0, ip_network(prefix), (), expires_at=START + 60, installed_at=START)


def test_rloc_probes_fail_over_to_the_second_uplink(mesh: tuple[Wire, MakeNode]) -> None:
    wire, _ = mesh
    n1, n2 = joined(mesh, 1, (2, 2))
    n1.xtr.now = wire.now
    n1.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.2.1"))
    wire.pump()
    assert n1.status()["map_cache"][0]["in_use"] == rloc(2, 0)
    wire.run(1.0)
    assert n1.xtr.ctx.stats["probe-replies"] > 0
    wire.cut.add(rloc(2, 0))
    # Traffic keeps going: an RLOC we send to and never hear from again is down after
    # probe_dead_after (an idle one is not probed, see test_idle_probing).
    for _ in range(30):
        n1.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.2.1", b"during the cut"))
        wire.tick(0.1)
    (entry,) = n1.status()["map_cache"]
    assert entry["in_use"] == rloc(2, 1)
    assert {r["address"]: r["up"] for r in entry["rlocs"]} == {rloc(2, 0): False, rloc(2, 1): True}
    packet = ipv4_packet("10.1.1.1", "10.1.2.1", b"after the cut")
    n1.xtr.inside_packet(packet)
    wire.pump()
    assert n2.inside[-1] == packet


def test_rekeying_walks_the_key_ids_and_traffic_keeps_flowing(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, _ = mesh
    n1, n2 = joined(mesh, 1, 2)
    seen_key_ids = []
    for round_ in range(4):
        packet = ipv4_packet("10.1.1.1", "10.1.2.1", f"round {round_}".encode())
        n1.xtr.now = wire.now
        n1.xtr.inside_packet(packet)
        wire.pump()
        assert n2.inside[-1] == packet
        seen_key_ids.append(n1.status()["keys"]["itr_key_id"])
        n1.xtr.prober.rekey()
        wire.pump()
    assert seen_key_ids == [1, 2, 3, 1]
    assert n1.status()["keys"]["rekeys"] == 4


def test_revocation_drops_the_keys_and_refuses_the_next_exchange(
    mesh: tuple[Wire, MakeNode], pki: dict[str, Path]
) -> None:
    wire, _ = mesh
    n1, n2 = joined(mesh, 1, 2)
    n1.xtr.now = wire.now
    n1.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.2.1"))
    wire.pump()
    assert len(n2.inside) == 1
    revoked = node_config(pki, 2, revoked_peers=["n1"])
    n2.xtr.reconfigure(revoked, n2.xtr.kx)
    assert n2.status()["revoked_peers"] == ["n1"]
    assert all(d["peer"] != "n1" for d in n2.status()["keys"]["decap"])
    # n1 still has its key: its packets now meet no key at n2, which solicits a new exchange,
    # and the exchange n1 then runs is refused.
    n1.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.2.1", b"after"))
    wire.pump()
    assert len(n2.inside) == 1
    assert n2.xtr.ctx.drops["no-key"] == 1
    assert n2.xtr.ctx.stats["smr-sent"] == 1
    assert n2.xtr.ctx.drops["kx-revoked-peer"] >= 1


def test_a_replayed_or_tampered_datagram_is_dropped(mesh: tuple[Wire, MakeNode]) -> None:
    wire, _ = mesh
    n1, n2 = joined(mesh, 1, 2)
    n1.xtr.now = wire.now
    n1.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.2.1"))
    wire.pump()
    (sealed,) = wire.to(rloc(2), DATA_PORT)
    wire.queue.append(((rloc(1), DATA_PORT), (rloc(2), DATA_PORT), sealed))
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    wire.queue.append(((rloc(1), DATA_PORT), (rloc(2), DATA_PORT), tampered))
    wire.pump()
    assert len(n2.inside) == 1
    assert n2.xtr.ctx.drops["replay"] == 1
    assert n2.xtr.ctx.drops["decrypt-failure"] == 1


def test_an_etr_that_lost_its_keys_solicits_a_new_exchange(mesh: tuple[Wire, MakeNode]) -> None:
    """SMR: n2 forgets the key n1 seals with (a restart); n1's next packet meets no key, n2
    sends a Solicit-Map-Request, n1 probes n2 with its key and traffic flows again."""
    wire, _ = mesh
    n1, n2 = joined(mesh, 1, 2)
    n1.xtr.now = wire.now
    n1.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.2.1", b"first"))
    wire.pump()
    n2.xtr.ctx.keys.decap.clear()
    wire.tick(SMR_GAP)
    n1.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.2.1", b"lost"))
    wire.pump()
    assert n2.xtr.ctx.drops["no-key"] == 1
    assert (n2.xtr.ctx.stats["smr-sent"], n1.xtr.ctx.stats["smr-received"]) == (1, 1)
    again = ipv4_packet("10.1.1.1", "10.1.2.1", b"again")
    n1.xtr.inside_packet(again)
    wire.pump()
    assert n2.inside[-1] == again


SMR_GAP = 1.1  # past the SMR rate limit (mesh.xtr_types.SMR_INTERVAL)


class RefuseNode:
    """A certificate verifier that trusts the mesh CA except for one node."""

    def __init__(self, ca: CaVerifier, refused: str) -> None:
        self.ca = ca
        self.refused = refused

    def verify(self, der: bytes, now: Any) -> VerifiedCertificate:
        cert = self.ca.verify(der, now)
        if cert.claims.name == self.refused:
            raise IdentityError(f"node {self.refused} is not trusted here")
        return cert


def test_the_key_exchange_asks_the_injected_certificate_verifier(
    mesh: tuple[Wire, MakeNode], pki: dict[str, Path]
) -> None:
    wire, make = mesh
    n1 = make(1)
    plain = authority(pki, "n2")
    verifier = RefuseNode(CaVerifier(read_certificate(pki["n2"] / "ca.crt")), "n1")
    n2 = make(2, kx=KxAuthority(plain.identity, verifier))
    wire.tick()
    n1.xtr.now = wire.now
    n1.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.2.1"))
    wire.pump()
    assert n2.inside == []
    assert n2.xtr.ctx.drops["kx-auth-failed"] == 1
    assert "node n1 is not trusted here" in n2.xtr.ctx.errors[-1]


def test_certificates_are_judged_by_the_injected_clock(
    mesh: tuple[Wire, MakeNode], pki: dict[str, Path]
) -> None:
    """Both nodes' clocks say it is a year and a half later (so the request is fresh): n1's
    one-year certificate has expired by then, whatever the machine's clock says."""
    wire, make = mesh
    later = 550 * 86400.0
    n1 = make(1, clock=lambda: time.time() + later)
    n2 = make(2, clock=lambda: time.time() + later)
    wire.tick()
    n1.xtr.now = wire.now
    n1.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.2.1"))
    wire.pump()
    assert n2.inside == []
    assert n2.xtr.ctx.drops["kx-auth-failed"] == 1
    assert "certificate of node n1 expired" in n2.xtr.ctx.errors[-1]
