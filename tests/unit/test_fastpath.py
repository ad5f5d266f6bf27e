"""The C data path against the Python reference: byte-identical packets, interoperable keys,
the same replay rule, and TCP segmentation that any receiver accepts."""

from __future__ import annotations

import os
import struct

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6

from lisp.crypto import CS_AES128_GCM, CS_CHACHA20_POLY1305, PacketCipher, ReplayWindow
from mesh import fastpath
from mesh.keys import data_header


def test_the_c_data_path_is_built() -> None:
    # The test command installs the package, which compiles mesh/_fastpath.c: it must be there.
    assert fastpath.available(), "mesh._fastpath is not built (needs gcc and libssl-dev)"


SUITES = [(CS_AES128_GCM, 16), (CS_CHACHA20_POLY1305, 32)]


def _engine() -> object:
    from mesh import _fastpath  # type: ignore[attr-defined]

    return _fastpath.Engine(-1, False, 0)


def _inner(size: int) -> bytes:
    return bytes(IP(src="10.1.1.1", dst="10.1.2.1") / TCP() / (b"x" * size))


@pytest.mark.parametrize(("suite", "key_len"), SUITES)
def test_c_and_python_seal_byte_identical_packets(suite: int, key_len: int) -> None:
    key, salt = os.urandom(key_len), os.urandom(4)
    header = data_header(1000, 2)
    engine = _engine()
    engine.set_path(7, suite, key, salt, header, 41)  # type: ignore[attr-defined]
    reference = PacketCipher(suite, key, 2, salt)
    sizes = (0, 1, 15, 16, 17, 100, 500, 1000, 1300, 1360)
    for counter, size in zip(range(42, 52), sizes, strict=True):
        inner = _inner(size)
        sealed_c = engine.seal_one(7, inner)  # type: ignore[attr-defined]
        assert sealed_c == reference.seal(header, inner, counter)
    assert engine.path_state(7)[0] == 51  # type: ignore[attr-defined]


@pytest.mark.parametrize(("suite", "key_len"), SUITES)
def test_python_sealed_packets_open_in_c_once(suite: int, key_len: int) -> None:
    key = os.urandom(key_len)
    engine = _engine()
    allowed = [(4, bytes([10, 1, 1, 0]), 24)]
    engine.set_slot(3, suite, key, allowed)  # type: ignore[attr-defined]
    engine.set_decap_key("192.0.2.1", 1, 3)  # type: ignore[attr-defined]
    sealer = PacketCipher(suite, key, 1)
    inner = _inner(200)
    packet = sealer.seal(data_header(0, 1), inner, 5)
    assert engine.open_one("192.0.2.1", packet) == inner  # type: ignore[attr-defined]
    assert engine.open_one("192.0.2.1", packet) is None  # replayed  # type: ignore[attr-defined]
    assert engine.open_one("192.0.2.9", sealer.seal(data_header(0, 1), inner, 6)) is None
    tampered = bytearray(sealer.seal(data_header(0, 1), inner, 7))
    tampered[30] ^= 1
    assert engine.open_one("192.0.2.1", bytes(tampered)) is None  # type: ignore[attr-defined]
    # C-sealed packets open with the Python reference (interoperable both ways).
    engine.set_path(1, suite, key, os.urandom(4), data_header(0, 1), 100)  # type: ignore[attr-defined]
    counter, opened = sealer.open(engine.seal_one(1, inner))  # type: ignore[attr-defined]
    assert (counter, opened) == (101, inner)


def test_c_replay_window_agrees_with_the_python_one() -> None:
    import random

    rng = random.Random(11)
    key = os.urandom(16)
    engine = _engine()
    engine.set_slot(1, CS_AES128_GCM, key, [(4, bytes(4), 0)])  # type: ignore[attr-defined]
    engine.set_decap_key("192.0.2.1", 1, 1)  # type: ignore[attr-defined]
    sealer = PacketCipher(CS_AES128_GCM, key, 1)
    window = ReplayWindow(4096)
    inner = _inner(10)
    counters = [rng.choice([rng.randint(1, 3000), rng.randint(1, 20000)]) for _ in range(3000)]
    counters += list(range(19990, 20010)) * 2
    for counter in counters:
        opened = engine.open_one("192.0.2.1", sealer.seal(data_header(0, 1), inner, counter))  # type: ignore[attr-defined]
        assert (opened is not None) == window.accept(counter), counter


