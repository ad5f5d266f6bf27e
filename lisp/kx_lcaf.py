"""Where the RFC 8061 key exchange sits in Map-Requests and Map-Replies (sans-IO helpers).

Strict when building:
- Map-Request, ITR-RLOC 1: `AfiList((SecurityKey(cs, (pub,), itr_rloc), proof))` with our identity
  proof (a JSON LCAF), or the plain RFC 8061 `SecurityKey(cs, (pub,), itr_rloc)` without one.
- Map-Reply RLOC-record address: `AfiList((rloc, SecurityKey(cs, (pub,), rloc), proof))`, or
  `AfiList((rloc, SecurityKey(...)))` without a proof (the lispers.net layout, lisp-wire.md §1.8).

Lenient when reading: `extract_security` walks AFI-Lists (nested, bounded) and takes the first
Security-Key LCAF, the identity proof JSON LCAF, and the first plain IP address, wherever they are.

The Security-Key LCAF carries exactly one key (Key Count 1), as lispers.net sends it. The key-id
of the new key travels in the signed identity proof ("kid"); without a proof it is 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address

from lisp.address import NO_ADDRESS, Address, IpAddress
from lisp.crypto import X25519_KEY_LEN, CryptoError, check_suite
from lisp.lcaf import AfiList, JsonLcaf, SecurityKey

_MAX_WALK = 64  # addresses visited at most (decode already bounds nesting depth)
PROOF_MARKER = '"sig"'  # our proof JSON always has a "sig" member


def build_request_itr_rloc(
    cipher_suite: int, public: bytes, itr_rloc: IpAddress, proof: JsonLcaf | None
) -> Address:
    """The address to put as ITR-RLOC 1 of a Map-Request that offers `public`."""
    key = SecurityKey(check_suite(cipher_suite), (public,), itr_rloc)
    return key if proof is None else AfiList((key, proof))


def build_reply_rloc_address(
    rloc: IpAddress, cipher_suite: int, public: bytes, proof: JsonLcaf | None
) -> Address:
    """The address of the Map-Reply RLOC-record for `rloc`, answering with `public`."""
    key = SecurityKey(check_suite(cipher_suite), (public,), rloc)
    return AfiList((rloc, key) if proof is None else (rloc, key, proof))


def proof_lcaf(text: str) -> JsonLcaf:
    """A JSON LCAF holding proof text (no address of its own)."""
    return JsonLcaf(text, NO_ADDRESS)


def extract_security(
    address: Address,
) -> tuple[SecurityKey | None, JsonLcaf | None, IpAddress | None]:
    """(security key, proof, IP RLOC) found in an ITR-RLOC or RLOC-record address; None for
    parts that are absent. The IP is the first plain IP in the AFI-List, else the key's address.
    Never raises."""
    key: SecurityKey | None = None
    proof: JsonLcaf | None = None
    other_json: JsonLcaf | None = None
    ip: IpAddress | None = None
    stack: list[Address] = [address]
    visited = 0
    while stack and visited < _MAX_WALK:
        item = stack.pop()
        visited += 1
        if isinstance(item, AfiList):
            stack.extend(reversed(item.items))
        elif isinstance(item, SecurityKey):
            if key is None:
                key = item
        elif isinstance(item, JsonLcaf):
            if proof is None and PROOF_MARKER in item.text:
                proof = item
            elif other_json is None:
                other_json = item
        elif isinstance(item, IPv4Address | IPv6Address) and ip is None:
            ip = item
    if ip is None and key is not None and isinstance(key.address, IPv4Address | IPv6Address):
        ip = key.address
    return key, proof if proof is not None else other_json, ip


def find_itr_security(
    itr_rlocs: Iterable[Address],
) -> tuple[SecurityKey | None, JsonLcaf | None, IpAddress | None]:
    """`extract_security` of the first ITR-RLOC that carries a Security-Key LCAF (RFC 8061 puts it
    first; we tolerate it anywhere)."""
    for address in itr_rlocs:
        found = extract_security(address)
        if found[0] is not None:
            return found
    return None, None, None


def public_key_of(key: SecurityKey) -> bytes:
    """The X25519 public key of a Security-Key LCAF; CryptoError unless it is exactly one
    32-byte key of a suite we support, not revoked."""
    check_suite(key.cipher_suite)
    if key.revoke:
        raise CryptoError("security key is revoked", "public-key")
    if len(key.keys) != 1 or len(key.keys[0]) != X25519_KEY_LEN:
        raise CryptoError(
            f"expected one 32-byte X25519 key, got {[len(k) for k in key.keys]}", "public-key"
        )
    return key.keys[0]
