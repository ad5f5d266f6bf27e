"""RFC 8061 data-plane confidentiality: X25519 key agreement, the KDF, AEAD sealing, replay window.

Sans-IO and clock-free. The packet layout produced by `PacketCipher.seal`:

```
| LISP data header (8, KK = key-id) | IV (12) | ciphertext (len(inner)) | tag (16) |
IV  = salt (4 random bytes chosen once per key by the sender) || counter (64-bit big-endian)
AAD = the 8-byte LISP data header
```
The tag authenticates header || IV || ciphertext (the IV as the AEAD nonce), which is what RFC 8061
§6 asks of its ICV. The counter is unique per key (the sender keeps one counter per key and never
resets it: mesh/keys.py), so a nonce never repeats for a key; the receiver reads the counter back
out of the IV for its replay window.

Suites (IANA "LISP Crypto Cipher Suite"):
- CS 5, `CS_AES128_GCM` (default): X25519 + AES-128-GCM. The key is the first 16 bytes of the KDF
  output, exactly as lispers.net derives its encrypt key.
- CS 6, `CS_CHACHA20_POLY1305`: X25519 + standard RFC 8439 ChaCha20-Poly1305 (12-byte nonce),
  keyed with the full 32 bytes of KDF output. This is *not* the lispers.net CS 6 (legacy 64-bit-
  nonce ChaCha keyed with ASCII hex, Poly1305-AES ICV, space padding): encrypted interop with
  lispers.net over CS 6 is not supported.

Note that lispers.net's CS 5 data plane appends an HMAC ICV after the GCM tag and pads the
plaintext, and hashes the X25519 output before the KDF; our framing does none of these. The
lispers.net framing (CS 5 and CS 2) is lisp/lispers_profile.py, an opt-in interop profile.

Key uniqueness: the KDF is symmetric (both ends derive the same key from one exchange), so one
exchange keys exactly one direction. A node offers one key pair as ITR and another as ETR, so the
two directions between two nodes never share a key (see mesh/keys.py).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lisp.crypto_suites import CS_AES128_GCM, CS_CHACHA20_POLY1305

SUPPORTED_SUITES: Final = frozenset({CS_AES128_GCM, CS_CHACHA20_POLY1305})
DEFAULT_SUITE: Final = CS_AES128_GCM
SUITE_NAMES: Final = {
    CS_AES128_GCM: "LISP_256_EC25519_AES128_GCM",
    CS_CHACHA20_POLY1305: "LISP_256_EC25519_CHACHA20_POLY1305 (RFC 8439)",
}

X25519_KEY_LEN: Final = 32
HEADER_LEN: Final = 8
SALT_LEN: Final = 4
IV_LEN: Final = 12
TAG_LEN: Final = 16
OVERHEAD: Final = IV_LEN + TAG_LEN  # bytes added after the LISP header
MIN_SEALED_LEN: Final = HEADER_LEN + OVERHEAD  # an empty inner packet
KEY_ID_MASK: Final = 0x03  # KK bits in the first header byte
_KK_CLEAR: Final = 0xFC

# Rekey limits: a new exchange starts at the soft limits; nothing should seal past the hard ones.
# 2**32 packets is far below the 2**64 counter space and below the point where the AES-GCM
# confidentiality bound (2**32 * 1400-byte packets = 2**39 blocks) starts to matter.
REKEY_AFTER_PACKETS: Final = 100_000_000
REKEY_AFTER_SECONDS: Final = 600.0
REJECT_AFTER_COUNTER: Final = 2**32
REJECT_AFTER_SECONDS: Final = 3 * REKEY_AFTER_SECONDS

_COUNTER: Final = struct.Struct("!Q")
_IV: Final = struct.Struct("!4sQ")  # salt || counter


class CryptoError(ValueError):
    """A key or packet failed a cryptographic check. `reason` is a short token for drop counters:
    'short', 'key-id', 'no-key', 'tag', 'expired', 'exhausted', 'suite', 'public-key', 'stale'."""

    def __init__(self, message: str, reason: str = "crypto") -> None:
        super().__init__(message)
        self.reason = reason


class ReplayError(ValueError):
    """An authentic packet was seen before (or is older than the replay window). Deliberately not
    a CryptoError, so a caller can count replays and forgeries apart."""

    reason = "replay"


def check_suite(cipher_suite: int) -> int:
    if cipher_suite not in SUPPORTED_SUITES:
        raise CryptoError(f"unsupported cipher suite {cipher_suite}", "suite")
    return cipher_suite


class EcdhKeyPair:
    """An X25519 key pair; `public` is the 32 raw bytes that go in the Security-Key LCAF."""

    __slots__ = ("_private", "public")

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private
        self.public: bytes = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> EcdhKeyPair:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> EcdhKeyPair:
        """For test vectors; the runtime only ever uses `generate()`."""
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def shared_secret(self, remote_public: bytes) -> bytes:
        """X25519(local private, remote public); CryptoError for a malformed or low-order key."""
        if len(remote_public) != X25519_KEY_LEN:
            raise CryptoError(
                f"X25519 public key must be 32 bytes, got {len(remote_public)}", "public-key"
            )
        try:
            secret = self._private.exchange(X25519PublicKey.from_public_bytes(remote_public))
        except ValueError:  # OpenSSL refuses an all-zero result (low-order point)
            raise CryptoError(
                "X25519 exchange failed: low-order public key", "public-key"
            ) from None
        if not any(secret):
            raise CryptoError(
                "X25519 shared secret is all zero: low-order public key", "public-key"
            )
        return secret

    def __repr__(self) -> str:
        return f"EcdhKeyPair(public={self.public.hex()})"  # never the private half


def kdf_context(local_public: bytes, remote_public: bytes) -> bytes:
    """`"0001" + "lisp-crypto" + hex(int(local) ^ int(remote)) + "0100"` (lispers.net).

    The keys are read big-endian from their raw bytes; the hex is lowercase, unpadded, no "0x".
    The XOR makes the context (and so the key) the same on both ends.
    """
    xored = int.from_bytes(local_public, "big") ^ int.from_bytes(remote_public, "big")
    return b"0001lisp-crypto" + format(xored, "x").encode("ascii") + b"0100"


def derive_key_material(local: EcdhKeyPair, remote_public: bytes) -> bytes:
    """The 32-byte RFC 8061 key material: HMAC-SHA256(key=context, msg=shared secret)."""
    secret = local.shared_secret(remote_public)
    return hmac.new(kdf_context(local.public, remote_public), secret, hashlib.sha256).digest()


def derive_data_key(local: EcdhKeyPair, remote_public: bytes, cipher_suite: int) -> bytes:
    """The AEAD key for `cipher_suite`: material[0:16] for AES-128-GCM (lispers.net's encrypt
    key), all 32 bytes for ChaCha20-Poly1305 (which needs a 256-bit key; our own choice)."""
    check_suite(cipher_suite)
    material = derive_key_material(local, remote_public)
    return material[:16] if cipher_suite == CS_AES128_GCM else material


def with_key_id(header: bytes, key_id: int) -> bytes:
    """`header` (8-byte LISP data header) with its KK bits set to `key_id` (0..3)."""
    if not 0 <= key_id <= 3:
        raise CryptoError(f"key-id {key_id} outside 0..3", "key-id")
    return bytes(((header[0] & _KK_CLEAR) | key_id,)) + header[1:]


def packet_key_id(packet: bytes) -> int:
    """The KK bits of a LISP data packet (0 = plaintext)."""
    return packet[0] & KEY_ID_MASK if packet else 0


class PacketCipher:
    """One data-plane key: seals and opens LISP data packets. Built once per key (the AEAD object
    is created here, not per packet)."""

    __slots__ = ("_aead", "_salt", "cipher_suite", "key_id")

    def __init__(
        self, cipher_suite: int, key: bytes, key_id: int, salt: bytes | None = None
    ) -> None:
        if not 1 <= key_id <= 3:
            raise CryptoError(f"key-id {key_id} outside 1..3", "key-id")
        check_suite(cipher_suite)
        want = 16 if cipher_suite == CS_AES128_GCM else 32
        if len(key) != want:
            raise CryptoError(f"cipher suite {cipher_suite} needs a {want}-byte key", "suite")
        self._aead: AESGCM | ChaCha20Poly1305 = (
            AESGCM(key) if cipher_suite == CS_AES128_GCM else ChaCha20Poly1305(key)
        )
        if salt is None:
            salt = os.urandom(SALT_LEN)
        if len(salt) != SALT_LEN:
            raise CryptoError(f"IV salt must be {SALT_LEN} bytes", "suite")
        self._salt = salt
        self.cipher_suite = cipher_suite
        self.key_id = key_id

    @property
    def overhead(self) -> int:
        return OVERHEAD

    def seal(self, header: bytes, inner: bytes, counter: int) -> bytes:
        """`header || IV || AEAD(inner, aad=header)`. `counter` must never repeat for this key.
        The header's KK bits are set to this key-id if they are not already."""
        if len(header) != HEADER_LEN:
            raise CryptoError(f"LISP data header must be 8 bytes, got {len(header)}", "short")
        if header[0] & KEY_ID_MASK != self.key_id:
            header = with_key_id(header, self.key_id)
        if not 0 <= counter <= REJECT_AFTER_COUNTER:
            raise CryptoError(f"counter {counter} past the hard limit of this key", "exhausted")
        iv = _IV.pack(self._salt, counter)
        return header + iv + self._aead.encrypt(iv, inner, header)

    def open(self, packet: bytes) -> tuple[int, bytes]:
        """(counter, inner) of a sealed packet; CryptoError if short, another key-id, or forged."""
        if len(packet) < MIN_SEALED_LEN:
            raise CryptoError(f"sealed packet too short ({len(packet)} bytes)", "short")
        if packet[0] & KEY_ID_MASK != self.key_id:
            raise CryptoError(
                f"packet key-id {packet[0] & KEY_ID_MASK} is not {self.key_id}", "key-id"
            )
        try:
            inner = self._aead.decrypt(packet[8:20], packet[20:], packet[:8])
        except InvalidTag:
            raise CryptoError("authentication tag does not match", "tag") from None
        return _COUNTER.unpack_from(packet, 12)[0], inner

    def __repr__(self) -> str:
        return f"PacketCipher(cs={self.cipher_suite}, key_id={self.key_id})"  # never the key


