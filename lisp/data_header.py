"""The 8-byte LISP data-plane header (RFC 9300 §5.3, key-id bits from RFC 8061 §6).

```
|N|L|E|V|I|R|K|K|            Nonce/Map-Version                  |
|                 Instance ID/Locator-Status-Bits               |
```
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from lisp.errors import DecodeError, EncodeError
from lisp.wire import check_uint

N_BIT = 0x80000000
L_BIT = 0x40000000
E_BIT = 0x20000000
V_BIT = 0x10000000
I_BIT = 0x08000000
R_BIT = 0x04000000
KEY_ID_SHIFT = 24
HEADER_LEN = 8
_HEADER = struct.Struct("!II")


@dataclass(frozen=True, slots=True)
class DataHeader:
    nonce: int | None = None  # 24 bits; N bit
    echo_nonce_request: bool = False  # E bit (requires a nonce)
    lsb: int | None = None  # locator-status-bits; L bit (8 bits with an IID, else 32)
    instance_id: int | None = None  # 24 bits; I bit
    source_map_version: int | None = None  # V bit: 12 + 12 bits, exclusive with N
    dest_map_version: int | None = None
    key_id: int = 0  # RFC 8061 KK: 0 = plaintext, 1..3 = key slot
    reserved_r: bool = False  # R bit, reserved in RFC 9300; kept so decode->encode is lossless

    def encode(self) -> bytes:
        word0 = 0
        versioned = self.source_map_version is not None or self.dest_map_version is not None
        if self.nonce is not None:
            if versioned:
                raise EncodeError("data header cannot carry both a nonce and map-versions")
            word0 |= N_BIT | check_uint(self.nonce, 24, "nonce")
        elif self.echo_nonce_request:
            raise EncodeError("echo-nonce request (E) needs a nonce (N)")
        if self.echo_nonce_request:
            word0 |= E_BIT
        if versioned:
            if self.source_map_version is None or self.dest_map_version is None:
                raise EncodeError("V bit: give both source and dest map-versions, or neither")
            src = check_uint(self.source_map_version, 12, "source map-version")
            dst = check_uint(self.dest_map_version, 12, "dest map-version")
            word0 |= V_BIT | (src << 12) | dst
        if self.reserved_r:
            word0 |= R_BIT
        word0 |= check_uint(self.key_id, 2, "key-id") << KEY_ID_SHIFT
        if self.instance_id is not None:
            word0 |= I_BIT
            word1 = check_uint(self.instance_id, 24, "instance-id") << 8
            if self.lsb is not None:
                word0 |= L_BIT
                word1 |= check_uint(self.lsb, 8, "locator-status-bits")
        else:
            word1 = 0
            if self.lsb is not None:
                word0 |= L_BIT
                word1 = check_uint(self.lsb, 32, "locator-status-bits")
        return _HEADER.pack(word0, word1)

    @classmethod
    def decode(cls, data: bytes | memoryview) -> DataHeader:
        if len(data) < HEADER_LEN:
            raise DecodeError(f"LISP data header needs 8 bytes, got {len(data)}")
        word0, word1 = _HEADER.unpack_from(data)
        nonce = word0 & 0xFFFFFF if word0 & N_BIT else None
        src_v = dst_v = None
        if word0 & V_BIT and not word0 & N_BIT:
            src_v, dst_v = (word0 >> 12) & 0xFFF, word0 & 0xFFF
        if word0 & I_BIT:
            iid: int | None = word1 >> 8
            lsb = word1 & 0xFF if word0 & L_BIT else None
        else:
            iid = None
            lsb = word1 if word0 & L_BIT else None
        return cls(
            nonce=nonce,
            echo_nonce_request=bool(word0 & E_BIT) and nonce is not None,
            lsb=lsb,
            instance_id=iid,
            source_map_version=src_v,
            dest_map_version=dst_v,
            key_id=(word0 >> KEY_ID_SHIFT) & 3,
            reserved_r=bool(word0 & R_BIT),
        )
