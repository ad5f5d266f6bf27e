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

For a map-server: `split_register` reads a Map-Register into header fields plus each EID-record's
own bytes (struct calls for the plain IPv4/IPv6 shape, the full decoder otherwise; DecodeError
exactly when `MapRegister.decode` raises), `notify_from_register` builds the signed Map-Notify
from those bytes (byte-identical to encoding a `MapNotify`), `decode_record` decodes kept bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from lisp.address import Address
from lisp.auth import AuthAlg, auth_length, compute, sign
from lisp.errors import DecodeError, EncodeError
from lisp.lcaf import InstanceId
from lisp.records import EidRecord, RlocRecord, decode_records
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
    spans: tuple[tuple[int, int], ...] = ()  # (start, end) of each record, if asked for
    end: int = 0  # offset after the records and the xTR-ID/Site-ID


def _decode(data: bytes, msg_type: int, i_bit: int, name: str, spans: bool = False) -> _Head:
    reader = Reader(data)
    word = reader.u32(f"{name} header")
    if word >> 28 != msg_type:
        raise DecodeError(f"not a {name}: type {word >> 28}")
    nonce = reader.u64("nonce")
    key_id, alg_id = reader.u8("key id"), reader.u8("algorithm id")
    auth_data = reader.take(reader.u16("auth data length"), "auth data")
    where: list[tuple[int, int]] = []
    if spans:
        decoded = []
        for _ in range(word & 0xFF):
            start = reader.pos
            decoded.append(EidRecord.decode_from(reader))
            where.append((start, reader.pos))
        records = tuple(decoded)
    else:
        records = decode_records(reader, word & 0xFF)
    xtr_id, site_id = None, 0
    if word & i_bit:
        xtr_id = int.from_bytes(reader.take(16, "xTR-ID"), "big")
        site_id = reader.u64("site-id")
    return _Head(
        word, nonce, key_id, alg_id, auth_data, records, xtr_id, site_id, tuple(where), reader.pos
    )


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
        return cls._from_head(_decode(data, REGISTER_TYPE, REG_I_BIT, "Map-Register"))

    @classmethod
    def _from_head(cls, h: _Head) -> MapRegister:
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


# ---------------------------------------------------------------------------------------------
# A map-server's view of a Map-Register: records as raw bytes, the Map-Notify from those bytes

# (raw record bytes, record TTL, instance-id, IP version (0: the EID is not IP), EID as an int,
# EID mask-len)
RecordParts = tuple[bytes, int, int, int, int, int]

_REG_HEAD = struct.Struct("!IQBBH")  # word, nonce, key-id, algorithm id, auth data length
_RECORD_HEAD = struct.Struct("!IBBHHH")  # TTL, locator count, mask-len, ACT/A, map-version, AFI
_IID_LCAF = struct.Struct("!HBBHIH")  # rsvd1/flags, type, rsvd2, length, instance-id, inner AFI
_RLOC_HEAD = struct.Struct("!4xHH")  # (priorities, weights), flags, AFI
_AFI_LENGTH = {1: 4, 2: 16}  # plain IPv4 / IPv6
_LCAF_AFI = 16387


@dataclass(slots=True)
class RegisterParts:
    """A Map-Register split the way a map-server uses it (see `split_register`).

    `records` holds each EID-record's own bytes with the fields a map-server keys on, so it can
    keep the bytes (compact) and compare a refresh with what it holds byte for byte. `message` is
    the full decode when the message is not of the plain shape the fast path reads (then a
    Map-Notify is built through the encoder); None otherwise.
    """

    word: int
    nonce: int
    key_id: int
    alg_id: int
    auth_end: int  # where the records start
    records: list[RecordParts]
    end: int  # after the records and the xTR-ID/Site-ID (trailing bytes not included)
    xtr_id: int | None
    site_id: int
    message: MapRegister | None = None

    @property
    def want_map_notify(self) -> bool:
        return bool(self.word & WANT_NOTIFY_BIT)

    @property
    def ttl_timeout(self) -> bool:
        return bool(self.word & TTL_BIT)

    @property
    def proxy_reply(self) -> bool:
        return bool(self.word & PROXY_BIT)


