"""What the policy sees of a packet: the 5-tuple of an IPv4/IPv6 packet (`parse_flow`).

The C engine (mesh/_fastpath.c, `parse_flow` there) parses the same way; the unit tests hold the
two to the same tuples. ICMP/ICMPv6 echo carries its identifier as (id, 0) in a request and
(0, id) in a reply, so a reply is the reverse of its request while an echo request from the other
side is a new flow. Fragments after the first and other protocols have no ports. IPv6
hop-by-hop, routing, destination-options and fragment headers are walked.

Malformed (None, counted and dropped by the engines): a packet shorter than its IP header, an
IPv6 header chain longer than `_MAX_V6_HEADERS` or cut short, and a TCP or UDP packet (or first
fragment) too short to hold its ports. Evaluated as "protocol 60 (or 44, or 6) without ports",
such a packet would slip past a rule like `deny tcp/22` and still reach port 22 once the receiver
walks the rest of its chain or reassembles it.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from common.policy_format import ICMP, ICMPV6, TCP, UDP

_V6_OPTION_HEADERS = (0, 43, 60)  # hop-by-hop, routing, destination options
_V6_FRAGMENT = 44
_MAX_V6_HEADERS = 8


class FlowTuple(NamedTuple):
    """What the policy sees of a packet. Addresses are the packed 4 or 16 bytes. (A NamedTuple,
    like Verdict: one is made per packet, and a frozen dataclass costs several times more.)"""

    version: int
    src: bytes
    dst: bytes
    protocol: int
    sport: int = 0
    dport: int = 0
    has_ports: bool = False  # TCP/UDP with its header present (not a later fragment)
    tcp_flags: int = 0


def parse_flow(packet: bytes) -> FlowTuple | None:
    """The 5-tuple of an IPv4/IPv6 packet; None if it is not one."""
    found = parse(packet)
    return None if found is None else FlowTuple._make(found)


Parsed = tuple[int, bytes, bytes, int, int, int, bool, int]  # FlowTuple's fields
_V4_PORTS = struct.Struct("!B5xHxB2x4s4sHH")  # version/IHL, fragment, protocol, src, dst, ports
_V6_PORTS = struct.Struct("!B5xBx16s16sHH")  # version, next header, src, dst, ports


def parse(packet: bytes) -> Parsed | None:
    """parse_flow as a plain tuple. TCP and UDP without IP options or IPv6 extension headers
    (nearly every packet) take one struct call; the rest the general walk."""
    n = len(packet)
    if n >= 24 and packet[0] == 0x45:
        _, fragment, protocol, src, dst, sport, dport = _V4_PORTS.unpack_from(packet)
        if protocol in (TCP, UDP) and not fragment & 0x1FFF:
            flags = packet[33] if protocol == TCP and n >= 34 else 0
            return (4, src, dst, protocol, sport, dport, True, flags)
    elif n >= 44 and packet[0] >> 4 == 6:
        _, protocol, src, dst, sport, dport = _V6_PORTS.unpack_from(packet)
        if protocol in (TCP, UDP):
            flags = packet[53] if protocol == TCP and n >= 54 else 0
            return (6, src, dst, protocol, sport, dport, True, flags)
    return _parse_walk(packet)


def _parse_walk(packet: bytes) -> Parsed | None:
    n = len(packet)
    if n < 1:
        return None
    version = packet[0] >> 4
    if version == 4:
        off = (packet[0] & 0x0F) * 4
        if n < 20 or off < 20 or n < off:
            return None
        src, dst, protocol = packet[12:16], packet[16:20], packet[9]
        if packet[6] & 0x1F or packet[7]:  # a fragment after the first: no L4 header
            return (4, src, dst, protocol, 0, 0, False, 0)
    elif version == 6:
        if n < 40:
            return None
        src, dst, protocol, off = packet[8:24], packet[24:40], packet[6], 40
        for _ in range(_MAX_V6_HEADERS):
            if protocol in _V6_OPTION_HEADERS:
                if n < off + 2:
                    return None  # the chain is cut short
                protocol, off = packet[off], off + (packet[off + 1] + 1) * 8
            elif protocol == _V6_FRAGMENT:
                if n < off + 8:
                    return None
                later = packet[off + 2] or packet[off + 3] & 0xF8  # offset != 0
                protocol, off = packet[off], off + 8
                if later:
                    return (6, src, dst, protocol, 0, 0, False, 0)
            else:
                break
        else:
            if protocol in _V6_OPTION_HEADERS or protocol == _V6_FRAGMENT:
                return None  # more extension headers than we walk
    else:
        return None
    if protocol in (TCP, UDP) and n < off + 4:
        return None  # a TCP/UDP packet (or first fragment) without its ports
    if protocol in (TCP, UDP):
        flags = packet[off + 13] if protocol == TCP and n >= off + 14 else 0
        sport = packet[off] << 8 | packet[off + 1]
        dport = packet[off + 2] << 8 | packet[off + 3]
        return (version, src, dst, protocol, sport, dport, True, flags)
    icmp = (version == 4 and protocol == ICMP) or (version == 6 and protocol == ICMPV6)
    if icmp and n >= off + 8:
        kind = packet[off]
        ident = packet[off + 4] << 8 | packet[off + 5]
        request, reply = (8, 0) if version == 4 else (128, 129)
        if kind == request:
            return (version, src, dst, protocol, ident, 0, False, 0)
        if kind == reply:
            return (version, src, dst, protocol, 0, ident, False, 0)
    return (version, src, dst, protocol, 0, 0, False, 0)
