"""Map-Reply (type 2; RFC 9301 §5.4).

```
|Type=2 |P|E|S|          Reserved               | Record Count  |
|                         Nonce (64)                            |
|   EID-records ... (with RLOC-records)                         |
```
A negative Map-Reply is an EID-record with no locators and an ACT value.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from lisp.errors import DecodeError
from lisp.records import EidRecord, decode_records
from lisp.wire import Reader, check_uint, u64

TYPE = 2
P_BIT = 0x08000000
E_BIT = 0x04000000
S_BIT = 0x02000000
_WORD = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class MapReply:
    nonce: int
    records: tuple[EidRecord, ...]
    probe: bool = False
    echo_nonce_capable: bool = False
    security: bool = False  # S: LISP-SEC data follows (not modelled; tolerated on receive)
    hop_count: int = field(default=0, compare=False)  # lispers.net: bits 16-23 of the reserved

    def encode(self) -> bytes:
        check_uint(len(self.records), 8, "record count")
        word = (TYPE << 28) | len(self.records)
        word |= (P_BIT if self.probe else 0) | (E_BIT if self.echo_nonce_capable else 0)
        word |= S_BIT if self.security else 0
        head = _WORD.pack(word) + u64(self.nonce, "nonce")
        return head + b"".join(r.encode() for r in self.records)

    @classmethod
    def decode(cls, data: bytes) -> MapReply:
        reader = Reader(data)
        word = reader.u32("Map-Reply header")
        if word >> 28 != TYPE:
            raise DecodeError(f"not a Map-Reply: type {word >> 28}")
        nonce = reader.u64("nonce")
        records = decode_records(reader, word & 0xFF)
        return cls(
            nonce=nonce,
            records=records,
            probe=bool(word & P_BIT),
            echo_nonce_capable=bool(word & E_BIT),
            security=bool(word & S_BIT),
            hop_count=(word >> 8) & 0xFF,
        )