def _check_segments(original: bytes, segments: list[bytes], mss: int, v6: bool) -> None:
    layer = IPv6 if v6 else IP
    first = layer(original)
    payload = b""
    for index, raw in enumerate(segments):
        seg = layer(raw)
        tcp = seg[TCP]
        # scapy recomputes the checksums it would send; ours must equal them.
        fresh = layer(raw)
        del fresh[TCP].chksum
        if not v6:
            del fresh[IP].chksum
            assert layer(bytes(fresh))[IP].chksum == seg[IP].chksum
        assert layer(bytes(fresh))[TCP].chksum == tcp.chksum
        assert tcp.seq == (first[TCP].seq + len(payload)) & 0xFFFFFFFF
        assert len(bytes(tcp.payload)) <= mss
        last = index == len(segments) - 1
        assert bool(tcp.flags.P) == (last and bool(first[TCP].flags.P))
        assert bool(tcp.flags.F) == (last and bool(first[TCP].flags.F))
        payload += bytes(tcp.payload)
    assert payload == bytes(first[TCP].payload)


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize(("size", "mss"), [(1, 1360), (1360, 1360), (5000, 1360), (62000, 1348)])
def test_tso_super_packets_become_valid_segments(v6: bool, size: int, mss: int) -> None:
    from mesh import _fastpath  # type: ignore[attr-defined]

    data = os.urandom(size)
    if v6:
        packet = IPv6(src="fd00:1::1", dst="fd00:2::1") / TCP(seq=4_294_967_000, flags="PAF")
    else:
        packet = IP(src="10.1.1.1", dst="10.1.2.1", id=65530) / TCP(seq=4_294_967_000, flags="PAF")
    raw = bytes(packet / data)
    # A TSO super-packet arrives with a partial checksum: the segmenter must not rely on it.
    raw = raw[: (60 if v6 else 40) - 4] + struct.pack("!H", 0x1234) + raw[(60 if v6 else 40) - 2 :]
    segments = _fastpath.segment(raw, mss)
    assert len(segments) == max(1, -(-size // mss))
    _check_segments(bytes(packet / data), segments, mss, v6)
    if not v6:
        ids = [IP(s).id for s in segments]
        assert ids == [(65530 + i) & 0xFFFF for i in range(len(segments))]


def test_segmenter_refuses_what_it_cannot_cut() -> None:
    from mesh import _fastpath  # type: ignore[attr-defined]

    udp = bytes(IP(proto=17) / (b"\x00" * 100))
    for bad in (b"", b"\x45" * 10, udp, _inner(100)[:30]):
        with pytest.raises(ValueError):
            _fastpath.segment(bad, 1360)


@pytest.mark.parametrize(("ours", "header_iid", "opens"), [
    (7, 7, True), (7, 0, False), (0, 7, False), (0, 0, True),
])  # fmt: skip
def test_c_requires_the_header_to_name_our_instance(
    ours: int, header_iid: int, opens: bool
) -> None:
    # Issue 12 finding 2: without the I bit a packet is instance 0's, so a node of another
    # instance holding a key cannot slip packets in by leaving the I bit out. Through the real
    # receive path: a UDP socket on loopback in, a pipe standing in for the TUN device out.
    import socket

    from mesh import _fastpath  # type: ignore[attr-defined]

    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        key = os.urandom(16)
        engine = _fastpath.Engine(write_end, False, ours)
        engine.set_slot(1, CS_AES128_GCM, key, [(4, bytes(4), 0)])
        engine.set_decap_key("127.0.0.1", 1, 1)
        inner = _inner(10)
        packet = PacketCipher(CS_AES128_GCM, key, 1).seal(data_header(header_iid, 1), inner, 1)
        sender.sendto(packet, receiver.getsockname())
        assert engine.pump_outside(receiver.fileno(), 8) == []  # nothing for the slow path
        try:
            written = os.read(read_end, 4096)
        except BlockingIOError:
            written = b""
        assert (written == inner) == opens
        assert engine.stats().get("wrong-instance", 0) == (0 if opens else 1)
    finally:
        receiver.close()
        sender.close()
        os.close(read_end)
        os.close(write_end)


def test_c_opens_a_relayed_packet_by_the_sender_the_relay_frame_names() -> None:
    # mesh.rtr: a packet that came through an RTR arrives from the RTR's address; the engine opens
    # it with the key of the sender named in the relay frame, once (its replay window holds).
    from mesh import _fastpath  # type: ignore[attr-defined]

    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    try:
        key = os.urandom(16)
        engine = _fastpath.Engine(write_end, False, 0)
        engine.set_slot(1, CS_AES128_GCM, key, [(4, bytes([10, 1, 1, 0]), 24)])
        engine.set_decap_key("192.0.2.1", 1, 1)
        inner = _inner(50)
        packet = PacketCipher(CS_AES128_GCM, key, 1).seal(data_header(0, 1), inner, 1)
        assert engine.deliver_outside("192.0.2.9", packet) is False  # no key for that sender
        assert engine.deliver_outside("192.0.2.1", packet) is True
        assert os.read(read_end, 4096) == inner
        assert engine.deliver_outside("192.0.2.1", packet) is True  # handled: a replay, dropped
        assert engine.stats()["replay"] == 1
        with pytest.raises(BlockingIOError):
            os.read(read_end, 4096)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_c_counts_opened_packets_per_source_for_passive_liveness() -> None:
    # Traffic received from an RLOC proves it alive (no probe needed), so the engine counts per
    # (source, key-id), not per slot (one slot serves all of a peer's uplinks); a packet that
    # fails to open proves nothing. Through the real receive path, as above.
    import socket

    from mesh import _fastpath  # type: ignore[attr-defined]
    from mesh.fastpath import FastPath

    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        key = os.urandom(16)
        path = FastPath.__new__(FastPath)
        path.engine = _fastpath.Engine(write_end, False, 0)
        path._key_packets = {}
        path.engine.set_slot(1, CS_AES128_GCM, key, [(4, bytes(4), 0)])
        path.engine.set_decap_key("127.0.0.1", 1, 1)
        path.engine.set_decap_key("192.0.2.7", 1, 1)  # the peer's other uplink, same slot
        cipher = PacketCipher(CS_AES128_GCM, key, 1)
        forged = bytearray(cipher.seal(data_header(0, 1), _inner(10), 1))
        forged[-1] ^= 1
        sender.sendto(bytes(forged), receiver.getsockname())
        path.engine.pump_outside(receiver.fileno(), 8)
        assert path.received_from() == set()
        sender.sendto(cipher.seal(data_header(0, 1), _inner(10), 2), receiver.getsockname())
        path.engine.pump_outside(receiver.fileno(), 8)
        assert path.received_from() == {"127.0.0.1"}  # not 192.0.2.7
        assert path.received_from() == set()  # nothing new since
    finally:
        receiver.close()
        sender.close()
        os.close(read_end)
        os.close(write_end)
