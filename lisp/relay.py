"""The relay frame: how a packet crosses an RTR without the RTR opening it (sans-IO).

A node behind a NAT cannot be reached at an address of its own, so its traffic goes through an
RTR, which reaches it through the NAT binding its keepalives hold open (lisp.rtr_bindings). The
end nodes keep their RFC 8061 keys between themselves: the RTR rewrites the outer IP/UDP header
only, and the sender tells it where the packet goes in a shim in front of the end-to-end packet:

```
 outer IP / UDP (dport 4341)
| LISP data header: I=1, instance-id 0xFFFFFE (relay), key-id 0   |  8 bytes
| AFI | destination: an IP RLOC (the RTR sends to it, UDP 4341), or |
|     |   AFI 17 name: the node behind a NAT whose binding it holds |
| AFI | source: the original sender's RLOC | source UDP port (16) |
| the end-to-end packet, untouched: a LISP data packet sealed by   |
|   the sender for the receiver, or a data-plane control message   |
|   (instance-id 0xFFFFFF header + Map-Request/Reply or ECM)        |
```
The receiver opens the inner packet with the key it holds for the *source* RLOC (its decap keys
are indexed by the sender's RLOC, which the outer header no longer shows); the AEAD proves the
sender whatever the shim says, so a forged source only picks a key that then fails. Control
messages answer to the source address and port. Instance-id 0xFFFFFE is outside the 24-bit
instance-ids the mesh hands out (it stops below 0xFFFFFE), like lispers.net's 0xFFFFFF.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from lisp.address import Address, DistinguishedName, decode_address, encode_address
from lisp.data_header import HEADER_LEN, DataHeader
from lisp.errors import DecodeError
from lisp.wire import Reader

RELAY_IID = 0xFFFFFE
CONTROL_IID = 0xFFFFFF  # lisp.rtr_bindings: a data-plane control message
_RELAY_HEADER = DataHeader(instance_id=RELAY_IID).encode()
_CONTROL_HEADER = DataHeader(instance_id=CONTROL_IID).encode()
IpAddress = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class RelayFrame:
    destination: IpAddress | str  # an RLOC, or the name of a node behind the RTR
    source: IpAddress
    source_port: int
    payload: bytes


def relay_prefix(destination: IpAddress | str, source: IpAddress, source_port: int) -> bytes:
    """The shim to put in front of end-to-end packets to `destination` (computed once a path)."""
    dest: Address = DistinguishedName(destination) if isinstance(destination, str) else destination
    return (
        _RELAY_HEADER
        + encode_address(dest)
        + encode_address(source)
        + struct.pack("!H", source_port)
    )


def encode(frame: RelayFrame) -> bytes:
    return relay_prefix(frame.destination, frame.source, frame.source_port) + frame.payload


def is_relay(packet: bytes) -> bool:
    """Cheap test on the hot path: key-id 0, I bit, instance-id 0xFFFFFE."""
    return len(packet) >= HEADER_LEN and packet[0] & 0x0B == 0x08 and packet[4:7] == b"\xff\xff\xfe"


def is_control(packet: bytes) -> bool:
    """A data-plane control message (instance-id 0xFFFFFF, key-id 0)."""
    return len(packet) >= HEADER_LEN and packet[0] & 0x0B == 0x08 and packet[4:7] == b"\xff\xff\xff"


def decode(packet: bytes) -> RelayFrame:
    """DecodeError (only) for anything that is not a well-formed relay frame."""
    if not is_relay(packet):
        raise DecodeError("not a relay frame (instance-id 0xFFFFFE, key-id 0)")
    reader = Reader(packet)
    reader.take(HEADER_LEN, "relay header")
    dest = decode_address(reader)
    source = decode_address(reader)
    port = reader.u16("relay source port")
    if isinstance(dest, DistinguishedName):
        destination: IpAddress | str = dest.name
    elif isinstance(dest, IPv4Address | IPv6Address):
        destination = dest
    else:
        raise DecodeError(f"relay destination {dest!r} is neither an RLOC nor a node name")
    if not isinstance(source, IPv4Address | IPv6Address):
        raise DecodeError(f"relay source {source!r} is not an RLOC")
    payload = packet[reader.pos :]
    if len(payload) < HEADER_LEN:
        raise DecodeError("relay frame without a LISP packet inside")
    return RelayFrame(destination, source, port, payload)


def control_frame(message: bytes) -> bytes:
    """A control message (Map-Request, Map-Reply, ECM, Info) to carry on the data port."""
    return _CONTROL_HEADER + message


def control_message(packet: bytes) -> bytes:
    """The control message of a data-plane control packet; DecodeError if it is none."""
    if not is_control(packet):
        raise DecodeError("not a data-plane control message (instance-id 0xFFFFFF, key-id 0)")
    return packet[HEADER_LEN:]
