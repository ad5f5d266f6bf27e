"""The two DataPath implementations against each other, through the interface the xTR uses.

The same path, key and packet go through the Python reference and the C engine: what each puts
on the wire must be the same bytes, what each opens must be the same inner packet, and a packet
under a key neither holds must come back to the xTR (the no-key path that solicits a new key
exchange). Loopback UDP sockets stand in for the uplink (no root); a socketpair for the TUN.
"""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import ip_address, ip_network
from typing import Any

import pytest

from common.policy_format import NodePolicy, PolicyRule
from lisp.crypto import CS_AES128_GCM, PacketCipher, ReplayWindow
from mesh import fastpath
from mesh.datapath import DataPath, PythonDataPath
from mesh.keys import DecapSlot, EncapState, data_header
from mesh.xtr_types import LocalRloc, Path

pytestmark = pytest.mark.skipif(not fastpath.available(), reason="mesh._fastpath is not built")

IID = 0
KEY_ID = 2
VNET_HEADER = 10  # the C engine writes to a TUN with the virtio-net header


class SocketTransport:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send_data(self, local: LocalRloc, packet: bytes, dest: tuple[str, int]) -> None:
        self.sock.sendto(packet, dest)

    def send_control(self, local: LocalRloc, packet: bytes, dest: tuple[str, int]) -> None:
        raise AssertionError("the data path sends no control messages")

    def write_inside(self, packet: bytes) -> None:
        raise AssertionError("not used by these tests")


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    return sock


@pytest.fixture
def wire() -> Iterator[dict[str, Any]]:
    tx, rx = _udp(), _udp()
    tun_ours, tun_engine = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tun_ours.settimeout(2.0)
    yield {"tx": tx, "rx": rx, "tun": tun_ours, "tun_engine": tun_engine}
    for sock in (tx, rx, tun_ours, tun_engine):
        sock.close()


def _datapath(kind: str, wire: dict[str, Any]) -> DataPath:
    if kind == "python":
        return PythonDataPath(SocketTransport(wire["tx"]), 0.0)
    return fastpath.FastPath(
        wire["tun_engine"].fileno(), IID, CS_AES128_GCM, data_fd=lambda _local: wire["tx"].fileno()
    )


def _encap(key: bytes, salt: bytes) -> EncapState:
    return EncapState(
        cipher=PacketCipher(CS_AES128_GCM, key, KEY_ID, salt),
        key_id=KEY_ID,
        remote_public=b"",
        header=data_header(IID, KEY_ID),
        created_at=0.0,
        peer_name="peer",
        counter=41,
        key=key,
        salt=salt,
    )


def _inner(src: str, dst: str, payload: bytes) -> bytes:
    total = 28 + len(payload)
    header = bytes([0x45, 0, total >> 8, total & 0xFF, 0, 0, 0x40, 0, 64, 17, 0, 0])
    udp = (1234).to_bytes(2, "big") + (7).to_bytes(2, "big") + (8 + len(payload)).to_bytes(2, "big")
    return header + ip_address(src).packed + ip_address(dst).packed + udp + b"\0\0" + payload


def _sent_by(kind: str, wire: dict[str, Any], key: bytes, salt: bytes, inner: bytes) -> bytes:
    datapath = _datapath(kind, wire)
    local = LocalRloc(ip_address("127.0.0.1"), None, 1, 100)
    path = Path(_encap(key, salt), ("127.0.0.1", wire["rx"].getsockname()[1]), local)
    datapath.install_paths({(IID, ip_network("10.1.2.0/24")): path})
    assert datapath.send(path, inner)
    datagram: bytes = wire["rx"].recv(65535)
    return datagram


def test_both_put_the_same_bytes_on_the_wire(wire: dict[str, Any]) -> None:
    key, salt = os.urandom(16), os.urandom(4)
    inner = _inner("10.1.1.1", "10.1.2.1", b"same bytes")
    python = _sent_by("python", wire, key, salt, inner)
    c = _sent_by("c", wire, key, salt, inner)
    assert python == c
    assert PacketCipher(CS_AES128_GCM, key, KEY_ID, salt).open(c) == (42, inner)


def _slot(key: bytes) -> DecapSlot:
    net = ip_network("10.1.1.0/24")
    return DecapSlot(
        cipher=PacketCipher(CS_AES128_GCM, key, KEY_ID),
        window=ReplayWindow(4096),
        peer_name="peer",
        peer_eids=((IID, net),),
        installed_at=0.0,
        key=key,
        allowed=((4, int(net.network_address), int(net.netmask)),),
    )


