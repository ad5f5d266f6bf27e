"""Map-Register (type 3), Map-Notify (4) and Map-Notify-Ack (5) (RFC 9301 §5.6-5.7).

```
|Type=3 |P|S|I|R|      Reserved             |E|T|a|m|M| Record Count  |
|                         Nonce (64)                            |
|    Key ID (8) | Algorithm ID (8) |  Authentication Data Length |
~                     Authentication Data                       ~
|   EID-records ...                                             |
|   xTR-ID (128)  |  Site-ID (64)        -- only if I           |
```
Map-Notify and Map-Notify-Ack share the layout; the NAT-traversal draft gives them I (0x08000000)
and R (0x04000000). Build a message with `auth_data=b""` and sign it with `lisp.auth.sign`.
Trailing bytes after the records are tolerated: the lispers.net map-server copies the xTR-ID
into its Map-Notify without setting I (lisp-wire.md vector B).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from lisp.auth import AuthAlg, auth_length
from lisp.errors import DecodeError, EncodeError
from lisp.records import EidRecord, decode_records
from lisp.wire import Reader, check_uint, u8, u16, u64

REGISTER_TYPE = 3
NOTIFY_TYPE = 4
NOTIFY_ACK_TYPE = 5

# Map-Register flags.
PROXY_BIT = 0x08000000
SEC_BIT = 0x04000000
REG_I_BIT = 0x02000000
REG_RTR_BIT = 0x01000000  # NAT-traversal draft: "built for RTR"
EID_NOTIFY_BIT = 0x00001000
TTL_BIT = 0x00000800
MERGE_BIT = 0x00000400
MOBILE_BIT = 0x00000200
WANT_NOTIFY_BIT = 0x00000100
# Map-Notify / Map-Notify-Ack flags (NAT-traversal draft).
NOTIFY_I_BIT = 0x08000000
NOTIFY_RTR_BIT = 0x04000000

_WORD = struct.Struct("!I")


def _auth_block(key_id: int, alg_id: int, auth_data: bytes) -> bytes:
    try:
        expected = auth_length(alg_id)
    except EncodeError:
        raise
    if auth_data and len(auth_data) != expected:
        raise EncodeError(
            f"auth data is {len(auth_data)} bytes, algorithm {alg_id} needs {expected}"
        )
    data = auth_data or bytes(expected)
    return u8(key_id, "key id") + u8(alg_id, "algorithm id") + u16(len(data)) + data


def _xtr_block(xtr_id: int | None, site_id: int) -> bytes:
    if xtr_id is None:
        if site_id:
            raise EncodeError(f"site-id {site_id} needs an xTR-ID (the I bit)")
        return b""
    check_uint(xtr_id, 128, "xTR-ID")
    return xtr_id.to_bytes(16, "big") + u64(site_id, "site-id")


@dataclass(frozen=True, slots=True)
class _Head:
    word: int
    nonce: int
    key_id: int
    alg_id: int
    auth_data: bytes
    records: tuple[EidRecord, ...]
    xtr_id: int | None
    site_id: int


def _decode(data: bytes, msg_type: int, i_bit: int, name: str) -> _Head:
    reader = Reader(data)
    word = reader.u32(f"{name} header")
    if word >> 28 != msg_type:
        raise DecodeError(f"not a {name}: type {word >> 28}")
    nonce = reader.u64("nonce")
    key_id, alg_id = reader.u8("key id"), reader.u8("algorithm id")
    auth_data = reader.take(reader.u16("auth data length"), "auth data")
    records = decode_records(reader, word & 0xFF)
    xtr_id, site_id = None, 0
    if word & i_bit:
        xtr_id = int.from_bytes(reader.take(16, "xTR-ID"), "big")
        site_id = reader.u64("site-id")
    return _Head(word, nonce, key_id, alg_id, auth_data, records, xtr_id, site_id)


def _encode(
    word: int, nonce: int, key_id: int, alg_id: int, auth_data: bytes,
    records: tuple[EidRecord, ...], xtr_id: int | None, site_id: int,
) -> bytes:  # fmt: skip
    check_uint(len(records), 8, "record count")
    return (
        _WORD.pack(word | len(records))
        + u64(nonce, "nonce")
        + _auth_block(key_id, alg_id, auth_data)
        + b"".join(r.encode() for r in records)
        + _xtr_block(xtr_id, site_id)
    )


@dataclass(frozen=True, slots=True)
class MapRegister:
    nonce: int
    records: tuple[EidRecord, ...]
    key_id: int = 0
    alg_id: int = AuthAlg.HMAC_SHA_256_128
    auth_data: bytes = b""  # empty = zeros of the algorithm's length, to be signed
    proxy_reply: bool = False
    lisp_sec: bool = False
    rtr: bool = False
    eid_notify: bool = False
    ttl_timeout: bool = False  # T: use the record TTL as the registration timeout
    merge: bool = False
    mobile: bool = False
    want_map_notify: bool = False
    xtr_id: int | None = None
    site_id: int = 0

    def encode(self) -> bytes:
        word = REGISTER_TYPE << 28
        for flag, bit in (
            (self.proxy_reply, PROXY_BIT),
            (self.lisp_sec, SEC_BIT),
            (self.xtr_id is not None, REG_I_BIT),
            (self.rtr, REG_RTR_BIT),
            (self.eid_notify, EID_NOTIFY_BIT),
            (self.ttl_timeout, TTL_BIT),
            (self.merge, MERGE_BIT),
            (self.mobile, MOBILE_BIT),
            (self.want_map_notify, WANT_NOTIFY_BIT),
        ):
            if flag:
                word |= bit
        return _encode(
            word, self.nonce, self.key_id, self.alg_id, self.auth_data,
            self.records, self.xtr_id, self.site_id,
        )  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> MapRegister:
        h = _decode(data, REGISTER_TYPE, REG_I_BIT, "Map-Register")
        w = h.word
        return cls(
            nonce=h.nonce,
            records=h.records,
            key_id=h.key_id,
            alg_id=h.alg_id,
            auth_data=h.auth_data,
            proxy_reply=bool(w & PROXY_BIT),
            lisp_sec=bool(w & SEC_BIT),
            rtr=bool(w & REG_RTR_BIT),
            eid_notify=bool(w & EID_NOTIFY_BIT),
            ttl_timeout=bool(w & TTL_BIT),
            merge=bool(w & MERGE_BIT),
            mobile=bool(w & MOBILE_BIT),
            want_map_notify=bool(w & WANT_NOTIFY_BIT),
            xtr_id=h.xtr_id,
            site_id=h.site_id,
        )


@dataclass(frozen=True, slots=True)
class MapNotify:
    """A map-server's acknowledgement of a Map-Register (or an unsolicited change notice)."""

    nonce: int
    records: tuple[EidRecord, ...]
    key_id: int = 0
    alg_id: int = AuthAlg.HMAC_SHA_256_128
    auth_data: bytes = b""
    rtr: bool = False
    xtr_id: int | None = None
    site_id: int = 0

    TYPE = NOTIFY_TYPE
    NAME = "Map-Notify"

    def encode(self) -> bytes:
        word = (self.TYPE << 28) | (NOTIFY_I_BIT if self.xtr_id is not None else 0)
        word |= NOTIFY_RTR_BIT if self.rtr else 0
        return _encode(
            word, self.nonce, self.key_id, self.alg_id, self.auth_data,
            self.records, self.xtr_id, self.site_id,
        )  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> MapNotify:
        h = _decode(data, cls.TYPE, NOTIFY_I_BIT, cls.NAME)
        return cls(
            nonce=h.nonce,
            records=h.records,
            key_id=h.key_id,
            alg_id=h.alg_id,
            auth_data=h.auth_data,
            rtr=bool(h.word & NOTIFY_RTR_BIT),
            xtr_id=h.xtr_id,
            site_id=h.site_id,
        )


@dataclass(frozen=True, slots=True)
class MapNotifyAck(MapNotify):
    """An xTR's acknowledgement of an unsolicited Map-Notify; same layout, type 5."""

    TYPE = NOTIFY_ACK_TYPE
    NAME = "Map-Notify-Ack"
