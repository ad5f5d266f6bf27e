"""Addresses as they appear on the wire: `AFI(16) || address` (RFC 9301 §5, RFC 8060).

IPv4 and IPv6 addresses are the standard library's `ipaddress` objects; the other families are
small frozen dataclasses. LCAF (AFI 16387) values live in `lisp.lcaf` and are part of the
`Address` union; `decode_address` dispatches to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, TypeAlias

from lisp.errors import DecodeError, EncodeError
from lisp.wire import Reader, u16

if TYPE_CHECKING:
    from lisp.lcaf import Lcaf

AFI_NONE = 0
AFI_IPV4 = 1
AFI_IPV6 = 2
AFI_MAC = 6
AFI_DN = 17
AFI_LCAF = 16387


@dataclass(frozen=True, slots=True)
class NoAddress:
    """AFI 0: an empty address (e.g. a Map-Request without a source EID)."""

    def __str__(self) -> str:
        return "(none)"


@dataclass(frozen=True, slots=True)
class MacAddress:
    """AFI 6: a 48-bit MAC address, for L2 EIDs."""

    octets: bytes

    def __str__(self) -> str:
        return ":".join(f"{b:02x}" for b in self.octets)

    @classmethod
    def parse(cls, text: str) -> MacAddress:
        parts = text.replace("-", ":").split(":")
        if len(parts) != 6:
            raise ValueError(f"not a MAC address: {text!r}")
        return cls(bytes(int(p, 16) for p in parts))


@dataclass(frozen=True, slots=True)
class DistinguishedName:
    """AFI 17: a NUL-terminated name (RFC 9301 uses it for hostnames and xTR names)."""

    name: str

    def __str__(self) -> str:
        return f"'{self.name}'"


NO_ADDRESS = NoAddress()  # immutable, so safe to share as a dataclass default

IpAddress: TypeAlias = IPv4Address | IPv6Address
PlainAddress: TypeAlias = IPv4Address | IPv6Address | MacAddress | DistinguishedName | NoAddress
Address: TypeAlias = "PlainAddress | Lcaf"

# Distinguished names are bytes on the wire; surrogateescape keeps any byte string lossless.
_DN_CODEC = ("utf-8", "surrogateescape")
MAX_ADDRESS_DEPTH = 8  # LCAFs nest (AFI-List in AFI-List); bound it so hostile input cannot recurse


def address_afi(address: Address) -> int:
    if isinstance(address, IPv4Address):
        return AFI_IPV4
    if isinstance(address, IPv6Address):
        return AFI_IPV6
    if isinstance(address, MacAddress):
        return AFI_MAC
    if isinstance(address, DistinguishedName):
        return AFI_DN
    if isinstance(address, NoAddress):
        return AFI_NONE
    return AFI_LCAF


def address_bits(address: Address) -> int:
    """The maximum mask length for an address family (used to validate EID mask-lens)."""
    if isinstance(address, IPv4Address):
        return 32
    if isinstance(address, IPv6Address):
        return 128
    if isinstance(address, MacAddress):
        return 48
    inner = getattr(address, "address", None)
    if inner is not None and inner is not address:
        return address_bits(inner)
    return 255


def encode_text(text: str, what: str) -> bytes:
    """Text as wire bytes; EncodeError unless the bytes decode back to exactly `text`."""
    try:
        raw = text.encode(*_DN_CODEC)
    except UnicodeEncodeError as exc:
        raise EncodeError(f"{what} {text!r} cannot be encoded: {exc.reason}") from None
    if raw.decode(*_DN_CODEC) != text:
        raise EncodeError(f"{what} {text!r} would not decode back unchanged")
    return raw


def encode_address(address: Address, depth: int = 0) -> bytes:
    """`AFI || address`; `depth` counts the LCAFs around it, bounded as in `decode_address`."""
    if isinstance(address, IPv4Address):
        return b"\x00\x01" + address.packed
    if isinstance(address, IPv6Address):
        return b"\x00\x02" + address.packed
    if isinstance(address, NoAddress):
        return b"\x00\x00"
    if isinstance(address, MacAddress):
        if len(address.octets) != 6:
            raise EncodeError(f"MAC address must be 6 bytes, got {len(address.octets)}")
        return u16(AFI_MAC) + address.octets
    if isinstance(address, DistinguishedName):
        raw = encode_text(address.name, "distinguished name")
        if b"\x00" in raw:
            raise EncodeError("distinguished name contains a NUL byte")
        return u16(AFI_DN) + raw + b"\x00"
    if depth >= MAX_ADDRESS_DEPTH:
        raise EncodeError(f"LCAFs nested deeper than {MAX_ADDRESS_DEPTH}")
    from lisp.lcaf import encode_lcaf

    return encode_lcaf(address, depth + 1)


def decode_address(reader: Reader, depth: int = 0) -> Address:
    """Read one `AFI || address` from `reader`."""
    afi = reader.u16("AFI")
    if afi == AFI_IPV4:
        return IPv4Address(reader.take(4, "IPv4 address"))
    if afi == AFI_IPV6:
        return IPv6Address(reader.take(16, "IPv6 address"))
    if afi == AFI_NONE:
        return NoAddress()
    if afi == AFI_MAC:
        return MacAddress(reader.take(6, "MAC address"))
    if afi == AFI_DN:
        return DistinguishedName(_read_dn(reader))
    if afi == AFI_LCAF:
        if depth >= MAX_ADDRESS_DEPTH:
            raise DecodeError(f"LCAFs nested deeper than {MAX_ADDRESS_DEPTH}")
        from lisp.lcaf import decode_lcaf_body

        return decode_lcaf_body(reader, depth + 1)
    raise DecodeError(f"unsupported AFI {afi}")


def _read_dn(reader: Reader) -> str:
    nul = reader.find(b"\x00")
    if nul < 0:
        raise DecodeError("distinguished name without its terminating NUL")
    raw = reader.take(nul, "distinguished name")
    reader.u8("NUL")
    return raw.decode(*_DN_CODEC)
