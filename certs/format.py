"""The lispmesh node certificate format: what a certificate of the mesh CA says about a node.

Node certificates carry the node's EID prefixes in a private, non-critical extension (OID
`EID_EXTENSION_OID`: DER UTF8String "iid:prefix,iid:prefix"), optionally its RLOC prefixes
(`RLOC_EXTENSION_OID`, same encoding without iids), and a SAN URI `lispmesh://node/<name>`.
Key usage digitalSignature and EKU clientAuth+serverAuth make them usable for mTLS.

This is the bottom of the identity code: the mesh (key exchange), the node agent and the
controller (its CA) all read and write this format, so it depends on neither of them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import TypeAlias

from cryptography import x509

IpNetwork: TypeAlias = IPv4Network | IPv6Network
IpAddr: TypeAlias = IPv4Address | IPv6Address
Eid: TypeAlias = tuple[int, IpNetwork]  # (instance-id, prefix)
Now: TypeAlias = "dt.datetime | float | None"
# A moment a verifier is given (wall-clock seconds or a datetime): it never reads a clock itself.
At: TypeAlias = "dt.datetime | float"

# A private OID arc: 2.25.<UUID> (ITU-T X.667) needs no registration and is ours alone.
_ARC = "2.25.234865613516693589482944461835356777512"
EID_EXTENSION_OID = x509.ObjectIdentifier(f"{_ARC}.1")
RLOC_EXTENSION_OID = x509.ObjectIdentifier(f"{_ARC}.2")
SAN_URI_PREFIX = "lispmesh://node/"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")


class IdentityError(Exception):
    """An identity check failed; `reason` is one precise, loggable line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotFromCa(IdentityError):
    """The certificate was not issued by the CA it was checked against (another may have)."""


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise IdentityError(
            f"invalid node name {name!r}: use letters, digits, '.', '_', '-' (max 63)"
        )
    return name


def utc_moment(now: Now = None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if isinstance(now, dt.datetime):
        return now if now.tzinfo else now.replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(now, dt.UTC)


# ---------------------------------------------------------------------------------------------
# the EID/RLOC extension


def _der_utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    n = len(raw)
    if n < 0x80:
        length = bytes((n,))
    else:
        size = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes((0x80 | len(size),)) + size
    return b"\x0c" + length + raw


def _parse_der_utf8(der: bytes) -> str:
    if len(der) < 2 or der[0] != 0x0C:
        raise ValueError("not a DER UTF8String")
    n, pos = der[1], 2
    if n & 0x80:
        size = n & 0x7F
        if size == 0 or size > 4 or len(der) < 2 + size:
            raise ValueError("bad DER length")
        n, pos = int.from_bytes(der[2 : 2 + size], "big"), 2 + size
    if len(der) != pos + n:
        raise ValueError("DER length does not match")
    return der[pos:].decode("utf-8")


def encode_eids(eids: Sequence[Eid]) -> str:
    return ",".join(f"{iid}:{prefix}" for iid, prefix in canonical_eids(eids))


def parse_eids(text: str) -> tuple[Eid, ...]:
    out = []
    for item in filter(None, text.split(",")):
        iid_text, _, prefix = item.partition(":")
        iid = int(iid_text)
        if not 0 <= iid < 2**32:
            raise ValueError(f"instance-id {iid} out of range")
        out.append((iid, ip_network(prefix)))
    return tuple(out)


def canonical_eids(eids: Sequence[Eid]) -> list[Eid]:
    return sorted(set(eids), key=lambda e: (e[0], e[1].version, e[1]))


def eid_extension(eids: Sequence[Eid]) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(EID_EXTENSION_OID, _der_utf8(encode_eids(eids)))


def rloc_extension(rlocs: Sequence[IpNetwork]) -> x509.UnrecognizedExtension:
    ordered = sorted(set(rlocs), key=lambda n: (n.version, n))
    return x509.UnrecognizedExtension(RLOC_EXTENSION_OID, _der_utf8(",".join(map(str, ordered))))


@dataclass(frozen=True, slots=True)
class NodeClaims:
    """What a node certificate says: name, EIDs, RLOC prefixes (None: not restricted)."""

    name: str
    eids: tuple[Eid, ...]
    rlocs: tuple[IpNetwork, ...] | None


def _raw_extension(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes:
    value = cert.extensions.get_extension_for_oid(oid).value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise ValueError(f"extension {oid.dotted_string} has an unexpected type")
    return value.value


def certificate_claims(cert: x509.Certificate) -> NodeClaims:
    """Name, EIDs and RLOCs of a node certificate; IdentityError if it is not one."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
        names = [u[len(SAN_URI_PREFIX) :] for u in uris if u.startswith(SAN_URI_PREFIX)]
        if len(names) != 1:
            raise IdentityError(f"certificate has no single {SAN_URI_PREFIX}<name> URI")
        name = check_name(names[0])
        eids = parse_eids(_parse_der_utf8(_raw_extension(cert, EID_EXTENSION_OID)))
        try:
            text = _parse_der_utf8(_raw_extension(cert, RLOC_EXTENSION_OID))
        except x509.ExtensionNotFound:
            rlocs = None
        else:
            rlocs = tuple(ip_network(t) for t in filter(None, text.split(",")))
    except x509.ExtensionNotFound as exc:
        missing = exc.oid.dotted_string
        raise IdentityError(f"not a lispmesh node certificate (missing {missing})") from None
    except (ValueError, UnicodeError) as exc:
        raise IdentityError(f"node certificate has a malformed lispmesh extension: {exc}") from None
    return NodeClaims(name, eids, rlocs)


def covered(eids: Sequence[Eid], iid: int, prefix: IpNetwork) -> bool:
    """Whether `prefix` in instance-id `iid` lies inside one of `eids`."""
    return any(
        ciid == iid and cnet.version == prefix.version and prefix.subnet_of(cnet)  # type: ignore[arg-type]
        for ciid, cnet in eids
    )
