"""Path MTU (issue 16 item 6, RFC 9300 §7.2): the ICMP errors and fragments an ITR makes, the
per-RLOC MTU learnt from ICMP and from padded probes through a black hole, in memory, and the C
engine handing what does not fit to Python or cutting TSO super-packets to the path."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6

from mesh import _fastpath  # type: ignore[attr-defined]
from mesh.keys import plain_encap
from mesh.pmtu import COMMON_MTUS, SEARCH_GRANULARITY, PathMtuTable
from mesh.too_big import clamp_mss, fragment_v4, icmp_too_big
from tests.unit import test_xtr_memory as memory
from tests.unit.test_xtr_memory import DATA_PORT, MakeNode, Wire, rloc

pki = memory.pki
mesh = memory.mesh
AEAD_OUTER = 20 + 8 + 8 + 12 + 16  # outer IPv4, UDP, LISP header, IV, tag
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _ping(size: int, df: bool = True, src: str = "10.1.1.1", dst: str = "10.1.2.1") -> bytes:
    packet = IP(src=src, dst=dst, flags="DF" if df else 0) / ICMP() / (b"p" * (size - 28))
    return bytes(packet)


# ------------------------------------------------------------------ the packets an ITR makes


def test_frag_needed_names_the_mtu_and_quotes_the_packet() -> None:
    original = _ping(1300)
    error = IP(icmp_too_big(original, 1216, bytes([10, 1, 1, 1])))
    assert (error.src, error.dst, error[ICMP].type, error[ICMP].code) == (
        "10.1.1.1", "10.1.1.1", 3, 4
    )  # fmt: skip
    assert error[ICMP].nexthopmtu == 1216
    raw = bytes(error)
    assert len(raw) <= 576 and raw[28:48] == original[:20]
    rebuilt = IP(raw)
    del rebuilt.chksum, rebuilt[ICMP].chksum
    assert IP(bytes(rebuilt)).chksum == error.chksum
    assert IP(bytes(rebuilt))[ICMP].chksum == error[ICMP].chksum


def test_packet_too_big_is_a_valid_icmpv6_error() -> None:
    original = bytes(IPv6(src="fd00:1:1::1", dst="fd00:1:2::1") / UDP() / (b"u" * 1400))
    ours = bytes(IPv6(src="fd00:1:1::1"))[8:24]
    error = IPv6(icmp_too_big(original, 1280, ours))
    assert error[ICMPv6PacketTooBig].mtu == 1280 and len(bytes(error)) <= 1280
    rebuilt = IPv6(bytes(error))
    del rebuilt[ICMPv6PacketTooBig].cksum
    assert IPv6(bytes(rebuilt))[ICMPv6PacketTooBig].cksum == error[ICMPv6PacketTooBig].cksum


def test_no_error_about_an_error_or_from_a_multicast_source() -> None:
    error = icmp_too_big(_ping(1300), 1216, bytes(4))
    assert error is not None and icmp_too_big(error + b"x" * 900, 1216, bytes(4)) is None
    assert icmp_too_big(_ping(1300, src="224.0.0.5"), 1216, bytes(4)) is None


def test_an_ipv4_packet_without_df_is_fragmented_to_fit() -> None:
    original = _ping(1400, df=False)
    fragments = fragment_v4(original, 600)
    assert len(fragments) == 3 and all(len(f) <= 600 for f in fragments)
    parsed = [IP(f) for f in fragments]
    assert [p.frag * 8 for p in parsed] == [0, 576, 1152]
    assert [bool(p.flags.MF) for p in parsed] == [True, True, False]
    assert b"".join(bytes(p.payload) for p in parsed) == original[20:]
    for packet in parsed:
        checked = packet.copy()
        del checked.chksum
        assert IP(bytes(checked)).chksum == packet.chksum


def _syn(mss: int, v6: bool = False) -> bytes:
    tcp = TCP(flags="S", options=[("NOP", None), ("MSS", mss), ("SAckOK", b"")])
    ip = IPv6(src="fd00:1:1::1", dst="fd00:1:2::1") if v6 else IP(src="10.1.1.1", dst="10.1.2.1")
    return bytes(ip / tcp)


def test_mss_clamp_lowers_a_syn_and_keeps_its_checksum_valid_in_python_and_c() -> None:
    for v6 in (False, True):
        clamped = clamp_mss(_syn(1460, v6), 1176)
        assert clamped is not None and _fastpath.clamp_mss(_syn(1460, v6), 1176) == clamped
        parsed = (IPv6 if v6 else IP)(clamped)
        assert dict(parsed[TCP].options)["MSS"] == 1176
        checked = parsed.copy()
        del checked[TCP].chksum
        assert (IPv6 if v6 else IP)(bytes(checked))[TCP].chksum == parsed[TCP].chksum
    assert clamp_mss(_syn(1000), 1176) is None and _fastpath.clamp_mss(_syn(1000), 1176) is None


@FUZZ
@given(st.binary(max_size=200), st.integers(0, 70000))
def test_the_packet_functions_never_crash_on_random_bytes(data: bytes, value: int) -> None:
    for version in (0x45, 0x60):
        packet = bytes([version]) + data
        icmp_too_big(packet, value, bytes(4))
        icmp_too_big(packet, value, bytes(16))
        fragment_v4(packet, value)
        assert clamp_mss(packet, value & 0xFFFF) == _fastpath.clamp_mss(packet, value & 0xFFFF)


@FUZZ
@given(st.binary(min_size=4, max_size=40), st.integers(0, 0xFFFF))
def test_clamp_agrees_between_python_and_c_on_mutated_syns(options: bytes, mss: int) -> None:
    syn = bytearray(_syn(1460))
    packet = bytes(syn[:40]) + options  # random options after a valid header
    packet = packet[:32] + bytes([((20 + len(options)) // 4) << 4]) + packet[33:]
    assert clamp_mss(packet, mss) == _fastpath.clamp_mss(packet, mss)


# ------------------------------------------------------------------ the table


def test_icmp_lowers_the_mtu_never_below_the_floor_and_not_upwards() -> None:
    table = PathMtuTable(probe_timeout=1.0, probing=False)
    table.track("192.0.2.1", 4)
    assert table.mtu("192.0.2.1", 0.0) == 1500
    assert table.on_icmp("192.0.2.1", 1280, 0.0) and table.mtu("192.0.2.1", 1.0) == 1280
    assert not table.on_icmp("192.0.2.1", 1400, 1.0)
    assert table.on_icmp("192.0.2.1", 68, 2.0) and table.mtu("192.0.2.1", 2.0) == 576
    assert table.counters["mtu-icmp-below-floor"] == 1
    assert table.mtu("192.0.2.1", 1000.0) == 1500  # held for ICMP_HOLD, then tried again


# ------------------------------------------------------------------ in memory, end to end


def _wire_mtu(wire: Wire, mtu: int) -> None:
    """Lose every datagram whose outer IPv4 packet is larger than `mtu` (a black hole)."""
    pump = wire.pump

    def pump_with_mtu(limit: int = 1000) -> int:
        for item in list(wire.queue):
            if len(item[2]) + 28 > mtu:
                wire.queue.remove(item)
        return pump(limit)

    wire.pump = pump_with_mtu  # type: ignore[method-assign]


def _path(node: memory.Node) -> memory.Path:  # type: ignore[name-defined]
    (path,) = node.xtr.path_table.paths.values()
    return path


def test_an_icmp_frag_needed_from_the_underlay_makes_the_itr_answer_the_sender(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, make = mesh
    n1, n2 = make(1), make(2)
    wire.tick()
    n1.xtr.inside_packet(_ping(100))
    wire.pump()
    assert len(n2.inside) == 1
    n1.xtr.path_mtu_signal(rloc(2), 1280)  # as read from the data socket's error queue
    assert _path(n1).mtu == 1280 - AEAD_OUTER
    n1.xtr.inside_packet(_ping(1300))
    wire.pump()
    (error,) = n1.inside
    assert IP(error)[ICMP].nexthopmtu == 1280 - AEAD_OUTER
    assert n1.xtr.ctx.drops["mtu-too-big"] == 1 and n1.xtr.ctx.stats["mtu-icmp-sent"] == 1
    n1.xtr.inside_packet(_ping(1300, df=False))  # no DF: fragments that fit
    wire.pump()
    assert [len(p) for p in n2.inside[1:]] == [1212, 108]
    assert n1.xtr.ctx.stats["mtu-fragmented"] == 1


def test_icmp_errors_to_one_sender_are_rate_limited(mesh: tuple[Wire, MakeNode]) -> None:
    wire, make = mesh
    n1, _n2 = make(1), make(2)
    wire.tick()
    n1.xtr.inside_packet(_ping(100))
    wire.pump()
    n1.xtr.path_mtu_signal(rloc(2), 1280)
    for _ in range(100):
        n1.xtr.inside_packet(_ping(1300))
    assert 0 < len(n1.inside) < 100
    assert n1.xtr.ctx.drops["mtu-icmp-rate-limited"] == 100 - len(n1.inside)


@pytest.mark.parametrize("black_hole", [1280, 1337])  # a common underlay MTU, and not
def test_padded_probes_find_a_black_hole_without_any_icmp(
    mesh: tuple[Wire, MakeNode], black_hole: int
) -> None:
    wire, make = mesh
    n1, n2 = make(1), make(2)
    _wire_mtu(wire, black_hole)
    wire.tick()
    n1.xtr.inside_packet(_ping(100))
    wire.pump()
    assert _path(n1).mtu == 1500 - AEAD_OUTER  # what the route says, before any probe
    wire.run(8.0)
    found = n1.status()["path_mtu"][rloc(2)]
    exact = black_hole in COMMON_MTUS  # the first round hits it; otherwise a second narrows it
    assert found == black_hole if exact else black_hole - SEARCH_GRANULARITY <= found <= black_hole
    assert n1.xtr.ctx.stats["mtu-black-holes"] == 1
    n2.inside.clear()
    n1.xtr.inside_packet(_ping(found - AEAD_OUTER))  # the largest that fits arrives
    n1.xtr.inside_packet(_ping(1300))  # a larger one gets an ICMP error back
    wire.pump()
    assert len(n2.inside) == 1 and IP(n1.inside[-1])[ICMP].nexthopmtu == found - AEAD_OUTER
    assert wire.to(rloc(2), DATA_PORT)  # the data went over the wire


def test_probing_confirms_a_clean_path_and_keeps_its_mtu(mesh: tuple[Wire, MakeNode]) -> None:
    wire, make = mesh
    n1, _n2 = make(1), make(2)
    wire.tick()
    n1.xtr.inside_packet(_ping(100))
    wire.run(5.0)
    assert n1.status()["path_mtu"] == {rloc(2): 1500}
    stats = n1.xtr.ctx.stats
    assert stats["mtu-probes-answered"] >= 1 and stats["mtu-black-holes"] == 0


# ------------------------------------------------------------------ the C engine


def test_the_c_engine_hands_over_what_does_not_fit_and_cuts_tso_to_the_path() -> None:
    import os
    import socket

    engine = _fastpath.Engine(-1, False, 0)
    state = plain_encap(0, 0.0)
    engine.set_path(1, 0, state.key, state.salt, state.header, 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        route = (4, bytes([10, 1, 2, 0]), 24, 1, sink.fileno(), "127.0.0.1", sink.getsockname()[1])
        engine.set_routes([(*route, 1216)])
        assert not engine.inject(_ping(1300)) and engine.stats()["mtu-slow"] == 1
        assert engine.inject(_ping(1216))
        assert len(os.read(sink.fileno(), 4096)) == 8 + 1216
    big = bytes(IP(src="10.1.1.1", dst="10.1.2.1") / TCP(flags="A") / (b"t" * 9000))
    segments = _fastpath.segment(big, 1448, 1216)
    assert max(len(s) for s in segments) == 1216
    assert b"".join(bytes(IP(s)[TCP].payload) for s in segments) == b"t" * 9000
    assert struct.unpack("!H", segments[0][2:4])[0] == 1216


def test_the_error_queue_parser_reads_a_too_big_and_nothing_else() -> None:
    import errno
    import socket

    from mesh.underlay_mtu import EXTENDED_ERR, IP_RECVERR, too_big_mtu

    icmp = EXTENDED_ERR.pack(errno.EMSGSIZE, 2, 3, 4, 0, 1280, 0) + bytes(16)
    assert too_big_mtu(socket.IPPROTO_IP, IP_RECVERR, icmp) == 1280
    unreachable = EXTENDED_ERR.pack(errno.EHOSTUNREACH, 2, 3, 1, 0, 0, 0)
    assert too_big_mtu(socket.IPPROTO_IP, IP_RECVERR, unreachable) is None
    assert too_big_mtu(socket.IPPROTO_IP, 99, icmp) is None


@FUZZ
@given(st.integers(0, 300), st.integers(0, 300), st.binary(max_size=64))
def test_the_error_queue_parser_never_crashes(level: int, kind: int, data: bytes) -> None:
    from mesh.underlay_mtu import too_big_mtu

    found = too_big_mtu(level, kind, data)
    assert found is None or 0 < found < 1 << 17
