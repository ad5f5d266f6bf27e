"""lispers.net's RFC 8061 data-plane framing: the interop profile (issue 16).

lispers.net, the reference LISP implementation, derives and frames its data keys differently from
lispmesh's RFC framing (lisp/crypto.py). What it does, verified against its code and a live peer
(../shared/reference/lisp-wire.md §2.1):

- Shared secret: its X25519 library returns `SHA-256(b"curve25519-shared:" || X25519(priv, pub))`,
  and that value, not the raw X25519 output, is the KDF's message:
  `material = HMAC-SHA256(key=context, msg=shared)` with lisp/crypto.py's context string;
  `encrypt_key = material[0:16]`, `icv_key = 4 zero bytes || material[16:32]` (20 bytes).
- CS 5 (GCM): `hdr(8) | IV(12) | AES-GCM(encrypt_key, IV, plaintext padded with ASCII spaces to a
  multiple of 16, no AAD) = ct || tag(16) | ICV(20)`,
  `ICV = HMAC-SHA256(icv_key, hdr || IV || ct || tag)[0:20]`, checked before decryption.
- CS 2 (CBC): `hdr(8) | IV(16) | AES-128-CBC(encrypt_key, IV, space-padded plaintext) | ICV(20)`,
  `ICV = HMAC-SHA256(icv_key, hdr || IV || ct)[0:20]`.
- The true inner length comes from the inner IP header (the padding is spaces, not PKCS#7).

What this profile protects, and what not: confidentiality and integrity of each packet (AES plus
an HMAC over header, IV and ciphertext). It gives **no replay protection**: lispers.net's IV is a
random value (GCM) or a counter it starts at random (CBC) that a receiver cannot run a window on,
and lispers.net keeps none; a recorded packet can be replayed for as long as the key lives. Its
key exchange is plain RFC 8061 (no signature), so it must be paired with a trusted path to the
map-server, and it is opt-in per peer. lispmesh-to-lispmesh traffic keeps the RFC framing with
authenticated keys and a replay window.

Sans-IO: the IV is passed in (the runtime draws it from os.urandom), so the golden vector can be
reproduced byte for byte.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lisp.crypto import HEADER_LEN, CryptoError, EcdhKeyPair, kdf_context
from lisp.crypto_suites import CS_AES128_CBC_SHA256, CS_AES128_GCM

SHARED_PREFIX: Final = b"curve25519-shared:"
ICV_LEN: Final = 20
GCM_IV_LEN: Final = 12
GCM_TAG_LEN: Final = 16
CBC_IV_LEN: Final = 16
BLOCK: Final = 16
PROFILE_SUITES: Final = frozenset({CS_AES128_GCM, CS_AES128_CBC_SHA256})


def lispers_shared_secret(local: EcdhKeyPair, remote_public: bytes) -> bytes:
    """The shared secret as lispers.net's X25519 library returns it (hashed, with a prefix)."""
    return hashlib.sha256(SHARED_PREFIX + local.shared_secret(remote_public)).digest()


def lispers_keys(local: EcdhKeyPair, remote_public: bytes) -> tuple[bytes, bytes]:
    """(encrypt_key: 16 bytes, icv_key: 20 bytes) exactly as lispers.net derives them."""
    secret = lispers_shared_secret(local, remote_public)
    material = hmac.new(kdf_context(local.public, remote_public), secret, hashlib.sha256).digest()
    return material[:16], bytes(4) + material[16:32]


def _pad(inner: bytes) -> bytes:
    return inner + b" " * (-len(inner) % BLOCK)


def inner_length(padded: bytes) -> int:
    """The inner packet's true length from its IP header (the padding carries none)."""
    if not padded:
        raise CryptoError("empty inner packet", "short")
    version = padded[0] >> 4
    if version == 4 and len(padded) >= 20:
        length = int.from_bytes(padded[2:4], "big")
    elif version == 6 and len(padded) >= 40:
        length = 40 + int.from_bytes(padded[4:6], "big")
    else:
        raise CryptoError(f"inner packet is not IPv4/IPv6 (version {version})", "malformed")
    if not len(padded) - BLOCK < length <= len(padded):
        raise CryptoError(
            f"inner IP length {length} does not fit the {len(padded)}-byte padded plaintext",
            "malformed",
        )
    return length


class LispersCipher:
    """One direction's key in lispers.net's framing, for CS 5 (GCM) or CS 2 (CBC)."""

    __slots__ = ("_aead", "_encrypt_key", "_icv_key", "cipher_suite", "iv_len")

    def __init__(self, cipher_suite: int, encrypt_key: bytes, icv_key: bytes) -> None:
        if cipher_suite not in PROFILE_SUITES:
            raise CryptoError(
                f"cipher suite {cipher_suite} not in the lispers.net profile", "suite"
            )
        if len(encrypt_key) != 16 or len(icv_key) != ICV_LEN:
            raise CryptoError("lispers.net keys are 16 (encrypt) and 20 (ICV) bytes", "public-key")
        self.cipher_suite = cipher_suite
        self._encrypt_key = encrypt_key
        self._icv_key = icv_key
        self._aead = AESGCM(encrypt_key) if cipher_suite == CS_AES128_GCM else None
        self.iv_len = GCM_IV_LEN if cipher_suite == CS_AES128_GCM else CBC_IV_LEN

    def _icv(self, authenticated: bytes) -> bytes:
        return hmac.new(self._icv_key, authenticated, hashlib.sha256).digest()[:ICV_LEN]

    def seal(self, header: bytes, inner: bytes, iv: bytes) -> bytes:
        """`header | IV | ciphertext | ICV` for one inner packet; `iv` fresh per packet."""
        if len(header) != HEADER_LEN or len(iv) != self.iv_len:
            raise CryptoError(f"header must be 8 bytes and IV {self.iv_len}", "short")
        plaintext = _pad(inner)
        if self._aead is not None:
            body = self._aead.encrypt(iv, plaintext, None)
        else:
            encryptor = Cipher(algorithms.AES(self._encrypt_key), modes.CBC(iv)).encryptor()
            body = encryptor.update(plaintext) + encryptor.finalize()
        sealed = header + iv + body
        return sealed + self._icv(sealed)

    def open(self, packet: bytes) -> bytes:
        """The inner packet (padding removed), or CryptoError: the ICV is checked first."""
        tag_len = GCM_TAG_LEN if self._aead is not None else 0
        body_start = HEADER_LEN + self.iv_len
        if len(packet) < body_start + BLOCK + tag_len + ICV_LEN:
            raise CryptoError(f"sealed packet too short ({len(packet)} bytes)", "short")
        sealed, icv = packet[:-ICV_LEN], packet[-ICV_LEN:]
        if not hmac.compare_digest(self._icv(sealed), icv):
            raise CryptoError("ICV does not match", "tag")
        iv, body = sealed[HEADER_LEN:body_start], sealed[body_start:]
        if (len(body) - tag_len) % BLOCK:
            raise CryptoError("ciphertext is not a whole number of blocks", "malformed")
        if self._aead is not None:
            try:
                padded = self._aead.decrypt(iv, body, None)
            except InvalidTag:
                raise CryptoError("GCM tag does not match", "tag") from None
        else:
            decryptor = Cipher(algorithms.AES(self._encrypt_key), modes.CBC(iv)).decryptor()
            padded = decryptor.update(body) + decryptor.finalize()
        return padded[: inner_length(padded)]

    def __repr__(self) -> str:
        return f"LispersCipher(cs={self.cipher_suite})"  # never the keys