class ReplayWindow:
    """Anti-replay sliding window over 64-bit counters (RFC 6479 style ring of 64-bit blocks).

    Accepts every counter not seen before that is newer than `highest - size`; `size` is rounded
    up to a multiple of 64. In-order traffic costs a few small-int operations per packet; a block
    is cleared once every 64 packets. A jump far ahead moves the window (older counters become
    too old). Call `accept` only after the packet authenticated, or forgeries move the window.
    """

    __slots__ = ("_blocks", "_nblocks", "highest", "size")

    def __init__(self, size: int = 4096) -> None:
        if size < 64:
            raise ValueError("replay window must be at least 64")
        self.size = (size + 63) // 64 * 64
        self._nblocks = self.size // 64 + 1  # one spare block: the one `highest` is filling
        self._blocks = [0] * self._nblocks
        self.highest = -1

    def accept(self, counter: int) -> bool:
        """True (and record it) if `counter` is fresh; False for a duplicate or a too-old one."""
        highest = self.highest
        if counter > highest:
            block = counter >> 6
            old = highest >> 6
            if block != old:
                self._advance(old, block)
            self.highest = counter
            self._blocks[block % self._nblocks] |= 1 << (counter & 63)
            return True
        if highest - counter >= self.size or counter < 0:
            return False
        blocks = self._blocks
        i = (counter >> 6) % self._nblocks
        bit = 1 << (counter & 63)
        value = blocks[i]
        if value & bit:
            return False
        blocks[i] = value | bit
        return True

    def _advance(self, old: int, block: int) -> None:
        n = self._nblocks
        if block - old >= n:
            self._blocks = [0] * n
            return
        blocks = self._blocks
        for b in range(old + 1, block + 1):
            blocks[b % n] = 0
