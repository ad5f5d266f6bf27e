"""Peers that run lispers.net (issue 16 item 3): its RFC 8061 profile, opt-in per peer RLOC.

`security.lispers_peers` lists RLOC prefixes of lispers.net xTRs. With them, and only with them:
- the key exchange is plain RFC 8061 (lispers.net signs nothing), in the suite the ITR offered:
  CS 2 (AES-128-CBC + HMAC) or CS 5 (AES-128-GCM + HMAC), whatever ours is;
- keys come from lispers.net's KDF and packets use its framing (lisp/lispers_profile.py, tested
  against its golden vector): space padding, a 20-byte HMAC ICV, a random IV per packet;
- our Map-Requests to them carry our RLOC only inside the Security-Key LCAF (lispers.net deletes
  a key when the same RLOC follows as a plain ITR-RLOC), and our probes to them are keyed: a
  keyless probe would make it delete our key, and no padded MTU probes go to them.
What this protects: each packet's confidentiality and integrity. What not: replays (lispers.net's
IV cannot drive a window, and it keeps none), and the key exchange is unauthenticated, so a
rewritten Map-Reply can put an attacker in the middle: pair it with a trusted path to the
map-server. These packets run on the Python data path (the C engine does not speak the profile).
"""

from __future__ import annotations

import os
from ipaddress import ip_address

from lisp.address import Address
from lisp.crypto import CryptoError, EcdhKeyPair, ReplayWindow
from lisp.crypto_suites import CS_AES128_GCM
from lisp.lcaf import AfiList, SecurityKey
from lisp.lispers_profile import (
    GCM_TAG_LEN,
    ICV_LEN,
    PROFILE_SUITES,
    LispersCipher,
    lispers_keys,
)
from mesh.config import IpAddress, IpNetwork
from mesh.keys import DecapSlot, EncapState, data_header

X25519_KEY_LEN = 32
LISPERS_KEY_ID = 1  # lispers.net always uses key-id 1
PEER_PREFIX = "lispers:"  # the peer name of a lispers.net xTR: this and its RLOC


class LispersSeal:
    """EncapState.cipher for a lispers.net ETR: a fresh random IV per packet."""

    __slots__ = ("_cipher", "cipher_suite", "key_id")

    def __init__(self, cipher: LispersCipher, key_id: int) -> None:
        self._cipher = cipher
        self.cipher_suite = cipher.cipher_suite
        self.key_id = key_id

    @property
    def overhead(self) -> int:
        """The most it adds after the LISP header: IV, GCM tag, ICV, up to 15 bytes of padding."""
        tag = GCM_TAG_LEN if self.cipher_suite == CS_AES128_GCM else 0
        return self._cipher.iv_len + tag + ICV_LEN + 15

    def seal(self, header: bytes, inner: bytes, counter: int) -> bytes:
        return self._cipher.seal(header, inner, os.urandom(self._cipher.iv_len))

    def open(self, packet: bytes) -> tuple[int, bytes]:
        raise CryptoError("a sealing key does not open", "suite")


class LispersOpen:
    """DecapSlot.cipher for a lispers.net ITR. Its packets carry no counter: each gets the next
    number, so the replay window takes all of them (the profile has no replay protection)."""

    __slots__ = ("_cipher", "_next", "cipher_suite", "key_id")

    def __init__(self, cipher: LispersCipher, key_id: int) -> None:
        self._cipher = cipher
        self._next = 0
        self.cipher_suite = cipher.cipher_suite
        self.key_id = key_id

    def open(self, packet: bytes) -> tuple[int, bytes]:
        inner = self._cipher.open(packet)
        self._next += 1
        return self._next, inner


def is_lispers(rloc: str, peers: tuple[IpNetwork, ...]) -> bool:
    if not peers:
        return False
    try:
        address = ip_address(rloc)
    except ValueError:
        return False
    return any(address.version == p.version and address in p for p in peers)


def offered_public(key: SecurityKey | None) -> bytes:
    """The X25519 key of a lispers.net Security-Key LCAF (CS 2 or 5); CryptoError otherwise."""
    if key is None:
        raise CryptoError("no Security-Key", "public-key")
    if key.cipher_suite not in PROFILE_SUITES:
        raise CryptoError(
            f"cipher suite {key.cipher_suite} not in the lispers.net profile", "suite"
        )
    if key.revoke or len(key.keys) != 1 or len(key.keys[0]) != X25519_KEY_LEN:
        raise CryptoError("expected one 32-byte X25519 key", "public-key")
    return key.keys[0]


def encap_state(
    pair: EcdhKeyPair, remote_public: bytes, suite: int, iid: int, peer: str, now: float
) -> EncapState:
    """How we seal for a lispers.net ETR that answered our ITR key `pair` with `remote_public`."""
    encrypt_key, icv_key = lispers_keys(pair, remote_public)
    return EncapState(
        cipher=LispersSeal(LispersCipher(suite, encrypt_key, icv_key), LISPERS_KEY_ID),
        key_id=LISPERS_KEY_ID,
        remote_public=remote_public,
        header=data_header(iid, LISPERS_KEY_ID),
        created_at=now,
        peer_name=peer,
        python_only=True,
    )


def decap_slot(
    pair: EcdhKeyPair,
    itr_public: bytes,
    suite: int,
    peer: str,
    peer_eids: tuple[tuple[int, IpNetwork], ...],
    allowed: tuple[tuple[int, int, int], ...],
    now: float,
) -> DecapSlot:
    """How we open packets from a lispers.net ITR that offered `itr_public` to our ETR `pair`."""
    encrypt_key, icv_key = lispers_keys(pair, itr_public)
    return DecapSlot(
        cipher=LispersOpen(LispersCipher(suite, encrypt_key, icv_key), LISPERS_KEY_ID),
        window=ReplayWindow(),
        peer_name=peer,
        peer_eids=peer_eids,
        installed_at=now,
        itr_public=itr_public,
        allowed=allowed,
        python_only=True,
    )


def reply_rloc(rloc: IpAddress, suite: int, public: bytes) -> Address:
    """Our Map-Reply RLOC-record address for a lispers.net ITR: AFI-List{RLOC, Security-Key}, as
    lispers.net writes its own (lisp-wire.md §1.8)."""
    return AfiList((rloc, SecurityKey(suite, (public,), rloc)))
