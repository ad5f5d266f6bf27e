"""EID-records and RLOC-records, shared by Map-Reply, Map-Register and Map-Notify (RFC 9301 §5.4).

```
|                          Record TTL (minutes)                 |
| Locator Count | EID mask-len  | ACT |A|      Reserved         |
| Rsvd  |  Map-Version Number   |        EID-Prefix-AFI         |
|                          EID-Prefix ...                       |
|    Priority   |    Weight     |  M Priority   |   M Weight    |   x Locator Count
|        Unused Flags     |L|p|R|           Loc-AFI             |
|                             Locator ...                       |
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

from lisp.address import Address, address_bits, decode_address, encode_address
from lisp.errors import EncodeError
from lisp.lcaf import InstanceId
from lisp.wire import Reader, check_uint, u8, u16, u32

TTL_UNLIMITED = 0xFFFFFFFF


class Action(IntEnum):
    """Map-Reply ACT values (IANA registry of RFC 9301). Decoded by value, never by name."""

    NO_ACTION = 0
    NATIVELY_FORWARD = 1
    SEND_MAP_REQUEST = 2
    DROP_NO_REASON = 3
    DROP_POLICY_DENIED = 4
    DROP_AUTH_FAILURE = 5
    # lispers.net private values, accepted on receive.
    SEND_PUBSUB = 6
    NOT_REGISTERED_YET = 7


@dataclass(frozen=True, slots=True)
class RlocRecord:
    address: Address
    priority: int = 1
    weight: int = 100
    m_priority: int = 255
    m_weight: int = 0
    local: bool = False
    probed: bool = False
    reachable: bool = True

    def encode(self) -> bytes:
        flags = (4 if self.local else 0) | (2 if self.probed else 0) | (1 if self.reachable else 0)
        return (
            u8(self.priority, "RLOC priority")
            + u8(self.weight, "RLOC weight")
            + u8(self.m_priority, "RLOC m-priority")
            + u8(self.m_weight, "RLOC m-weight")
            + u16(flags)
            + encode_address(self.address)
        )

    @classmethod
    def decode_from(cls, reader: Reader) -> RlocRecord:
        priority, weight = reader.u8("RLOC priority"), reader.u8("RLOC weight")
        m_priority, m_weight = reader.u8("RLOC m-priority"), reader.u8("RLOC m-weight")
        flags = reader.u16("RLOC flags")
        address = decode_address(reader)
        return cls(
            address, priority, weight, m_priority, m_weight,
            bool(flags & 4), bool(flags & 2), bool(flags & 1),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class EidRecord:
    eid: Address
    mask_len: int
    rlocs: tuple[RlocRecord, ...] = ()
    ttl: int = 1440  # minutes
    action: int = Action.NO_ACTION
    authoritative: bool = False
    map_version: int = 0
    # Bits RFC 9301 reserves (lispers.net puts its own flags there); kept only for inspection.
    reserved: int = field(default=0, compare=False)

    def encode(self) -> bytes:
        check_uint(len(self.rlocs), 8, "locator count")
        check_uint(self.mask_len, 8, "EID mask-len")
        if self.mask_len > address_bits(self.eid):
            raise EncodeError(f"EID mask-len {self.mask_len} too long for {self.eid}")
        check_uint(self.action, 3, "ACT")
        act_a = (self.action << 13) | (0x1000 if self.authoritative else 0)
        return (
            u32(self.ttl, "record TTL")
            + bytes((len(self.rlocs), self.mask_len))
            + u16(act_a)
            + u16(check_uint(self.map_version, 12, "map-version"))
            + encode_address(self.eid)
            + b"".join(r.encode() for r in self.rlocs)
        )

    @classmethod
    def decode_from(cls, reader: Reader) -> EidRecord:
        ttl = reader.u32("record TTL")
        count, mask_len = reader.u8("locator count"), reader.u8("EID mask-len")
        act_a = reader.u16("ACT/A")
        version = reader.u16("map-version") & 0x0FFF
        eid = decode_address(reader)
        rlocs = tuple(RlocRecord.decode_from(reader) for _ in range(count))
        return cls(
            eid, mask_len, rlocs, ttl, act_a >> 13, bool(act_a & 0x1000), version, act_a & 0x0FFF
        )

    @property
    def instance_id(self) -> int:
        return self.eid.iid if isinstance(self.eid, InstanceId) else 0

    @property
    def prefix(self) -> IPv4Network | IPv6Network:
        """The EID-prefix as an ip_network (host bits masked off); ValueError if not IP."""
        return eid_prefix(self.eid, self.mask_len)


def eid_prefix(eid: Address, mask_len: int) -> IPv4Network | IPv6Network:
    inner = eid.address if isinstance(eid, InstanceId) else eid
    if not isinstance(inner, IPv4Address | IPv6Address):
        raise ValueError(f"EID {eid} is not an IP address")
    return ip_network((inner, mask_len), strict=False)


def decode_records(reader: Reader, count: int) -> tuple[EidRecord, ...]:
    return tuple(EidRecord.decode_from(reader) for _ in range(count))
