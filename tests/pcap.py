"""A tiny pcap writer for tests: UDP payloads wrapped in IPv4 or IPv6, LINKTYPE_RAW (101).

Classic libpcap format (microsecond timestamps, little-endian magic). Each record is a bare IP
packet (no link layer): IPv4 with a valid header checksum, or IPv6; UDP with checksum 0 on IPv4
(allowed by RFC 768) and a real checksum on IPv6 (where 0 is not allowed). tshark, tcpdump and
scapy all read the result.

    with open(path, "wb") as f:
        write_pcap(f, [udp_packet(payload, dport=4342)])
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import BinaryIO

LINKTYPE_RAW = 101
PCAP_MAGIC = 0xA1B2C3D4
UDP_PROTO = 17
TTL = 64  # IPv4 TTL and IPv6 hop limit of every packet written here
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


def checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_header(src: IPv4Address, dst: IPv4Address, proto: int, payload_len: int) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, 0, 0x4000, TTL, proto, 0, src.packed, dst.packed
    )
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:]


def ipv4_packet(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    """A complete IPv4 packet (valid header checksum) around `payload`."""
    s, d = IPv4Address(src), IPv4Address(dst)
    return ipv4_header(s, d, proto, len(payload)) + payload


def udp_packet(
    payload: bytes,
    *,
    sport: int = 4342,
    dport: int = 4342,
    src: str = "192.0.2.1",
    dst: str = "192.0.2.2",
) -> bytes:
    """An IPv4 or IPv6 (by the address family of `src`) packet carrying one UDP datagram."""
    s, d = ip_address(src), ip_address(dst)
    length = 8 + len(payload)
    if length > 0xFFFF:
        raise ValueError(f"UDP payload too long: {len(payload)} bytes")
    if isinstance(s, IPv4Address) and isinstance(d, IPv4Address):
        udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
        return ipv4_header(s, d, UDP_PROTO, length) + udp
    if isinstance(s, IPv6Address) and isinstance(d, IPv6Address):
        udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
        pseudo = s.packed + d.packed + struct.pack("!IxxxB", length, UDP_PROTO)
        csum = checksum(pseudo + udp) or 0xFFFF
        udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
        return struct.pack("!IHBB16s16s", 6 << 28, length, UDP_PROTO, TTL, s.packed, d.packed) + udp
    raise ValueError(f"mixed address families: {src} -> {dst}")


def write_pcap(out: BinaryIO, packets: Iterable[bytes], *, start: float = 1_700_000_000.0) -> int:
    """Write raw-IP `packets` as a pcap file, one millisecond apart; returns the packet count."""
    out.write(_GLOBAL.pack(PCAP_MAGIC, 2, 4, 0, 0, 65535, LINKTYPE_RAW))
    count = 0
    for count, packet in enumerate(packets, 1):
        micros = int(start * 1_000_000) + count * 1000
        sec, usec = divmod(micros, 1_000_000)
        out.write(_RECORD.pack(sec, usec, len(packet), len(packet)))
        out.write(packet)
    return count