def _split_plain(data: bytes) -> RegisterParts | None:
    """The common shape only: EIDs plain IPv4/IPv6 (or in an Instance-ID LCAF), RLOCs plain
    IPv4/IPv6, reserved bits zero, mask-lens that fit; so the records re-encode to exactly their
    bytes. None for anything else, malformed messages included (the full decoder then decides
    and explains). Whatever this accepts, `MapRegister.decode` accepts with the same fields."""
    n = len(data)
    if n < 16:
        return None
    word, nonce, key_id, alg_id, auth_len = _REG_HEAD.unpack_from(data)
    if word >> 28 != REGISTER_TYPE:
        return None
    pos = auth_end = 16 + auth_len
    if pos > n:
        return None
    records: list[RecordParts] = []
    unpack_record, unpack_rloc = _RECORD_HEAD.unpack_from, _RLOC_HEAD.unpack_from
    afi_length = _AFI_LENGTH
    for _ in range(word & 0xFF):
        start = pos
        if pos + 12 > n:
            return None
        ttl, count, mask_len, act_a, version_field, afi = unpack_record(data, pos)
        if act_a & 0x0FFF or version_field & 0xF000:
            return None  # reserved bits: not re-encoded, so not byte-identical
        pos += 12
        iid = 0
        if afi == _LCAF_AFI:
            if pos + 12 > n:
                return None
            flags, lcaf_type, _rsvd2, length, iid, afi = _IID_LCAF.unpack_from(data, pos)
            size = afi_length.get(afi, 0)
            if flags or lcaf_type != 2 or not size or length != 6 + size:
                return None
            pos += 12
        else:
            size = afi_length.get(afi, 0)
            if not size:
                return None
        if pos + size > n or mask_len > 8 * size:
            return None
        address = int.from_bytes(data[pos : pos + size], "big")
        version = 4 if size == 4 else 6
        pos += size
        for _ in range(count):
            if pos + 8 > n:
                return None
            flags, afi = unpack_rloc(data, pos)
            size = afi_length.get(afi, 0)
            if flags & 0xFFF8 or not size:
                return None
            pos += 8 + size
        if pos > n:
            return None
        records.append((data[start:pos], ttl, iid, version, address, mask_len))
    xtr_id, site_id = None, 0
    if word & REG_I_BIT:
        if pos + 24 > n:
            return None
        xtr_id = int.from_bytes(data[pos : pos + 16], "big")
        site_id = int.from_bytes(data[pos + 16 : pos + 24], "big")
        pos += 24
    return RegisterParts(word, nonce, key_id, alg_id, auth_end, records, pos, xtr_id, site_id)


def split_register(data: bytes) -> RegisterParts:
    """A Map-Register for a map-server; DecodeError exactly when `MapRegister.decode` raises.

    The plain shape (what lispmesh xTRs and lispers.net send) is read with a few struct calls
    and no objects per record; anything else goes through the full decoder (`message` set).
    """
    parts = _split_plain(data)
    if parts is not None:
        return parts
    head = _decode(data, REGISTER_TYPE, REG_I_BIT, "Map-Register", spans=True)
    records: list[RecordParts] = []
    for record, (start, end) in zip(head.records, head.spans, strict=True):
        eid, iid = record.eid, 0
        if isinstance(eid, InstanceId):
            iid, eid = eid.iid, eid.address
        version, address = 0, 0  # not an IP EID: the map-server refuses it
        if isinstance(eid, IPv4Address | IPv6Address):
            version, address = eid.version, int(eid)
        records.append((data[start:end], record.ttl, iid, version, address, record.mask_len))
    return RegisterParts(
        head.word, head.nonce, head.key_id, head.alg_id, 16 + len(head.auth_data), records,
        head.end, head.xtr_id, head.site_id, MapRegister._from_head(head),
    )  # fmt: skip


