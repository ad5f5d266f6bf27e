"""Map-Request (type 1; RFC 9301 §5.2, flag bits as lispers.net encodes them).

```
|Type=1 |A|M|P|S|p|s|m|I|  Rsvd |N|L|D|   IRC   | Record Count  |
|                         Nonce (64)                            |
|         Source-EID-AFI        |   Source EID Address  ...     |
|         ITR-RLOC-AFI n        |    ITR-RLOC Address n  ...    |   x (IRC + 1)
| Reserved(N)   | EID mask-len  |        EID-Prefix-AFI         |   x Record Count
|                       EID-Prefix  ...                         |
|                   Map-Reply Record (if M)  ...                |
|                   xTR-ID (128) + Site-ID (64) if I            |
```
An RFC 8061 key exchange puts a Security-Key LCAF in place of ITR-RLOC 1.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from lisp.address import NO_ADDRESS, Address, address_bits, decode_address, encode_address
from lisp.errors import DecodeError, EncodeError
from lisp.records import EidRecord
from lisp.wire import Reader, check_uint, u64

TYPE = 1
A_BIT = 0x08000000
M_BIT = 0x04000000
P_BIT = 0x02000000
S_BIT = 0x01000000
PITR_BIT = 0x00800000
SMR_INVOKED_BIT = 0x00400000
MOBILE_BIT = 0x00200000
I_BIT = 0x00100000
NAT_BIT = 0x00008000
LOCAL_BIT = 0x00004000
DONT_REPLY_BIT = 0x00002000
SUBSCRIBE_BIT = 0x80  # top bit of a request record's reserved byte (RFC 9437 pubsub)
_WORD = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One EID-prefix asked about."""

    eid: Address
    mask_len: int
    subscribe: bool = False


@dataclass(frozen=True, slots=True)
class MapRequest:
    nonce: int
    itr_rlocs: tuple[Address, ...]
    records: tuple[RequestRecord, ...]
    source_eid: Address = NO_ADDRESS
    authoritative: bool = False
    probe: bool = False
    smr: bool = False
    pitr: bool = False
    smr_invoked: bool = False
    mobile: bool = False
    decent_nat: bool = False
    local_xtr: bool = False
    dont_map_reply: bool = False
    map_reply_record: EidRecord | None = None  # M bit
    xtr_id: int | None = None  # I bit: 128-bit xTR-ID, then 64-bit Site-ID
    site_id: int = 0

    def encode(self) -> bytes:
        if not 1 <= len(self.itr_rlocs) <= 32:
            raise EncodeError(f"a Map-Request needs 1..32 ITR-RLOCs, got {len(self.itr_rlocs)}")
        check_uint(len(self.records), 8, "record count")
        word = (TYPE << 28) | ((len(self.itr_rlocs) - 1) << 8) | len(self.records)
        for flag, bit in (
            (self.authoritative, A_BIT),
            (self.map_reply_record is not None, M_BIT),
            (self.probe, P_BIT),
            (self.smr, S_BIT),
            (self.pitr, PITR_BIT),
            (self.smr_invoked, SMR_INVOKED_BIT),
            (self.mobile, MOBILE_BIT),
            (self.xtr_id is not None, I_BIT),
            (self.decent_nat, NAT_BIT),
            (self.local_xtr, LOCAL_BIT),
            (self.dont_map_reply, DONT_REPLY_BIT),
        ):
            if flag:
                word |= bit
        parts = [_WORD.pack(word), u64(self.nonce, "nonce"), encode_address(self.source_eid)]
        parts.extend(encode_address(rloc) for rloc in self.itr_rlocs)
        for record in self.records:
            check_uint(record.mask_len, 8, "EID mask-len")
            if record.mask_len > address_bits(record.eid):
                raise EncodeError(f"EID mask-len {record.mask_len} too long for {record.eid}")
            reserved = SUBSCRIBE_BIT if record.subscribe else 0
            parts.append(bytes((reserved, record.mask_len)) + encode_address(record.eid))
        if self.map_reply_record is not None:
            parts.append(self.map_reply_record.encode())
        if self.xtr_id is not None:
            check_uint(self.xtr_id, 128, "xTR-ID")
            parts.append(self.xtr_id.to_bytes(16, "big") + u64(self.site_id, "site-id"))
        elif self.site_id:
            raise EncodeError(f"site-id {self.site_id} needs an xTR-ID (the I bit)")
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> MapRequest:
        reader = Reader(data)
        word = reader.u32("Map-Request header")
        if word >> 28 != TYPE:
            raise DecodeError(f"not a Map-Request: type {word >> 28}")
        nonce = reader.u64("nonce")
        source_eid = decode_address(reader)
        itr_rlocs = tuple(decode_address(reader) for _ in range(((word >> 8) & 0x1F) + 1))
        records = []
        for _ in range(word & 0xFF):
            reserved, mask_len = reader.u8("record reserved"), reader.u8("EID mask-len")
            eid = decode_address(reader)
            records.append(RequestRecord(eid, mask_len, bool(reserved & SUBSCRIBE_BIT)))
        reply_record = EidRecord.decode_from(reader) if word & M_BIT else None
        xtr_id, site_id = None, 0
        if word & I_BIT:
            xtr_id = int.from_bytes(reader.take(16, "xTR-ID"), "big")
            site_id = reader.u64("site-id")
        # Anything after this (e.g. LISP-SEC data) is tolerated: lenient on receive.
        return cls(
            nonce=nonce,
            itr_rlocs=itr_rlocs,
            records=tuple(records),
            source_eid=source_eid,
            authoritative=bool(word & A_BIT),
            probe=bool(word & P_BIT),
            smr=bool(word & S_BIT),
            pitr=bool(word & PITR_BIT),
            smr_invoked=bool(word & SMR_INVOKED_BIT),
            mobile=bool(word & MOBILE_BIT),
            decent_nat=bool(word & NAT_BIT),
            local_xtr=bool(word & LOCAL_BIT),
            dont_map_reply=bool(word & DONT_REPLY_BIT),
            map_reply_record=reply_record,
            xtr_id=xtr_id,
            site_id=site_id,
        )
