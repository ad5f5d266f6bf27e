"""Info-Request / Info-Reply (type 7; NAT traversal, draft-ermagan-lisp-nat-traversal).

```
|Type=7 |R|            Reserved                                 |   R=1 for Info-Reply
|                         Nonce (64)                            |
|    Key ID     | Algorithm ID  |  Authentication Data Length   |
~                     Authentication Data                       ~
|                              TTL                              |
|   Reserved    | EID mask-len  |        EID-prefix-AFI         |
|                          EID-prefix                           |
 Request:  AFI=0 (lispers.net: AFI 17 hostname)   Reply: NAT-Traversal LCAF
```
Lenient: lispers.net writes a NAT-LCAF Length that covers neither the hostname nor the RTR list,
so in an Info-Reply the NAT-LCAF body is read to the end of the message (lisp-wire.md vector C).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from lisp.address import (
    AFI_LCAF,
    NO_ADDRESS,
    Address,
    NoAddress,
    address_bits,
    decode_address,
    encode_address,
)
from lisp.auth import AuthAlg, auth_length
from lisp.errors import DecodeError, EncodeError
from lisp.lcaf import LCAF_NAT, decode_lcaf_fields
from lisp.wire import Reader, check_uint, u8, u16, u32, u64

TYPE = 7
REPLY_BIT = 0x08000000
_WORD = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class InfoMessage:
    nonce: int
    is_reply: bool = False
    key_id: int = 0
    alg_id: int = AuthAlg.NONE
    auth_data: bytes = b""
    ttl: int = 0  # minutes
    eid: Address = NO_ADDRESS
    mask_len: int = 0
    payload: Address = NO_ADDRESS  # request: AFI 0 or a hostname; reply: a NatTraversal LCAF

    def encode(self) -> bytes:
        expected = auth_length(self.alg_id)
        if self.auth_data and len(self.auth_data) != expected:
            raise EncodeError(f"auth data is {len(self.auth_data)} bytes, need {expected}")
        check_uint(self.mask_len, 8, "EID mask-len")
        if self.mask_len > address_bits(self.eid) and not isinstance(self.eid, NoAddress):
            raise EncodeError(f"EID mask-len {self.mask_len} too long for {self.eid}")
        auth = self.auth_data or bytes(expected)
        return (
            _WORD.pack((TYPE << 28) | (REPLY_BIT if self.is_reply else 0))
            + u64(self.nonce, "nonce")
            + u8(self.key_id, "key id")
            + u8(self.alg_id, "algorithm id")
            + u16(len(auth))
            + auth
            + u32(self.ttl, "TTL")
            + bytes((0, self.mask_len))
            + encode_address(self.eid)
            + encode_address(self.payload)
        )

    @classmethod
    def decode(cls, data: bytes) -> InfoMessage:
        reader = Reader(data)
        word = reader.u32("Info header")
        if word >> 28 != TYPE:
            raise DecodeError(f"not an Info message: type {word >> 28}")
        nonce = reader.u64("nonce")
        key_id, alg_id = reader.u8("key id"), reader.u8("algorithm id")
        auth_data = reader.take(reader.u16("auth data length"), "auth data")
        ttl = reader.u32("TTL")
        reader.u8("reserved")
        mask_len = reader.u8("EID mask-len")
        eid = decode_address(reader)
        payload = _decode_payload(reader) if reader.remaining else NoAddress()
        return cls(
            nonce, bool(word & REPLY_BIT), key_id, alg_id, auth_data, ttl, eid, mask_len, payload
        )


def _decode_payload(reader: Reader) -> Address:
    start = reader.pos
    if reader.remaining >= 8 and reader.u16("AFI") == AFI_LCAF:
        reader.u16("LCAF rsvd1/flags")
        lcaf_type, rsvd2 = reader.u8("LCAF type"), reader.u8("LCAF rsvd2")
        length = reader.u16("LCAF length")
        if lcaf_type == LCAF_NAT:
            if length > reader.remaining:
                raise DecodeError(f"NAT LCAF length {length} past the end of the message")
            body = reader.sub(reader.remaining, "NAT LCAF body")
            return decode_lcaf_fields(lcaf_type, rsvd2, body, 1)
    reader.pos = start
    return decode_address(reader)
