"""Encapsulated Control Message (type 8; RFC 9301 §5.8).

```
|Type=8 |S|D|E|M|            Reserved                           |
 inner IPv4/IPv6 header | inner UDP (sport = reply port, dport 4342) | LISP control message
```
The inner message stays raw bytes: an RTR or map-server may need to relay it unchanged, and a
relayed Map-Register's HMAC covers exactly those bytes. `decode_control` the `message` to read it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from lisp.address import IpAddress
from lisp.errors import DecodeError, EncodeError
from lisp.wire import Reader, check_uint

TYPE = 8
SEC_BIT = 0x08
DDT_BIT = 0x04
TO_ETR_BIT = 0x02
TO_MS_BIT = 0x01
CONTROL_PORT = 4342
UDP_PROTO = 17


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement sum (control plane only: a few hundred bytes at most)."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    return ~_fold(total) & 0xFFFF


def udp_checksum(src: IpAddress, dst: IpAddress, udp: bytes) -> int:
    if isinstance(src, IPv4Address):
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, UDP_PROTO, len(udp))
    else:
        pseudo = src.packed + dst.packed + struct.pack("!IxxxB", len(udp), UDP_PROTO)
    checksum = internet_checksum(pseudo + udp)
    return checksum or 0xFFFF  # 0 means "no checksum" in UDP: send all-ones instead


@dataclass(frozen=True, slots=True)
class EncapsulatedControl:
    inner_source: IpAddress
    inner_dest: IpAddress
    message: bytes
    source_port: int = CONTROL_PORT
    dest_port: int = CONTROL_PORT
    security: bool = False
    ddt: bool = False
    to_etr: bool = False
    to_ms: bool = False
    ttl: int = 64

    def encode(self) -> bytes:
        if type(self.inner_source) is not type(self.inner_dest):
            raise EncodeError("ECM inner source and destination must be the same IP version")
        check_uint(self.source_port, 16, "ECM inner source port")
        check_uint(self.dest_port, 16, "ECM inner dest port")
        check_uint(self.ttl, 8, "ECM inner TTL")
        flags = (SEC_BIT if self.security else 0) | (DDT_BIT if self.ddt else 0)
        flags |= (TO_ETR_BIT if self.to_etr else 0) | (TO_MS_BIT if self.to_ms else 0)
        udp_len = 8 + len(self.message)
        if udp_len > 0xFFFF - 40:
            raise EncodeError(f"ECM inner message too long ({len(self.message)} bytes)")
        udp = struct.pack("!HHHH", self.source_port, self.dest_port, udp_len, 0) + self.message
        csum = udp_checksum(self.inner_source, self.inner_dest, udp)
        udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
        if isinstance(self.inner_source, IPv4Address):
            header = struct.pack(
                "!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0, self.ttl, UDP_PROTO, 0,
                self.inner_source.packed, self.inner_dest.packed,
            )  # fmt: skip
            header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
        else:
            header = struct.pack(
                "!IHBB16s16s", 6 << 28, udp_len, UDP_PROTO, self.ttl,
                self.inner_source.packed, self.inner_dest.packed,
            )  # fmt: skip
        return bytes(((TYPE << 4) | flags, 0, 0, 0)) + header + udp

    @classmethod
    def decode(cls, data: bytes) -> EncapsulatedControl:
        reader = Reader(data)
        first = reader.u32("ECM header")
        if first >> 28 != TYPE:
            raise DecodeError(f"not an ECM: type {first >> 28}")
        flags = (first >> 24) & 0x0F
        version = reader.u8("inner IP version") >> 4
        reader.pos -= 1
        src: IpAddress
        dst: IpAddress
        if version == 4:
            ihl = (reader.u8("IPv4 IHL") & 0x0F) * 4
            reader.u8("TOS")
            total = reader.u16("IPv4 total length")
            reader.take(4, "IPv4 id/frag")
            ttl, proto = reader.u8("TTL"), reader.u8("protocol")
            reader.u16("IPv4 checksum")
            src = IPv4Address(reader.take(4, "inner source"))
            dst = IPv4Address(reader.take(4, "inner destination"))
            if ihl < 20:
                raise DecodeError(f"inner IPv4 header length {ihl} < 20")
            reader.take(ihl - 20, "IPv4 options")
            payload_len = total - ihl
        elif version == 6:
            reader.u32("IPv6 version/class/flow")
            payload_len = reader.u16("IPv6 payload length")
            proto, ttl = reader.u8("next header"), reader.u8("hop limit")
            src = IPv6Address(reader.take(16, "inner source"))
            dst = IPv6Address(reader.take(16, "inner destination"))
        else:
            raise DecodeError(f"ECM inner packet has IP version {version}")
        if proto != UDP_PROTO:
            raise DecodeError(f"ECM inner packet is protocol {proto}, not UDP")
        sport, dport = reader.u16("inner source port"), reader.u16("inner dest port")
        udp_len = reader.u16("inner UDP length")
        reader.u16("inner UDP checksum")
        if udp_len < 8 or udp_len > payload_len:
            raise DecodeError(f"inner UDP length {udp_len} inconsistent with IP length")
        message = reader.take(udp_len - 8, "ECM inner message")
        return cls(
            inner_source=src,
            inner_dest=dst,
            message=message,
            source_port=sport,
            dest_port=dport,
            security=bool(flags & SEC_BIT),
            ddt=bool(flags & DDT_BIT),
            to_etr=bool(flags & TO_ETR_BIT),
            to_ms=bool(flags & TO_MS_BIT),
            ttl=ttl,
        )
