"""The map-server service over real UDP sockets on 127.0.0.1 (ephemeral ports, no root).

An xTR registers and gets its Map-Notify; an ITR's ECM'd Map-Request is forwarded to the 'ETR'
socket with the ITR's inner source and port intact; a miss gets a negative Map-Reply at the ITR.
"""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, ip_network
from typing import Any, cast

from lisp import (
    EidRecord,
    EncapsulatedControl,
    MapNotify,
    MapRegister,
    MapReply,
    MapRequest,
    RequestRecord,
    RlocRecord,
    auth,
)
from lisp.map_server import MapServer, Site
from lisp.map_server.service import MapServerService
from lisp.records import Action

KEY = b"udp-test-key"
LOOPBACK = IPv4Address("127.0.0.1")
WAIT = 3.0


class Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))

    async def receive(self) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.queue.get(), WAIT)

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])


class ServiceEndpoint(asyncio.DatagramProtocol):
    """What the node process does with its control socket: hand datagrams to the service."""

    def __init__(self) -> None:
        self.service: MapServerService | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.service is not None
        self.service.handle(data, addr)


async def endpoint(
    factory: type[asyncio.DatagramProtocol],
) -> tuple[asyncio.DatagramTransport, Any]:
    loop = asyncio.get_running_loop()
    return await loop.create_datagram_endpoint(factory, local_addr=("127.0.0.1", 0))


async def scenario() -> dict[str, int]:
    xtr_t, xtr = await endpoint(Inbox)
    etr_t, etr = await endpoint(Inbox)
    itr_t, itr = await endpoint(Inbox)
    ms_t, ms_proto = await endpoint(ServiceEndpoint)
    site = Site("edge", {0: KEY}, ((0, ip_network("10.50.0.0/16")),))
    core = MapServer([site], etr_port=etr.port)
    service = MapServerService(core, ms_t.sendto)
    ms_proto.service = service
    ms_addr = ("127.0.0.1", int(ms_t.get_extra_info("sockname")[1]))
    await service.start()
    try:
        # 1. Register; the Map-Notify comes back to the xTR's port and verifies.
        record = EidRecord(IPv4Address("10.50.1.0"), 24, (RlocRecord(LOOPBACK, local=True),), 3)
        register = MapRegister(0x5EED, (record,), want_map_notify=True, ttl_timeout=True)
        xtr.send(auth.sign(register.encode(), KEY), ms_addr)
        data, addr = await xtr.receive()
        assert addr == ms_addr
        assert auth.verify(data, KEY)
        notify = MapNotify.decode(data)
        assert notify.nonce == 0x5EED and notify.records == (record,)

        # 2. An ITR's Map-Request in an ECM: forwarded to the ETR, inner source/port intact.
        eid = IPv4Address("10.50.1.7")
        inner = MapRequest(0xC0FFEE, (LOOPBACK,), (RequestRecord(eid, 32),)).encode()
        ecm = EncapsulatedControl(LOOPBACK, eid, inner, source_port=itr.port)
        itr.send(ecm.encode(), ms_addr)
        data, addr = await etr.receive()
        assert addr == ms_addr
        forwarded = EncapsulatedControl.decode(data)
        assert forwarded.inner_source == LOOPBACK and forwarded.source_port == itr.port
        assert forwarded.message == inner

        # 3. A miss inside the allowed space: a negative Map-Reply straight to the ITR port.
        miss = IPv4Address("10.50.200.1")
        inner = MapRequest(0xBAD, (LOOPBACK,), (RequestRecord(miss, 32),)).encode()
        ecm = EncapsulatedControl(LOOPBACK, miss, inner, source_port=itr.port)
        itr.send(ecm.encode(), ms_addr)
        data, addr = await itr.receive()
        reply = MapReply.decode(data)
        [negative] = reply.records
        assert reply.nonce == 0xBAD and negative.rlocs == ()
        assert negative.prefix == ip_network("10.50.128.0/17")
        assert negative.action == Action.SEND_MAP_REQUEST

        # 4. Garbage does not stop the service; the next registration still works.
        xtr.send(b"\x30garbage", ms_addr)
        xtr.send(b"\x80\x00", ms_addr)  # (asyncio never sends an empty datagram)
        register = MapRegister(0x5EEE, (record,), want_map_notify=True, ttl_timeout=True)
        xtr.send(auth.sign(register.encode(), KEY), ms_addr)
        data, _ = await xtr.receive()
        assert MapNotify.decode(data).nonce == 0x5EEE
        return dict(service.counters)
    finally:
        await service.stop()
        for transport in (xtr_t, etr_t, itr_t, ms_t):
            transport.close()


def test_register_notify_forward_and_negative_over_udp() -> None:
    counters = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert counters["registered"] == 2
    assert counters["forwarded"] == 1
    assert counters["negative-reply"] == 1
    assert counters["malformed"] == 2