def notify_from_register(data: bytes, parts: RegisterParts, key: bytes) -> bytes:
    """The signed Map-Notify acknowledging the Map-Register `data` (split into `parts`).

    Byte for byte what `auth.sign(MapNotify(nonce, records, key_id, alg_id, xtr_id=xtr_id,
    site_id=site_id).encode(), key)` gives, but for the plain shape the EID-records (and the
    xTR-ID/Site-ID) are the received bytes: a new first word (type 4, I when an xTR-ID is
    echoed, the record count), zeroed auth data of the algorithm's length, one HMAC.
    EncodeError where the encoder raises it.
    """
    msg = parts.message
    if msg is not None:
        notify = MapNotify(msg.nonce, msg.records, msg.key_id, msg.alg_id,
                           xtr_id=msg.xtr_id, site_id=msg.site_id)  # fmt: skip
        return sign(notify.encode(), key)
    length = auth_length(parts.alg_id)
    word = (NOTIFY_TYPE << 28) | (NOTIFY_I_BIT if parts.xtr_id is not None else 0)
    head = _REG_HEAD.pack(word | (parts.word & 0xFF), parts.nonce, parts.key_id, parts.alg_id,
                          length)  # fmt: skip
    body = data[parts.auth_end : parts.end]
    if length == 0:  # algorithm NONE: nothing to sign (as lisp.auth.sign)
        return head + body
    return head + compute(head + bytes(length) + body, parts.alg_id, key) + body


_RLOC_FULL = struct.Struct("!BBBBHH")  # priority, weight, m-priority, m-weight, flags, AFI


def decode_record(raw: bytes) -> EidRecord:
    """One EID-record from exactly its bytes (a `RecordParts` raw); DecodeError if malformed.

    Plain IPv4/IPv6 addresses (EID also in an Instance-ID LCAF) are read with struct calls;
    anything else, or any doubt, goes through `EidRecord.decode_from`: the result is the same.
    """
    try:
        ttl, count, mask_len, act_a, map_version, afi = _RECORD_HEAD.unpack_from(raw)
        pos = 12
        rsvd2 = iid = -1
        if afi == _LCAF_AFI:
            flags, lcaf_type, rsvd2, length, iid, afi = _IID_LCAF.unpack_from(raw, pos)
            if lcaf_type != 2 or length != 6 + _AFI_LENGTH.get(afi, -6):
                return _decode_record_full(raw)
            pos += 12
        eid: Address
        if afi == 1:
            eid = IPv4Address(raw[pos : pos + 4])
            pos += 4
        elif afi == 2:
            eid = IPv6Address(raw[pos : pos + 16])
            pos += 16
        else:
            return _decode_record_full(raw)
        if iid >= 0:
            eid = InstanceId(iid, eid, rsvd2)
        rlocs = []
        unpack = _RLOC_FULL.unpack_from
        for _ in range(count):
            priority, weight, m_priority, m_weight, flags, afi = unpack(raw, pos)
            address: Address
            if afi == 1:
                address = IPv4Address(raw[pos + 8 : pos + 12])
                pos += 12
            elif afi == 2:
                address = IPv6Address(raw[pos + 8 : pos + 24])
                pos += 24
            else:
                return _decode_record_full(raw)
            rlocs.append(RlocRecord(address, priority, weight, m_priority, m_weight,
                                    bool(flags & 4), bool(flags & 2), bool(flags & 1)))  # fmt: skip
    except (struct.error, ValueError):
        return _decode_record_full(raw)
    if pos != len(raw):
        return _decode_record_full(raw)
    return EidRecord(eid, mask_len, tuple(rlocs), ttl, act_a >> 13, bool(act_a & 0x1000),
                     map_version & 0x0FFF, act_a & 0x0FFF)  # fmt: skip


def _decode_record_full(raw: bytes) -> EidRecord:
    reader = Reader(raw)
    record = EidRecord.decode_from(reader)
    if reader.remaining:
        raise DecodeError(f"{reader.remaining} stray bytes after an EID-record")
    return record
