"""Join tokens: `lmj1.<token-id>.<secret>.<ca-pin>`.

The id names the token in lists and error messages; the secret proves possession and is stored
only as its SHA-256 (compared in constant time); the CA pin is the SHA-256 of the controller CA
certificate (DER), so a node holding nothing but the token can authenticate the controller on
first contact (kubeadm-style discovery). Only `JoinToken.display` may appear in a log or an
error: it never contains the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization

PREFIX = "lmj1"
_ID = re.compile(r"[0-9a-f]{12}\Z")
_SECRET = re.compile(r"[A-Za-z0-9_-]{22,64}\Z")
_PIN = re.compile(r"[0-9a-f]{64}\Z")


class TokenFormatError(ValueError):
    """The text is not a join token (the message never repeats the secret)."""


@dataclass(frozen=True)
class JoinToken:
    token_id: str
    secret: str = field(repr=False)
    ca_pin: str | None = None

    def __str__(self) -> str:
        parts = [PREFIX, self.token_id, self.secret]
        if self.ca_pin:
            parts.append(self.ca_pin)
        return ".".join(parts)

    @property
    def display(self) -> str:
        return display_id(self.token_id)

    @property
    def secret_hash(self) -> bytes:
        return hash_secret(self.secret)


def display_id(token_id: str) -> str:
    return f"{PREFIX}.{token_id}…"


def new_token(ca_pin: str | None) -> JoinToken:
    return JoinToken(secrets.token_hex(6), secrets.token_urlsafe(16), ca_pin)


def parse_token(text: str) -> JoinToken:
    parts = text.strip().split(".")
    if len(parts) not in (3, 4) or parts[0] != PREFIX:
        raise TokenFormatError(f"not a join token (expected {PREFIX}.<id>.<secret>.<ca-pin>)")
    token_id, secret = parts[1], parts[2]
    if not _ID.match(token_id):
        raise TokenFormatError("join token: the id part is not 12 hex digits")
    if not _SECRET.match(secret):
        raise TokenFormatError(f"join token {display_id(token_id)}: malformed secret part")
    pin = parts[3] if len(parts) == 4 else None
    if pin is not None and not _PIN.match(pin):
        raise TokenFormatError(
            f"join token {display_id(token_id)}: the CA pin is not 64 hex digits"
        )
    return JoinToken(token_id, secret, pin)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def ca_pin(certificate: x509.Certificate) -> str:
    """The pin of a CA certificate: SHA-256 of its DER encoding, hex."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