class Clock:
    """The service's clock, moved by the test (refresh intervals without waiting for them)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


INTERVALS = 5
REFRESH = 60.0  # seconds between an xTR's Map-Registers (lispers.net: 1 min, TTL 3 min)


async def constant_nonce_scenario() -> dict[str, int]:
    xtr_t, xtr = await endpoint(Inbox)
    itr_t, itr = await endpoint(Inbox)
    ms_t, ms_proto = await endpoint(ServiceEndpoint)
    site = Site("lispers", {0: KEY}, ((0, ip_network("10.60.0.0/16")),), proxy_reply=True)
    clock = Clock()
    service = MapServerService(MapServer([site]), ms_t.sendto, clock)
    ms_proto.service = service
    ms_addr = ("127.0.0.1", int(ms_t.get_extra_info("sockname")[1]))
    home = (RlocRecord(LOOPBACK, local=True),)
    elsewhere = (RlocRecord(IPv4Address("127.0.0.99"), local=True),)

    def signed(rlocs: tuple[RlocRecord, ...], ttl: int = 3) -> bytes:
        record = EidRecord(IPv4Address("10.60.1.0"), 24, rlocs, ttl)
        register = MapRegister(0x11223344, (record,), want_map_notify=True, ttl_timeout=True)
        return auth.sign(register.encode(), KEY)

    refresh = signed(home)
    replays = [signed(elsewhere), signed(home, ttl=30), signed(home, ttl=0)]
    try:
        for n in range(INTERVALS + 1):
            clock.now = 1000.0 + n * REFRESH
            assert service.expire() == 0  # still registered when the next refresh is due
            xtr.send(refresh, ms_addr)
            data, _ = await xtr.receive()  # the refresh is accepted: its Map-Notify
            assert MapNotify.decode(data).nonce == 0x11223344
            for replayed in replays:  # the same nonce, other content: refused, no Map-Notify
                xtr.send(replayed, ms_addr)
            # The ITR's answer comes after the replays were handled (one socket, in order).
            eid = IPv4Address("10.60.1.9")
            inner = MapRequest(n + 1, (LOOPBACK,), (RequestRecord(eid, 32),)).encode()
            itr.send(EncapsulatedControl(LOOPBACK, eid, inner, source_port=itr.port).encode(),
                     ms_addr)  # fmt: skip
            data, _ = await itr.receive()
            reply = MapReply.decode(data)
            assert reply.nonce == n + 1
            assert [r.address for r in reply.records[0].rlocs] == [LOOPBACK]
            assert service.counters["replayed-nonce"] == 3 * (n + 1)
        assert xtr.queue.empty()  # no Map-Notify for any replay
        return dict(service.counters)
    finally:
        for transport in (xtr_t, itr_t, ms_t):
            transport.close()


def test_constant_nonce_refreshes_stay_registered_and_replays_are_refused_over_udp() -> None:
    counters = asyncio.run(asyncio.wait_for(constant_nonce_scenario(), 20))
    assert counters["registered"] == INTERVALS + 1 and counters["nonce-refresh"] == INTERVALS
    assert counters["expired"] == 0 and counters["replayed-nonce"] == 3 * (INTERVALS + 1)


async def info_scenario() -> tuple[bytes, int, dict[str, int]]:
    from lisp import InfoMessage
    from lisp.auth import AuthAlg

    xtr_t, xtr = await endpoint(Inbox)
    ms_t, ms_proto = await endpoint(ServiceEndpoint)
    site = Site("edge", {0: KEY}, ((0, ip_network("10.50.0.0/16")),))
    service = MapServerService(MapServer([site]), ms_t.sendto)
    ms_proto.service = service
    ms_addr = ("127.0.0.1", int(ms_t.get_extra_info("sockname")[1]))
    try:
        request = InfoMessage(0xFEED, False, 0, AuthAlg.HMAC_SHA_256_128, b"", 0,
                              IPv4Address("10.50.1.0"), 24)  # fmt: skip
        xtr.send(auth.sign(request.encode(), KEY), ms_addr)
        data, addr = await xtr.receive()
        assert addr == ms_addr
        return data, xtr.port, dict(service.counters)
    finally:
        for transport in (xtr_t, ms_t):
            transport.close()


def test_info_request_answered_over_udp_with_the_address_and_port_seen() -> None:
    from lisp import InfoMessage, NatTraversal

    data, port, counters = asyncio.run(asyncio.wait_for(info_scenario(), 20))
    assert auth.verify(data, KEY)
    reply = InfoMessage.decode(data)
    assert reply.is_reply and reply.nonce == 0xFEED
    assert isinstance(reply.payload, NatTraversal)
    assert (reply.payload.global_etr, reply.payload.etr_port) == (LOOPBACK, port)
    assert counters["info-reply"] == 1 and "unsupported-type" not in counters
