"""Receive coalescing in the C data path (issue 19 item 1): the TCP segments an ETR opens in one
batch are written to its TUN as one super-packet with a virtio-net GSO header, which the kernel
would cut back into exactly those segments."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from mesh import fastpath

pytestmark = pytest.mark.skipif(not fastpath.available(), reason="C data path not built")

F_NEEDS_CSUM, F_DATA_VALID = 1, 2
GSO_NONE, GSO_TCPV4, GSO_TCPV6 = 0, 1, 4
VNET = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
MSS = 1000


def _c() -> object:
    from mesh import _fastpath  # type: ignore[attr-defined]

    return _fastpath


def _super(v6: bool, size: int, flags: str = "A", seq: int = 4_294_960_000, **ip: object) -> bytes:
    """One TSO super-packet with full checksums, the way a sender's stack means it."""
    if v6:
        packet = IPv6(src="fd00:1::1", dst="fd00:2::1", **ip) / TCP(
            sport=40000, dport=5201, seq=seq, ack=77, flags=flags
        )
    else:
        packet = IP(src="10.1.1.1", dst="10.1.2.1", id=100, flags="DF", **ip) / TCP(
            sport=40000, dport=5201, seq=seq, ack=77, flags=flags
        )
    return bytes(packet / os.urandom(size))


def _coalesce(packets: list[bytes]) -> list[tuple[tuple[int, ...], bytes]]:
    return [(VNET.unpack(h), p) for h, p in _c().coalesce(packets)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("v6", [False, True])
def test_a_train_of_segments_becomes_one_super_packet_the_kernel_cuts_back(v6: bool) -> None:
    original = _super(v6, 20 * MSS + 123, flags="PA")
    segments = _c().segment(original, MSS)  # type: ignore[attr-defined]
    assert len(segments) == 21
    [(header, merged)] = _coalesce(segments)
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = header
    iphl = 40 if v6 else 20
    assert flags == F_NEEDS_CSUM
    assert gso_type == (GSO_TCPV6 if v6 else GSO_TCPV4)
    assert (hdr_len, gso_size, csum_start, csum_offset) == (iphl + 20, MSS, iphl, 16)
    assert len(merged) == len(original)
    # Cut again (what the kernel's GSO does with it): the very same segments.
    assert _c().segment(merged, gso_size) == segments  # type: ignore[attr-defined]
    layer = IPv6 if v6 else IP
    assert bytes(layer(merged)[TCP].payload) == bytes(layer(original)[TCP].payload)
    if not v6:  # the IPv4 header checksum of the merged packet is complete
        fresh = IP(merged)
        del fresh.chksum
        assert IP(bytes(fresh)).chksum == IP(merged).chksum


def test_what_cannot_be_merged_is_written_as_it_came_in_order() -> None:
    train = _c().segment(_super(False, 3 * MSS), MSS)  # type: ignore[attr-defined]
    udp = bytes(IP(src="10.1.1.1", dst="10.1.2.1") / UDP(sport=1, dport=2) / (b"x" * 50))
    fin = _c().segment(_super(False, 10, flags="FA", seq=0), MSS)  # type: ignore[attr-defined]
    ack = bytes(IP(src="10.1.1.1", dst="10.1.2.1") / TCP(sport=40000, dport=5201, flags="A"))
    out = _coalesce([udp, *fin, ack, train[0], train[2], train[1]])  # out of order
    headers = [h for h, _ in out]
    assert [p for _, p in out] == [udp, *fin, ack, train[0], train[2], train[1]]
    assert all(h == (F_DATA_VALID, GSO_NONE, 0, 0, 0, 0) for h in headers)


def test_a_push_or_a_short_segment_ends_the_merge() -> None:
    first = _c().segment(_super(False, 3 * MSS, flags="PA", seq=1000), MSS)  # type: ignore[attr-defined]
    short = _c().segment(_super(False, MSS + 10, seq=1000 + 3 * MSS), MSS)  # type: ignore[attr-defined]
    out = _coalesce([*first, *short])
    assert [len(p) for _, p in out] == [40 + 3 * MSS, 40 + MSS + 10]
    assert [h[1] for h, _ in out] == [GSO_TCPV4, GSO_TCPV4]


def test_interleaved_flows_are_merged_each_on_its_own() -> None:
    a = _c().segment(_super(False, 4 * MSS), MSS)  # type: ignore[attr-defined]
    b_raw = IP(_super(False, 4 * MSS))
    b_raw[TCP].sport = 40001
    del b_raw[TCP].chksum
    b = _c().segment(bytes(b_raw), MSS)  # type: ignore[attr-defined]
    mixed = [x for pair in zip(a, b, strict=True) for x in pair]
    out = _coalesce(mixed)
    assert len(out) == 2
    merged = {IP(p)[TCP].sport: p for _, p in out}
    assert _c().segment(merged[40000], MSS) == a  # type: ignore[attr-defined]
    assert _c().segment(merged[40001], MSS) == b  # type: ignore[attr-defined]


def test_segments_that_differ_in_their_headers_are_not_merged() -> None:
    one = _c().segment(_super(False, 2 * MSS, seq=0, tos=0), MSS)  # type: ignore[attr-defined]
    other = _c().segment(_super(False, 2 * MSS, seq=2 * MSS, tos=0x20), MSS)  # type: ignore[attr-defined]
    out = _coalesce([*one, *other])
    assert [IP(p).tos for _, p in out] == [0, 0x20]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=1500), max_size=12))
def test_garbage_never_crashes_and_nothing_is_invented(packets: list[bytes]) -> None:
    out = _coalesce(packets)
    assert len(out) <= len(packets)
    assert sum(len(p) for _, p in out) <= sum(len(p) for p in packets)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(1, MSS), min_size=1, max_size=30),
    st.booleans(),
)
def test_any_train_is_delivered_whole_and_in_order(sizes: list[int], v6: bool) -> None:
    """Whatever the sizes, the payload written equals the payload opened, in order."""
    seq, segments = 5, []
    for size in sizes:
        segments.append(_super(v6, size, seq=seq))
        seq += size
    layer = IPv6 if v6 else IP
    out = _coalesce(segments)
    payload = b"".join(bytes(layer(p)[TCP].payload) for _, p in out)
    assert payload == b"".join(bytes(layer(s)[TCP].payload) for s in segments)
