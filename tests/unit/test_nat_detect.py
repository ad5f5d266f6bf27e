"""NAT detection (lisp.nat_detect) in memory: the detector talks to the real map-server core
through a simulated NAT of each RFC 4787 mapping class, and attackers try to feed it lies."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from ipaddress import IPv4Address, ip_network

import pytest

from lisp import auth
from lisp.address import NoAddress
from lisp.auth import AuthAlg
from lisp.info import InfoMessage
from lisp.lcaf import NatTraversal
from lisp.map_server import MapServer, SendTo, Site
from lisp.nat_detect import (
    CHECKING,
    ENDPOINT_DEPENDENT,
    ENDPOINT_INDEPENDENT,
    NAT,
    NO_ANSWER,
    NO_NAT,
    InfoServer,
    NatDetector,
    SendInfo,
    Uplink,
)

KEY = b"site-key-0123"
MS1, MS2 = InfoServer("198.51.100.1", 4342, 0, KEY), InfoServer("198.51.100.2", 4342, 0, KEY)
LOCAL = Uplink("192.168.1.2", "192.168.1.2", 4342)
WAN = "203.0.113.7"
Nat = Callable[[tuple[str, int], tuple[str, int]], tuple[str, int]]  # (local, dest) -> outside


def no_nat(local: tuple[str, int], dest: tuple[str, int]) -> tuple[str, int]:
    return local


def cone(local: tuple[str, int], dest: tuple[str, int]) -> tuple[str, int]:
    return (WAN, 40000 + local[1] % 1000)  # the same outside port whatever the destination


def symmetric() -> Nat:
    ports: dict[tuple[tuple[str, int], tuple[str, int]], int] = {}
    fresh = itertools.count(50000)

    def translate(local: tuple[str, int], dest: tuple[str, int]) -> tuple[str, int]:
        return (WAN, ports.setdefault((local, dest), next(fresh)))

    return translate


class World:
    """The detector, a map-server core answering on MS1 and MS2, and a NAT between them."""

    def __init__(self, nat: Nat, servers: tuple[InfoServer, ...] = (MS1, MS2)) -> None:
        site = Site("s", {0: KEY}, ((0, ip_network("10.1.0.0/16")),))
        self.ms = MapServer([site])
        self.nat = nat
        self.det = NatDetector(IPv4Address("10.1.5.0"), 24, interval=15.0, retry=1.0, attempts=3)
        self.det.set_servers(servers, 0.0)
        self.det.set_uplinks([LOCAL], 0.0)
        self.lost: set[tuple[str, int]] = set()  # map-servers whose packets are dropped
        self.drops: list[str | None] = []

    def deliver(self, sends: list[SendInfo], now: float) -> None:
        for send in sends:
            if send.dest in self.lost:
                continue
            outside = self.nat((LOCAL.address, LOCAL.port), send.dest)
            for action in self.ms.handle(send.packet, outside, now):
                if isinstance(action, SendTo):
                    assert action.address == outside  # back through the NAT
                    self.drops.append(self.det.on_reply(action.data, send.dest, now))

    def run(self, until: float, start: float = 0.0) -> None:
        now = start
        while now <= until:
            self.deliver(self.det.poll(now), now)
            now += 0.25


def test_no_nat_is_told_apart_from_a_cone_and_a_symmetric_nat() -> None:
    for nat, state, mapping, translated in (
        (no_nat, NO_NAT, None, (LOCAL.address, 4342)),
        (cone, NAT, ENDPOINT_INDEPENDENT, (WAN, 40342)),
        (symmetric(), NAT, ENDPOINT_DEPENDENT, (WAN, 50000)),
    ):
        world = World(nat)
        assert world.det.result(LOCAL.name).state == CHECKING
        world.run(0.0)  # both answers arrive at once: the round is finished
        result = world.det.result(LOCAL.name)
        assert (result.state, result.mapping, result.translated) == (state, mapping, translated)
        assert set(result.seen_by) == {"198.51.100.1:4342", "198.51.100.2:4342"}
        assert world.drops == [None, None]
        assert not world.det.checking(LOCAL.name)


def test_one_map_server_tells_a_nat_but_not_its_mapping() -> None:
    world = World(cone, servers=(MS1,))
    world.run(0.0)
    result = world.det.result(LOCAL.name)
    assert (result.state, result.mapping, result.translated) == (NAT, None, (WAN, 40342))


def test_requests_are_retransmitted_and_an_unanswered_round_says_so() -> None:
    world = World(cone)
    world.lost = {MS1.endpoint, MS2.endpoint}
    sends = []
    now = 0.0
    while now < 5.0:
        sends += world.det.poll(now)
        now += 0.25
    assert len(sends) == 6  # 3 attempts x 2 map-servers, `retry` apart
    assert world.det.result(LOCAL.name).state == NO_ANSWER
    # One map-server lost: the other's answer still finishes the round (mapping unknown).
    world = World(cone)
    world.lost = {MS2.endpoint}
    world.run(4.0)
    result = world.det.result(LOCAL.name)
    assert (result.state, result.mapping, list(result.seen_by)) == (
        NAT,
        None,
        ["198.51.100.1:4342"],
    )


def test_rechecked_periodically_and_at_once_when_the_uplink_changes() -> None:
    world = World(cone)
    world.run(0.0)
    first = world.det.result(LOCAL.name)
    assert world.det.poll(14.0) == []  # not due yet
    assert len(world.det.poll(15.0)) == 2  # every interval: also keeps the NAT mapping alive
    assert world.det.result(LOCAL.name) == first  # kept while the next round is out
    # The node moves behind another NAT with a new address: the old verdict is dropped at once.
    world = World(cone)
    world.run(0.0)
    moved = Uplink(LOCAL.name, "192.168.9.9", 4342)
    world.det.set_uplinks([moved], 3.0)
    assert world.det.result(LOCAL.name).state == CHECKING
    sends = world.det.poll(3.0)
    assert len(sends) == 2
    # down -> up re-checks too; while down nothing is sent
    world.det.set_uplinks([Uplink(LOCAL.name, "192.168.9.9", 4342, up=False)], 4.0)
    world.det.set_uplinks([moved], 4.5)
    assert len(world.det.poll(4.5)) == 2


def test_replies_from_anyone_but_the_asked_map_server_are_refused() -> None:
    world = World(cone)
    sends = world.det.poll(0.0)
    nonce = InfoMessage.decode(sends[0].packet).nonce
    lie = NatTraversal(4342, 1, IPv4Address("6.6.6.6"), NoAddress(), NoAddress())

    def reply(key: bytes, nonce: int = nonce, payload: object = lie) -> bytes:
        raw = InfoMessage(
            nonce,
            True,
            0,
            AuthAlg.HMAC_SHA_256_128,
            b"",
            0,
            IPv4Address("10.1.5.0"),
            24,
            payload,  # type: ignore[arg-type]
        ).encode()
        return auth.sign(raw, key)

    det = world.det
    assert det.on_reply(reply(b"attacker-key"), MS1.endpoint, 0.1) == "bad-auth"
    assert det.on_reply(reply(KEY), ("6.6.6.6", 4342), 0.1) == "wrong-source"  # spoofed path
    assert det.on_reply(reply(KEY, nonce ^ 1), MS1.endpoint, 0.1) == "unknown-nonce"
    unsigned = InfoMessage(nonce, True, 0, 0, b"", 0, NoAddress(), 0, lie).encode()
    assert det.on_reply(unsigned, MS1.endpoint, 0.1) == "bad-auth"
    assert det.on_reply(sends[0].packet, MS1.endpoint, 0.1) == "not-a-reply"  # reflected
    assert det.on_reply(b"\x78\x00", MS1.endpoint, 0.1) == "malformed"
    # The real answers still get through and nothing of the lie stuck.
    world.deliver(sends, 0.2)
    assert world.det.result(LOCAL.name).translated == (WAN, 40342)
    # A replayed genuine answer after the round: its nonce is spent.
    assert det.on_reply(reply(KEY), MS1.endpoint, 0.3) == "unknown-nonce"


def test_requests_are_signed_with_the_site_key_and_name_our_eid() -> None:
    world = World(cone)
    sends = world.det.poll(0.0)
    assert {s.dest for s in sends} == {MS1.endpoint, MS2.endpoint}
    for send in sends:
        assert auth.verify(send.packet, KEY)
        request = InfoMessage.decode(send.packet)
        assert not request.is_reply and request.alg_id == AuthAlg.HMAC_SHA_256_128
        assert (request.eid, request.mask_len) == (IPv4Address("10.1.5.0"), 24)
    assert len({InfoMessage.decode(s.packet).nonce for s in sends}) == 2


def test_a_changed_map_server_set_rechecks_keeping_the_old_result() -> None:
    world = World(cone)
    world.run(0.0)
    before = world.det.result(LOCAL.name)
    world.det.set_servers((MS1,), 2.0)
    assert world.det.result(LOCAL.name) == before
    assert [s.dest for s in world.det.poll(2.0)] == [MS1.endpoint]


@pytest.mark.parametrize("removed", [True, False])
def test_a_removed_uplink_is_forgotten(removed: bool) -> None:
    world = World(cone)
    world.run(0.0)
    world.det.set_uplinks([] if removed else [LOCAL], 1.0)
    assert (world.det.result(LOCAL.name).state == CHECKING) is removed


def test_an_uplink_asks_only_the_map_servers_of_its_address_family() -> None:
    v6 = InfoServer("2001:db8::1", 4342, 0, KEY)
    det = NatDetector(IPv4Address("10.1.5.0"), 24)
    det.set_servers((MS1, v6), 0.0)
    det.set_uplinks([LOCAL, Uplink("2001:db8:1::2", "2001:db8:1::2", 4342)], 0.0)
    sends = det.poll(0.0)
    assert sorted((s.uplink, s.dest[0]) for s in sends) == [
        ("192.168.1.2", MS1.address),
        ("2001:db8:1::2", "2001:db8::1"),
    ]
