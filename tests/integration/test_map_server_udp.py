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
from lisp.records import Action
from mesh.map_server import MapServerService

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