@pytest.mark.parametrize("kind", ["python", "c"])
def test_both_open_what_was_sealed_and_hand_back_what_has_no_key(
    kind: str, wire: dict[str, Any]
) -> None:
    key = os.urandom(16)
    datapath = _datapath(kind, wire)
    decap = {("127.0.0.1", KEY_ID): _slot(key)}
    datapath.install_decap(decap)
    inner = _inner("10.1.1.1", "10.1.2.1", b"opened")
    sealer = PacketCipher(CS_AES128_GCM, key, KEY_ID)
    wire["tx"].sendto(sealer.seal(data_header(IID, KEY_ID), inner, 7), wire["rx"].getsockname())
    unknown = PacketCipher(CS_AES128_GCM, os.urandom(16), 3).seal(data_header(IID, 3), inner, 1)
    wire["tx"].sendto(unknown, wire["rx"].getsockname())
    back = _pump_until(datapath, wire["rx"], 2 if kind == "python" else 1)
    if kind == "python":  # the reference hands every packet to the xTR, which opens it
        assert [p for p, _ in back] == [sealer.seal(data_header(IID, KEY_ID), inner, 7), unknown]
        slot = datapath.decap_slot(decap, "127.0.0.1", KEY_ID)
        assert slot is not None and slot.cipher.open(back[0][0]) == (7, inner)
        assert datapath.decap_slot(decap, "127.0.0.1", 3) is None
    else:  # the engine opened the first into the TUN and hands back only the keyless one
        assert [p for p, _ in back] == [unknown]
        assert wire["tun"].recv(65535)[VNET_HEADER:] == inner
        assert datapath.decap_slot(decap, "127.0.0.1", KEY_ID) is None  # keys live in C
    assert back[-1][1] == ("127.0.0.1", wire["tx"].getsockname()[1])


def _pump_until(datapath: DataPath, sock: socket.socket, want: int) -> list[Any]:
    """Pump the socket until it is drained (both datagrams are queued on loopback already)."""
    sock.setblocking(False)
    got: list[Any] = []
    for _ in range(want):
        if len(got) >= want or not select.select([sock], [], [], 2.0)[0]:
            break
        got += datapath.pump_outside(sock, 16)
    return got


@pytest.mark.parametrize("kind", ["python", "c"])
def test_both_report_their_policy_in_one_shape(kind: str, wire: dict[str, Any]) -> None:
    datapath = _datapath(kind, wire)
    rule = PolicyRule(
        1, "web", "allow", dst=(ip_network("10.1.2.0/24"),), protocol=6, ports=((80, 80),)
    )
    datapath.set_policy(NodePolicy(3, egress=(rule,)), 1.0)
    status = datapath.policy_status(1.0)
    assert (status["installed"], status["version"], status["enforced_by"]) == (True, 3, kind)
    # The Python path checks in the xTR (its hooks); the engine checks every packet itself.
    assert (datapath.egress_check is not None) == (kind == "python")
    datapath.set_policy(None, 2.0)
    assert datapath.policy_status(2.0)["installed"] is False
    assert datapath.egress_check is None


def test_the_engine_takes_a_certificate_with_many_eids(wire: dict[str, Any]) -> None:
    """A peer certified for 40 prefixes (the engine once held 16 per key: the slot sync raised,
    and the key exchange failed in the C data path only). Its source in the last one opens."""
    key = os.urandom(16)
    datapath = _datapath("c", wire)
    nets = tuple(ip_network(f"10.9.{i}.0/24") for i in range(40))
    slot = replace(_slot(key), peer_eids=tuple((IID, n) for n in nets))
    datapath.install_decap({("127.0.0.1", KEY_ID): slot})
    inner = _inner("10.9.39.7", "10.1.2.1", b"from the 40th prefix")
    spoofed = _inner("10.9.40.7", "10.1.2.1", b"from none of them")
    sealer = PacketCipher(CS_AES128_GCM, key, KEY_ID)
    for counter, packet in enumerate((spoofed, inner), start=1):
        sealed = sealer.seal(data_header(IID, KEY_ID), packet, counter)
        wire["tx"].sendto(sealed, wire["rx"].getsockname())
    assert _pump_until(datapath, wire["rx"], 1) == []  # both handled in the engine
    assert wire["tun"].recv(65535)[VNET_HEADER:] == inner
    assert datapath.drop_counts() == {"spoofed-source": 1}
