"""A minimal pcap writer: UDP datagrams in IPv4 (LINKTYPE_RAW), for tshark to read.

Used by the demo and by tests that take tshark as an independent decoder of our bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from ipaddress import IPv4Address
from pathlib import Path

LINKTYPE_RAW = 101
_GLOBAL_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW)


def _checksum(header: bytes) -> int:
    total = int(sum(struct.unpack(f"!{len(header) // 2}H", header)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp(src: IPv4Address, dst: IPv4Address, sport: int, dport: int, payload: bytes) -> bytes:
    """An IPv4/UDP packet around `payload` (UDP checksum 0, which IPv4 allows)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, src.packed, dst.packed
    )
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp


def write_pcap(path: Path, packets: Iterable[bytes]) -> None:
    """Write raw IPv4 packets, one per record, one microsecond apart."""
    with path.open("wb") as out:
        out.write(_GLOBAL_HEADER)
        for index, packet in enumerate(packets):
            out.write(struct.pack("<IIII", 1, index, len(packet), len(packet)))
            out.write(packet)
