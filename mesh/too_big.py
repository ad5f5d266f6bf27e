"""What an ITR does with an inner packet larger than its path allows (RFC 9300 §7.2, stateful).

Pure functions on packets as the TUN hands them over:
- `icmp_too_big`: the ICMP "fragmentation needed" (IPv4, type 3 code 4) or ICMPv6 "packet too
  big" (type 2) to send back to the inner sender, carrying the MTU it must use; None where RFC
  1122/4443 forbid an error (an ICMP error, a non-first fragment, a multicast or unspecified
  source, a packet too short to quote);
- `fragment_v4`: an IPv4 packet without DF, cut into fragments that fit (as a router would);
- `clamp_mss`: lower the MSS option of a TCP SYN so the peer never sends segments that do not fit.
"""

from __future__ import annotations

import struct

IPV4_HEADER = 20
IPV6_HEADER = 40
ICMP_QUOTE_V4 = 576  # the whole ICMPv4 error stays within the minimum IPv4 MTU
ICMP_QUOTE_V6 = 1280  # the whole ICMPv6 error stays within the minimum IPv6 MTU
ICMP_ERROR_TYPES_V4 = {3, 4, 5, 11, 12}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _swap16(value: int) -> int:
    return ((value & 0xFF) << 8) | (value >> 8)


def icmp_too_big(packet: bytes, mtu: int, source: bytes) -> bytes | None:
    """The ICMP error telling `packet`'s sender to fit in `mtu` bytes, sent from `source` (4 or
    16 bytes: the address the error comes from)."""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= IPV4_HEADER:
        return _frag_needed_v4(packet, mtu, source)
    if version == 6 and len(packet) >= IPV6_HEADER:
        return _packet_too_big_v6(packet, mtu, source)
    return None


def _frag_needed_v4(packet: bytes, mtu: int, source: bytes) -> bytes | None:
    ihl = (packet[0] & 0x0F) * 4
    sender = packet[12:16]
    if ihl < IPV4_HEADER or len(packet) < ihl + 8 or len(source) != 4:
        return None
    if sender[0] >= 224 or sender == bytes(4) or sender[0] == 127:
        return None
    if struct.unpack("!H", packet[6:8])[0] & 0x1FFF:
        return None  # not the first fragment
    if packet[9] == 1 and packet[ihl] in ICMP_ERROR_TYPES_V4:
        return None  # never an error about an error
    quote = packet[: ICMP_QUOTE_V4 - IPV4_HEADER - 8]
    icmp = struct.pack("!BBHHH", 3, 4, 0, 0, min(mtu, 0xFFFF)) + quote
    icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
    total = IPV4_HEADER + len(icmp)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, total, 0, 0, 64, 1, 0, source, sender)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + icmp


def _packet_too_big_v6(packet: bytes, mtu: int, source: bytes) -> bytes | None:
    sender = packet[8:24]
    if len(source) != 16 or sender[0] == 0xFF or sender == bytes(16):
        return None
    if packet[6] == 58 and len(packet) > IPV6_HEADER and packet[IPV6_HEADER] < 128:
        return None  # an ICMPv6 error (types 0-127): never an error about an error
    quote = packet[: ICMP_QUOTE_V6 - IPV6_HEADER - 8]
    icmp = struct.pack("!BBHI", 2, 0, 0, max(mtu, 1280)) + quote
    pseudo = source + sender + struct.pack("!I3xB", len(icmp), 58)
    icmp = icmp[:2] + struct.pack("!H", _checksum(pseudo + icmp)) + icmp[4:]
    header = struct.pack("!IHBB", 6 << 28, len(icmp), 58, 64) + source + sender
    return header + icmp


def dont_fragment(packet: bytes) -> bool:
    """May this packet not be fragmented on the way (IPv6 never is; IPv4 with DF)?"""
    return packet[0] >> 4 != 4 or bool(packet[6] & 0x40)


def fragment_v4(packet: bytes, max_len: int) -> list[bytes]:
    """Cut an IPv4 packet (DF clear) into fragments of at most `max_len` bytes; [] if it cannot
    (a header that leaves no room for 8 bytes of data)."""
    if len(packet) < IPV4_HEADER or packet[0] >> 4 != 4:
        return []
    ihl = (packet[0] & 0x0F) * 4
    total = min(len(packet), struct.unpack("!H", packet[2:4])[0])
    room = (max_len - ihl) & ~7
    if ihl < IPV4_HEADER or room < 8 or total <= ihl:
        return []
    flags_offset = struct.unpack("!H", packet[6:8])[0]
    more_after = flags_offset & 0x2000
    base = flags_offset & 0x1FFF
    data = packet[ihl:total]
    fragments = []
    for start in range(0, len(data), room):
        chunk = data[start : start + room]
        last = start + room >= len(data)
        field = base + start // 8 | (more_after if last else 0x2000)
        header = bytearray(packet[:ihl])
        struct.pack_into("!H", header, 2, ihl + len(chunk))
        struct.pack_into("!H", header, 6, field)
        struct.pack_into("!H", header, 10, 0)
        struct.pack_into("!H", header, 10, _checksum(bytes(header)))
        fragments.append(bytes(header) + chunk)
    return fragments


def clamp_mss(packet: bytes, mss: int) -> bytes | None:
    """`packet` with the MSS option of its TCP SYN lowered to `mss`; None if it is not a SYN
    with a larger MSS (nothing to change)."""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= IPV4_HEADER:
        l4 = (packet[0] & 0x0F) * 4
        if packet[9] != 6 or struct.unpack("!H", packet[6:8])[0] & 0x1FFF:
            return None
    elif version == 6 and len(packet) >= IPV6_HEADER:
        l4 = IPV6_HEADER
        if packet[6] != 6:
            return None
    else:
        return None
    if len(packet) < l4 + 20 or not packet[l4 + 13] & 0x02:
        return None
    end = l4 + (packet[l4 + 12] >> 4) * 4
    if end > len(packet):
        return None
    i = l4 + 20
    while i < end:
        kind = packet[i]
        if kind == 0:
            return None
        if kind == 1:
            i += 1
            continue
        if i + 1 >= end or packet[i + 1] < 2:
            return None
        if kind == 2 and packet[i + 1] == 4 and i + 4 <= end:
            old = struct.unpack("!H", packet[i + 2 : i + 4])[0]
            if old <= mss:
                return None
            out = bytearray(packet)
            struct.pack_into("!H", out, i + 2, mss)
            # RFC 1624 incremental update of the TCP checksum; a value at an odd offset of the
            # header counts byte-swapped in the 16-bit sum.
            before, after = old, mss
            if (i + 2 - l4) & 1:
                before, after = _swap16(old), _swap16(mss)
            csum = struct.unpack("!H", out[l4 + 16 : l4 + 18])[0]
            total = (~csum & 0xFFFF) + (~before & 0xFFFF) + after
            while total >> 16:
                total = (total & 0xFFFF) + (total >> 16)
            struct.pack_into("!H", out, l4 + 16, ~total & 0xFFFF)
            return bytes(out)
        i += packet[i + 1]
    return None
