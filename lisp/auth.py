"""Authentication of Map-Register, Map-Notify, Map-Notify-Ack and Info messages (RFC 9301 §5.6).

Every implementation puts the *full* HMAC digest on the wire despite the "-96/-128" names
(20 bytes for SHA-1, 32 for SHA-256), so we do the same and read the length from the packet.
The HMAC covers the whole UDP payload, xTR-ID/Site-ID and any trailing bytes included, with the
authentication-data bytes zeroed. Verification works on the raw bytes, so it stays correct for
messages whose trailing bytes our decoder tolerates but does not model (lisp-wire.md vector B).
"""

from __future__ import annotations

import hashlib
import hmac
from enum import IntEnum

from lisp.errors import DecodeError, EncodeError
from lisp.wire import Reader

# Offset of Key ID / Algorithm ID / Auth Data Length in types 3, 4, 5 and 7.
AUTH_OFFSET = 12
AUTH_TYPES = frozenset({3, 4, 5, 7})


class AuthAlg(IntEnum):
    NONE = 0
    HMAC_SHA_1_96 = 1
    HMAC_SHA_256_128 = 2


DIGESTS = {AuthAlg.HMAC_SHA_1_96: hashlib.sha1, AuthAlg.HMAC_SHA_256_128: hashlib.sha256}
AUTH_LENGTHS = {AuthAlg.NONE: 0, AuthAlg.HMAC_SHA_1_96: 20, AuthAlg.HMAC_SHA_256_128: 32}


def auth_length(alg_id: int) -> int:
    try:
        return AUTH_LENGTHS[AuthAlg(alg_id)]
    except ValueError:
        raise EncodeError(f"unknown authentication algorithm {alg_id}") from None


def _auth_field(raw: bytes) -> tuple[int, int, int]:
    """(alg_id, start, length) of the auth data in a raw message; DecodeError if malformed."""
    reader = Reader(raw)
    msg_type = reader.u8("type") >> 4
    if msg_type not in AUTH_TYPES:
        raise DecodeError(f"message type {msg_type} carries no authentication data")
    reader.pos = AUTH_OFFSET
    reader.u8("key id")
    alg_id = reader.u8("algorithm id")
    length = reader.u16("auth data length")
    start = reader.pos
    reader.take(length, "auth data")
    return alg_id, start, length


def compute(raw_zeroed: bytes, alg_id: int, key: bytes) -> bytes:
    try:
        digest = DIGESTS[AuthAlg(alg_id)]
    except (ValueError, KeyError):
        raise EncodeError(f"no HMAC for algorithm {alg_id}") from None
    return hmac.new(key, raw_zeroed, digest).digest()


def sign(unsigned: bytes, key: bytes) -> bytes:
    """Fill in the HMAC of an encoded message whose auth data is present but zero (or stale)."""
    alg_id, start, length = _auth_field(unsigned)
    if alg_id == AuthAlg.NONE:
        return unsigned
    if length != auth_length(alg_id):
        raise EncodeError(f"auth data length {length} does not match algorithm {alg_id}")
    zeroed = unsigned[:start] + bytes(length) + unsigned[start + length :]
    return unsigned[:start] + compute(zeroed, alg_id, key) + unsigned[start + length :]


def verify(raw: bytes, key: bytes) -> bool:
    """Constant-time check of a received message's HMAC. False for alg 0 or any malformation."""
    try:
        alg_id, start, length = _auth_field(raw)
        if alg_id == AuthAlg.NONE or length != auth_length(alg_id):
            return False
        zeroed = raw[:start] + bytes(length) + raw[start + length :]
        expected = compute(zeroed, alg_id, key)
    except (DecodeError, EncodeError):
        return False
    return hmac.compare_digest(expected, raw[start : start + length])


def key_id_of(raw: bytes) -> int:
    """The Key ID of a raw authenticated message (for sites with several keys); DecodeError."""
    _auth_field(raw)
    return raw[AUTH_OFFSET]
