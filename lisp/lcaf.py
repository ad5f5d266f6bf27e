"""LISP Canonical Address Format (RFC 8060; Security Key from RFC 8061).

```
|           AFI = 16387         |     Rsvd1     |     Flags     |
|    Type       |     Rsvd2     |            Length             |
```
Each LCAF type is a frozen dataclass; `encode_lcaf` writes the header and `decode_lcaf_body`
reads it after the AFI (called from `lisp.address.decode_address`). Types we do not model decode
to `UnknownLcaf`, which keeps the raw body, so a receiver never rejects a message for carrying an
LCAF it does not understand (lenient on receive).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from lisp.address import Address, address_bits, decode_address, encode_address, encode_text
from lisp.errors import DecodeError, EncodeError
from lisp.wire import Reader, check_uint, u8, u16, u32

LCAF_NULL = 0
LCAF_AFI_LIST = 1
LCAF_INSTANCE_ID = 2
LCAF_AS_NUMBER = 3
LCAF_GEO = 5
LCAF_NAT = 7
LCAF_ELP = 10
LCAF_SECURITY_KEY = 11
LCAF_SOURCE_DEST = 12
LCAF_JSON = 14
LCAF_KEY_VALUE = 15
_MODELLED_TYPES = frozenset({1, 2, 3, 5, 7, 10, 11, 12, 14, 15})  # decoded to their own classes


@dataclass(frozen=True, slots=True)
class AfiList:
    """Type 1: several addresses for one thing (e.g. an RLOC plus its security key)."""

    items: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class InstanceId:
    """Type 2: an address inside a virtual network. `mask_len` (Rsvd2) is for IID ranges."""

    iid: int
    address: Address
    mask_len: int = 0


@dataclass(frozen=True, slots=True)
class AsNumber:
    """Type 3: an address tagged with its autonomous system."""

    asn: int
    address: Address


@dataclass(frozen=True, slots=True)
class GeoCoordinates:
    """Type 5, RFC 8060 layout (degrees/minutes/seconds with hemisphere bits), altitude in m."""

    north: bool
    lat_degrees: int
    lat_minutes: int
    lat_seconds: int
    east: bool
    lon_degrees: int
    lon_minutes: int
    lon_seconds: int
    altitude: int
    address: Address


@dataclass(frozen=True, slots=True)
class NatTraversal:
    """Type 7: what the map-server saw of an xTR behind a NAT, and the RTRs to use."""

    ms_port: int
    etr_port: int
    global_etr: Address
    ms_rloc: Address
    private_etr: Address
    rtrs: tuple[Address, ...] = ()


@dataclass(frozen=True, slots=True)
class ElpHop:
    address: Address
    lookup: bool = False
    probe: bool = False
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ExplicitLocatorPath:
    """Type 10: the re-encapsulation hops a packet should take."""

    hops: tuple[ElpHop, ...]


@dataclass(frozen=True, slots=True)
class SecurityKey:
    """Type 11 (RFC 8061 §4): public key material for the data-plane key exchange."""

    cipher_suite: int
    keys: tuple[bytes, ...]
    address: Address
    revoke: bool = False


@dataclass(frozen=True, slots=True)
class SourceDestKey:
    """Type 12: a (source, destination) EID pair, for source-specific mappings."""

    source: Address
    source_mask: int
    dest: Address
    dest_mask: int


@dataclass(frozen=True, slots=True)
class JsonLcaf:
    """Type 14: JSON text (or binary JSON when `binary`), with an optional address."""

    text: str
    address: Address
    binary: bool = False


@dataclass(frozen=True, slots=True)
class KeyValue:
    """Type 15: a key address and its value address."""

    key: Address
    value: Address


@dataclass(frozen=True, slots=True)
class UnknownLcaf:
    """Any LCAF type we do not model, kept byte-for-byte."""

    lcaf_type: int
    rsvd2: int
    body: bytes


Lcaf: TypeAlias = (
    AfiList
    | InstanceId
    | AsNumber
    | GeoCoordinates
    | NatTraversal
    | ExplicitLocatorPath
    | SecurityKey
    | SourceDestKey
    | JsonLcaf
    | KeyValue
    | UnknownLcaf
)

_JSON_BINARY = 0x01


def _geo_half(positive: bool, degrees: int, minutes: int, seconds: int, limit: int) -> bytes:
    if not 0 <= degrees <= limit:
        raise EncodeError(f"geo degrees {degrees} outside 0..{limit}")
    check_uint(minutes, 8, "geo minutes")
    check_uint(seconds, 8, "geo seconds")
    if minutes > 59 or seconds > 59:
        raise EncodeError(f"geo minutes/seconds {minutes}/{seconds} outside 0..59")
    return u16((0x8000 if positive else 0) | degrees) + bytes((minutes, seconds))


def _lcaf_parts(value: Lcaf, depth: int) -> tuple[int, int, bytes]:
    """(type, rsvd2, body) for an LCAF value that sits `depth` LCAFs deep."""

    def enc(address: Address) -> bytes:
        return encode_address(address, depth)

    if isinstance(value, AfiList):
        return LCAF_AFI_LIST, 0, b"".join(enc(a) for a in value.items)
    if isinstance(value, InstanceId):
        check_uint(value.mask_len, 8, "instance-id mask-len")
        return (
            LCAF_INSTANCE_ID,
            value.mask_len,
            u32(value.iid, "instance-id") + enc(value.address),
        )
    if isinstance(value, AsNumber):
        return LCAF_AS_NUMBER, 0, u32(value.asn, "AS number") + enc(value.address)
    if isinstance(value, GeoCoordinates):
        body = (
            _geo_half(value.north, value.lat_degrees, value.lat_minutes, value.lat_seconds, 90)
            + _geo_half(value.east, value.lon_degrees, value.lon_minutes, value.lon_seconds, 180)
            + u32(value.altitude & 0xFFFFFFFF)
            + enc(value.address)
        )
        if not -(1 << 31) <= value.altitude < (1 << 31):
            raise EncodeError(f"geo altitude {value.altitude} does not fit 32 signed bits")
        return LCAF_GEO, 0, body
    if isinstance(value, NatTraversal):
        body = (
            u16(value.ms_port, "MS UDP port")
            + u16(value.etr_port, "ETR UDP port")
            + enc(value.global_etr)
            + enc(value.ms_rloc)
            + enc(value.private_etr)
            + b"".join(enc(r) for r in value.rtrs)
        )
        return LCAF_NAT, 0, body
    if isinstance(value, ExplicitLocatorPath):
        parts = []
        for hop in value.hops:
            flags = (4 if hop.lookup else 0) | (2 if hop.probe else 0) | (1 if hop.strict else 0)
            parts.append(u16(flags) + enc(hop.address))
        return LCAF_ELP, 0, b"".join(parts)
    if isinstance(value, SecurityKey):
        check_uint(len(value.keys), 8, "security key count")
        body = (
            u8(len(value.keys))
            + b"\x00"
            + u8(value.cipher_suite, "cipher suite")
            + (b"\x01" if value.revoke else b"\x00")
        )
        for key in value.keys:
            body += u16(len(key), "key length") + key
        return LCAF_SECURITY_KEY, 0, body + enc(value.address)
    if isinstance(value, SourceDestKey):
        _check_mask(value.source_mask, value.source, "source")
        _check_mask(value.dest_mask, value.dest, "dest")
        body = (
            b"\x00\x00"
            + bytes((value.source_mask, value.dest_mask))
            + enc(value.source)
            + enc(value.dest)
        )
        return LCAF_SOURCE_DEST, 0, body
    if isinstance(value, JsonLcaf):
        raw = encode_text(value.text, "JSON text")
        body = u16(len(raw), "JSON length") + raw + enc(value.address)
        return LCAF_JSON, _JSON_BINARY if value.binary else 0, body
    if isinstance(value, KeyValue):
        return LCAF_KEY_VALUE, 0, enc(value.key) + enc(value.value)
    if isinstance(value, UnknownLcaf):
        check_uint(value.lcaf_type, 8, "LCAF type")
        check_uint(value.rsvd2, 8, "LCAF rsvd2")
        if value.lcaf_type in _MODELLED_TYPES:
            raise EncodeError(f"UnknownLcaf cannot carry modelled LCAF type {value.lcaf_type}")
        return value.lcaf_type, value.rsvd2, value.body
    raise EncodeError(f"not an address: {value!r}")


def _check_mask(mask: int, address: Address, what: str) -> None:
    check_uint(mask, 8, f"{what} mask-len")
    if mask > address_bits(address):
        raise EncodeError(f"{what} mask-len {mask} too long for {address}")


def encode_lcaf(value: Lcaf, depth: int = 1) -> bytes:
    lcaf_type, rsvd2, body = _lcaf_parts(value, depth)
    return b"\x40\x03\x00\x00" + bytes((lcaf_type, rsvd2)) + u16(len(body), "LCAF length") + body


def decode_lcaf_body(reader: Reader, depth: int) -> Lcaf:
    """Decode an LCAF whose AFI has just been read."""
    reader.u16("LCAF rsvd1/flags")
    lcaf_type = reader.u8("LCAF type")
    rsvd2 = reader.u8("LCAF rsvd2")
    length = reader.u16("LCAF length")
    body = reader.sub(length, f"LCAF type {lcaf_type} body")
    return decode_lcaf_fields(lcaf_type, rsvd2, body, depth)


def decode_lcaf_fields(lcaf_type: int, rsvd2: int, body: Reader, depth: int) -> Lcaf:
    """Decode an LCAF body from `body` (which may extend past the Length field; see NAT)."""
    if lcaf_type == LCAF_AFI_LIST:
        items = []
        while body.remaining:
            items.append(decode_address(body, depth))
        return AfiList(tuple(items))
    if lcaf_type == LCAF_INSTANCE_ID:
        iid = body.u32("instance-id")
        return InstanceId(iid, _only_address(body, depth, "instance-id"), rsvd2)
    if lcaf_type == LCAF_AS_NUMBER:
        asn = body.u32("AS number")
        return AsNumber(asn, _only_address(body, depth, "AS number"))
    if lcaf_type == LCAF_GEO:
        lat = body.u16("latitude")
        lat_min, lat_sec = body.u8("lat minutes"), body.u8("lat seconds")
        lon = body.u16("longitude")
        lon_min, lon_sec = body.u8("lon minutes"), body.u8("lon seconds")
        alt = body.u32("altitude")
        altitude = alt - (1 << 32) if alt & 0x80000000 else alt
        address = _only_address(body, depth, "geo")
        return GeoCoordinates(
            bool(lat & 0x8000), lat & 0x7FFF, lat_min, lat_sec,
            bool(lon & 0x8000), lon & 0x7FFF, lon_min, lon_sec,
            altitude, address,
        )  # fmt: skip
    if lcaf_type == LCAF_NAT:
        ms_port, etr_port = body.u16("MS port"), body.u16("ETR port")
        global_etr = decode_address(body, depth)
        ms_rloc = decode_address(body, depth)
        private_etr = decode_address(body, depth)
        rtrs = []
        while body.remaining:
            rtrs.append(decode_address(body, depth))
        return NatTraversal(ms_port, etr_port, global_etr, ms_rloc, private_etr, tuple(rtrs))
    if lcaf_type == LCAF_ELP:
        hops = []
        while body.remaining:
            flags = body.u16("ELP hop flags")
            address = decode_address(body, depth)
            hops.append(ElpHop(address, bool(flags & 4), bool(flags & 2), bool(flags & 1)))
        return ExplicitLocatorPath(tuple(hops))
    if lcaf_type == LCAF_SECURITY_KEY:
        count = body.u8("key count")
        body.u8("rsvd3")
        suite = body.u8("cipher suite")
        revoke = bool(body.u8("rsvd4/R") & 1)
        keys = tuple(body.take(body.u16("key length"), "key material") for _ in range(count))
        return SecurityKey(suite, keys, _only_address(body, depth, "security key"), revoke)
    if lcaf_type == LCAF_SOURCE_DEST:
        body.u16("rsvd")
        src_mask, dst_mask = body.u8("source mask-len"), body.u8("dest mask-len")
        source = decode_address(body, depth)
        dest = decode_address(body, depth)
        _expect_end(body, "source/dest key")
        return SourceDestKey(source, src_mask, dest, dst_mask)
    if lcaf_type == LCAF_JSON:
        raw = body.take(body.u16("JSON length"), "JSON text")
        text = raw.decode("utf-8", "surrogateescape")
        return JsonLcaf(text, _only_address(body, depth, "JSON"), bool(rsvd2 & _JSON_BINARY))
    if lcaf_type == LCAF_KEY_VALUE:
        key = decode_address(body, depth)
        value = decode_address(body, depth)
        _expect_end(body, "key/value")
        return KeyValue(key, value)
    return UnknownLcaf(lcaf_type, rsvd2, body.rest())


def _only_address(body: Reader, depth: int, what: str) -> Address:
    address = decode_address(body, depth)
    _expect_end(body, what)
    return address


def _expect_end(body: Reader, what: str) -> None:
    if body.remaining:
        raise DecodeError(f"{body.remaining} stray bytes at the end of a {what} LCAF")
