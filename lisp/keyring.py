"""Per-peer data-plane keys with make-before-break rekeying over key-ids 1..3 (RFC 8061 §6).

Sans-IO: every method that depends on time takes `now` (seconds, any monotonic clock).

ITR side, one `EncapKeyring` per remote ETR RLOC:
1. `begin_exchange(now)` makes a fresh X25519 key pair and picks the key-id the new key will use:
   the next one in the 1 -> 2 -> 3 -> 1 rotation that is not the key in use, so the ETR can hold
   old and new keys side by side. The caller puts the public key (and the key-id, in the identity
   proof) in a Map-Request and keeps the request nonce.
2. The ETR installs the matching decap key *before* it answers.
3. `complete_exchange(pending, remote_public, cipher_suite, now)` on the Map-Reply switches
   sealing to the new key. Until then the ITR keeps sealing with the old key (make-before-break).
A completed exchange retires every older pending one; a pending exchange whose key-id was reused
by a later one can no longer complete (the ETR's slot now holds the later key).

ETR side, one `DecapKeyring` per remote ITR RLOC (and port): `install` puts a key in its key-id
slot; a packet picks its slot by the header's KK bits. Older slots stay valid until the newest key
has been seen in traffic plus `grace_seconds`, and no slot outlives `max_age_seconds`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Final

from lisp.crypto import (
    DEFAULT_SUITE,
    KEY_ID_MASK,
    MIN_SEALED_LEN,
    REJECT_AFTER_COUNTER,
    REJECT_AFTER_SECONDS,
    REKEY_AFTER_PACKETS,
    REKEY_AFTER_SECONDS,
    CryptoError,
    EcdhKeyPair,
    PacketCipher,
    ReplayError,
    ReplayWindow,
    check_suite,
    derive_data_key,
)

DECAP_GRACE_SECONDS: Final = 30.0  # old keys after the new key-id shows up in traffic
DECAP_MAX_AGE_SECONDS: Final = REJECT_AFTER_SECONDS + 60.0  # the ITR stops at REJECT_AFTER
_NEXT_KEY_ID: Final = (1, 2, 3, 1)  # _NEXT_KEY_ID[k]: the key-id after k (0: none yet)
_sequence = itertools.count(1)


@dataclass(frozen=True, slots=True)
class PendingExchange:
    """An exchange the ITR started: its fresh key pair and the key-id the new key will use."""

    key_id: int
    keypair: EcdhKeyPair = field(repr=False)
    cipher_suite: int
    started: float
    seq: int = field(default_factory=lambda: next(_sequence), compare=False)

    @property
    def public(self) -> bytes:
        return self.keypair.public


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """One key as `status` shows it (JSON-friendly via `as_dict`)."""

    key_id: int
    cipher_suite: int
    age: float
    packets: int
    role: str  # "encap", "decap", "decap-old"

    def as_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "cipher_suite": self.cipher_suite,
            "age": round(self.age, 3),
            "packets": self.packets,
            "role": self.role,
        }


class EncapKeyring:
    """The ITR's key towards one ETR RLOC: the current sealing key and any pending exchanges.

    `rotate_key_ids=False` keeps every key on key-id 1, as lispers.net does (interop mode; no
    overlap of old and new keys at the ETR then).
    """

    def __init__(
        self,
        cipher_suite: int = DEFAULT_SUITE,
        *,
        rekey_after_packets: int = REKEY_AFTER_PACKETS,
        rekey_after_seconds: float = REKEY_AFTER_SECONDS,
        reject_after_packets: int = REJECT_AFTER_COUNTER,
        reject_after_seconds: float = REJECT_AFTER_SECONDS,
        rotate_key_ids: bool = True,
    ) -> None:
        self.cipher_suite = check_suite(cipher_suite)
        if not 0 < rekey_after_packets <= reject_after_packets <= REJECT_AFTER_COUNTER:
            raise ValueError("need 0 < rekey_after_packets <= reject_after_packets <= 2**32")
        if not 0 < rekey_after_seconds <= reject_after_seconds:
            raise ValueError("need 0 < rekey_after_seconds <= reject_after_seconds")
        self.rekey_after_packets = rekey_after_packets
        self.rekey_after_seconds = rekey_after_seconds
        self.reject_after_packets = reject_after_packets
        self.reject_after_seconds = reject_after_seconds
        self.rotate_key_ids = rotate_key_ids
        self._cipher: PacketCipher | None = None
        self._counter = 0
        self._installed = 0.0
        self._pending: dict[int, PendingExchange] = {}  # key-id -> latest exchange using it
        self._last_begun = 0

    # -- key exchange ----------------------------------------------------------------------

    def begin_exchange(self, now: float) -> PendingExchange:
        """A fresh key pair for a new Map-Request, on the next key-id (never the one in use)."""
        if self.rotate_key_ids:
            current = self.key_id
            key_id = _NEXT_KEY_ID[self._last_begun]
            if key_id == current:
                key_id = _NEXT_KEY_ID[key_id]
        else:
            key_id = 1
        pending = PendingExchange(key_id, EcdhKeyPair.generate(), self.cipher_suite, now)
        self._pending[key_id] = pending
        self._last_begun = key_id
        return pending

    def complete_exchange(
        self, pending: PendingExchange, remote_public: bytes, cipher_suite: int, now: float
    ) -> int:
        """Install the key agreed with the Map-Reply's public key as the sealing key; returns
        its key-id. CryptoError if the exchange is stale/unknown, the suite is not the one
        offered, or the public key is bad (nothing changes then)."""
        if self._pending.get(pending.key_id) is not pending:
            raise CryptoError(
                f"key exchange for key-id {pending.key_id} is stale or unknown", "stale"
            )
        if cipher_suite != pending.cipher_suite:
            raise CryptoError(
                f"reply chose cipher suite {cipher_suite}, we offered {pending.cipher_suite}",
                "suite",
            )
        key = derive_data_key(pending.keypair, remote_public, cipher_suite)
        self._cipher = PacketCipher(cipher_suite, key, pending.key_id)
        self._counter = 0
        self._installed = now
        self._pending = {k: p for k, p in self._pending.items() if p.seq > pending.seq}
        return pending.key_id

    def clear(self) -> None:
        """Forget every key (the peer stopped offering one: RFC 8061 'unkeying')."""
        self._cipher = None
        self._counter = 0
        self._pending.clear()

    # -- data path -------------------------------------------------------------------------

    def seal(self, header: bytes, inner: bytes) -> bytes:
        """Encrypt one packet with the current key; CryptoError if there is none or it is used
        up (`reject_after_packets`)."""
        counter = self._counter
        cipher = self._cipher
        if cipher is None or counter >= self.reject_after_packets:
            raise CryptoError(
                "no data-plane key" if cipher is None else "key used up: rekey",
                "no-key" if cipher is None else "exhausted",
            )
        self._counter = counter + 1
        return cipher.seal(header, inner, counter)

    # -- timers and status -----------------------------------------------------------------

    def needs_rekey(self, now: float) -> bool:
        """True when a new exchange should start: no key yet, or the key passed a soft limit
        (packets or age), which comes well before the hard limits at which it stops working."""
        if self._cipher is None:
            return True
        return (
            self._counter >= self.rekey_after_packets
            or now - self._installed >= self.rekey_after_seconds
        )

    def expire(self, now: float) -> bool:
        """Drop the key once it is older than `reject_after_seconds`; True if it was dropped.
        Also forgets pending exchanges older than that."""
        self._pending = {
            k: p for k, p in self._pending.items() if now - p.started < self.reject_after_seconds
        }
        if self._cipher is not None and now - self._installed >= self.reject_after_seconds:
            self._cipher = None
            self._counter = 0
            return True
        return False

    @property
    def has_key(self) -> bool:
        return self._cipher is not None

    @property
    def key_id(self) -> int:
        """Key-id of the sealing key, 0 when there is none (plaintext)."""
        return self._cipher.key_id if self._cipher is not None else 0

    @property
    def packets(self) -> int:
        return self._counter

    @property
    def pending(self) -> tuple[PendingExchange, ...]:
        return tuple(sorted(self._pending.values(), key=lambda p: p.seq))

    def status(self, now: float) -> KeyStatus | None:
        if self._cipher is None:
            return None
        return KeyStatus(
            self._cipher.key_id,
            self._cipher.cipher_suite,
            now - self._installed,
            self._counter,
            "encap",
        )


class _Slot:
    __slots__ = ("cipher", "deadline", "installed", "packets", "peer", "seen", "window")

    def __init__(
        self, cipher: PacketCipher, now: float, deadline: float, window: int, peer: object
    ) -> None:
        self.cipher = cipher
        self.window = ReplayWindow(window)
        self.installed = now
        self.deadline = deadline
        self.packets = 0
        self.seen = False
        self.peer = peer


class DecapKeyring:
    """The ETR's keys from one remote ITR: up to three slots (key-ids 1..3)."""

    def __init__(
        self,
        *,
        grace_seconds: float = DECAP_GRACE_SECONDS,
        max_age_seconds: float = DECAP_MAX_AGE_SECONDS,
        replay_window: int = 4096,
    ) -> None:
        self.grace_seconds = grace_seconds
        self.max_age_seconds = max_age_seconds
        self.replay_window = replay_window
        self._slots: list[_Slot | None] = [None, None, None, None]  # index = key-id
        self._newest: _Slot | None = None

    def install(self, key_id: int, cipher: PacketCipher, now: float, peer: object = None) -> None:
        """Put a key in slot `key_id` (replacing what was there, with a fresh replay window).
        Other slots stay valid until this key is seen in traffic plus the grace period.
        `peer` is whatever the caller wants back from `open_with_peer` (its verified identity)."""
        if cipher.key_id != key_id or not 1 <= key_id <= 3:
            raise CryptoError(f"cipher has key-id {cipher.key_id}, slot is {key_id}", "key-id")
        slot = _Slot(cipher, now, now + self.max_age_seconds, self.replay_window, peer)
        self._slots[key_id] = slot
        self._newest = slot

    def open(self, packet: bytes, now: float) -> bytes:
        """The inner packet. CryptoError (short, no key for the key-id, expired key, bad tag) or
        ReplayError (authentic but seen before / too old)."""
        if len(packet) < MIN_SEALED_LEN:
            raise CryptoError(f"sealed packet too short ({len(packet)} bytes)", "short")
        slot = self._slots[packet[0] & KEY_ID_MASK]
        if slot is None or now > slot.deadline:
            raise self._missing(packet[0] & KEY_ID_MASK, slot, now)
        counter, inner = slot.cipher.open(packet)
        if not slot.window.accept(counter):
            raise ReplayError(f"replayed or too old counter {counter}")
        if not slot.seen:
            self._first_seen(slot, now)
        slot.packets += 1
        return inner

    def open_with_peer(self, packet: bytes, now: float) -> tuple[bytes, object]:
        """`open`, plus the `peer` given to `install` for the key that opened it (for ingress
        policy: check the inner source EID against what that peer may send)."""
        inner = self.open(packet, now)
        slot = self._slots[packet[0] & KEY_ID_MASK]
        assert slot is not None
        return inner, slot.peer

    def _missing(self, key_id: int, slot: _Slot | None, now: float) -> CryptoError:
        if key_id == 0:
            return CryptoError("plaintext packet (key-id 0) where a key is required", "no-key")
        if slot is None:
            return CryptoError(f"no decap key for key-id {key_id}", "no-key")
        self._drop(key_id)
        return CryptoError(f"decap key-id {key_id} expired", "expired")

    def _first_seen(self, slot: _Slot, now: float) -> None:
        slot.seen = True
        if slot is self._newest:  # the ITR switched: retire the other keys after a grace period
            limit = now + self.grace_seconds
            for other in self._slots:
                if other is not None and other is not slot and other.deadline > limit:
                    other.deadline = limit

    def _drop(self, key_id: int) -> None:
        if self._slots[key_id] is self._newest:
            self._newest = None
        self._slots[key_id] = None

    def expire(self, now: float) -> list[int]:
        """Forget keys past their deadline; returns their key-ids."""
        gone = [k for k in (1, 2, 3) if (s := self._slots[k]) is not None and now > s.deadline]
        for key_id in gone:
            self._drop(key_id)
        return gone

    def remove(self, key_id: int) -> None:
        self._drop(key_id)

    @property
    def key_ids(self) -> tuple[int, ...]:
        return tuple(k for k in (1, 2, 3) if self._slots[k] is not None)

    @property
    def has_key(self) -> bool:
        return any(self._slots)

    def status(self, now: float) -> list[KeyStatus]:
        return [
            KeyStatus(
                k,
                s.cipher.cipher_suite,
                now - s.installed,
                s.packets,
                "decap" if s is self._newest else "decap-old",
            )
            for k in (1, 2, 3)
            if (s := self._slots[k]) is not None
        ]
