"""The node's side of the RFC 8061 key exchange, bound to node identities.

Two X25519 key pairs per node, so each direction of a pair of nodes gets its own data key:
- the *ITR epoch* (key-id 1..3, rotated for rekeying) goes in our Map-Requests and RLOC-probes;
- the *ETR pair* goes in our Map-Replies.
A→B traffic is sealed with KDF(A.itr_epoch, B.etr_pair) and B→A with KDF(B.itr_epoch, A.etr_pair).

Encap state is per remote ETR key (one ETR key covers all of that ETR's RLOCs, so moving to another
RLOC keeps the key and its counter). Decap state is per (remote ITR RLOC, key-id): an ITR lists
all its RLOCs in the Map-Request, and each gets the same slot object, so the ITR can move uplinks
without a new exchange and the replay window follows it.

Every key exchange carries a signed proof (mesh.identity) unless the explicit interop mode is on:
a rewritten key in a Map-Request or Map-Reply fails verification and installs nothing.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from lisp.crypto import (
    REJECT_AFTER_COUNTER,
    REJECT_AFTER_SECONDS,
    REKEY_AFTER_SECONDS,
    CryptoError,
    EcdhKeyPair,
    PacketCipher,
    ReplayWindow,
    derive_data_key,
)
from lisp.data_header import DataHeader

IpAddress = IPv4Address | IPv6Address
IpNetwork = IPv4Network | IPv6Network
INTEROP_KEY_ID = 1  # lispers.net always uses key-id 1; so does our unauthenticated interop mode
# How long the peer whose keys an RLOC's slots hold must have been silent before another peer may
# claim that RLOC (an address handed to another node). Until then a claim is refused: packets
# are looked up by (source RLOC, key-id), so taking the slot would cut the owner off.
RLOC_TAKEOVER_AFTER = 300.0
# The hard limits (lisp.crypto): a key that sealed REJECT_AFTER_COUNTER packets, or lived this
# many rekey periods (its peer never answered a rekey), seals nothing more.
REJECT_AFTER_REKEYS = REJECT_AFTER_SECONDS / REKEY_AFTER_SECONDS


@dataclass(slots=True)
class ItrEpoch:
    key_id: int
    pair: EcdhKeyPair
    created_at: float


class PlainCipher:
    """RFC 9300 plaintext (KK = 0): the header in front of the inner packet, nothing else. Only
    with `security.encryption: false`, the explicit, logged interop mode."""

    __slots__ = ()
    cipher_suite = 0
    key_id = 0
    overhead = 0

    def seal(self, header: bytes, inner: bytes, counter: int) -> bytes:
        return header + inner


@dataclass(slots=True)
class EncapState:
    """How we seal packets for one remote ETR key (or, with encryption off, the one plaintext
    state every path shares: `plain_encap`)."""

    cipher: PacketCipher | PlainCipher | Any  # Any: mesh.lispers_peer.LispersSeal
    key_id: int
    remote_public: bytes
    header: bytes  # the precomputed 8-byte LISP header (I bit + instance-id, KK = key-id)
    created_at: float
    peer_name: str
    counter: int = 0
    certificate: str = ""  # the SHA-256 of the certificate it was agreed under (hex)
    # Key material for the C data path (mesh.fastpath), which seals with the same key, salt
    # and counter sequence; never logged, never in status.
    key: bytes = field(default=b"", repr=False)
    salt: bytes = field(default=b"", repr=False)
    # A framing only Python speaks (mesh.lispers_peer): never installed in the C engine.
    python_only: bool = False

    def seal(self, inner: bytes) -> bytes:
        self.counter += 1
        return self.cipher.seal(self.header, inner, self.counter)


@dataclass(slots=True)
class DecapSlot:
    """How we open packets from one remote ITR key (shared by all of that ITR's RLOCs)."""

    cipher: PacketCipher | Any  # Any: mesh.lispers_peer.LispersOpen
    window: ReplayWindow
    peer_name: str
    peer_eids: tuple[tuple[int, IpNetwork], ...]
    installed_at: float
    itr_public: bytes = b""
    key: bytes = field(default=b"", repr=False)
    last_used: float = 0.0
    certificate: str = ""  # the SHA-256 of the certificate it was agreed under (hex)
    packets: int = 0
    # Source-address check, precomputed: (version, network int, mask int) per certified EID.
    allowed: tuple[tuple[int, int, int], ...] = ()
    # A framing only Python speaks (mesh.lispers_peer): never installed in the C engine.
    python_only: bool = False


def allowed_sources(eids: tuple[tuple[int, IpNetwork], ...]) -> tuple[tuple[int, int, int], ...]:
    return tuple((net.version, int(net.network_address), int(net.netmask)) for _iid, net in eids)


def data_header(instance_id: int, key_id: int) -> bytes:
    return DataHeader(instance_id=instance_id or None, key_id=key_id).encode()


def plain_encap(instance_id: int, now: float) -> EncapState:
    """The state plaintext paths seal with (KK = 0; no key, so `key` stays empty: the C data
    path reads that as a plaintext path)."""
    return EncapState(
        cipher=PlainCipher(),
        key_id=0,
        remote_public=b"",
        header=data_header(instance_id, 0),
        created_at=now,
        peer_name="plaintext",
        salt=bytes(4),
    )


@dataclass
class KeyStore:
    cipher_suite: int
    instance_id: int
    rekey_after_seconds: float
    rekey_after_packets: int
    interop: bool = False
    epoch: ItrEpoch = field(init=False)
    etr_pair: EcdhKeyPair = field(init=False)
    previous_epochs: dict[int, ItrEpoch] = field(default_factory=dict)
    # Keyed by (our epoch public key, the ETR's public key): the pair determines the AEAD key,
    # so one state (and one never-reset counter) per pair means a nonce is never reused.
    encap: dict[tuple[bytes, bytes], EncapState] = field(default_factory=dict)
    decap: dict[tuple[str, int], DecapSlot] = field(default_factory=dict)
    rekeys: int = 0

    def __post_init__(self) -> None:
        self.epoch = ItrEpoch(INTEROP_KEY_ID, EcdhKeyPair.generate(), 0.0)
        self.etr_pair = EcdhKeyPair.generate()

    def start(self, now: float) -> None:
        self.epoch.created_at = now

    # ----- ITR side

    def epoch_for(self, key_id: int) -> ItrEpoch | None:
        if key_id == self.epoch.key_id:
            return self.epoch
        return self.previous_epochs.get(key_id)

    def rekey_due(self, now: float) -> bool:
        """Time for a new ITR epoch: the current one is old, or one of ITS keys sealed enough.
        Only the current epoch's states count: a superseded key that reached the packet limit
        must not ask for a rekey on every tick, forever (a rekey storm)."""
        if now - self.epoch.created_at >= self.rekey_after_seconds:
            return True
        current = self.epoch.pair.public
        return any(
            s.counter >= self.rekey_after_packets
            for (ours, _theirs), s in self.encap.items()
            if ours == current
        )

    def rotate(self, now: float) -> ItrEpoch:
        """Start a new ITR epoch (make-before-break: the old one keeps sealing until each peer
        has answered with the new key). States of older epochs go, with their key material."""
        old = self.epoch
        next_id = INTEROP_KEY_ID if self.interop else old.key_id % 3 + 1
        self.previous_epochs = {old.key_id: old}
        self.epoch = ItrEpoch(next_id, EcdhKeyPair.generate(), now)
        self.rekeys += 1
        kept = {old.pair.public, self.epoch.pair.public}
        for key in [k for k in self.encap if k[0] not in kept]:
            del self.encap[key]
        return self.epoch

    def install_encap(
        self, key_id: int, remote_public: bytes, peer_name: str, now: float
    ) -> EncapState | None:
        """The peer ETR answered our key-id `key_id` with `remote_public`. Returns the state to
        seal with, reusing it when nothing changed (a second EID of the same peer)."""
        epoch = self.epoch_for(key_id)
        if epoch is None:
            return None
        existing = self.encap.get((epoch.pair.public, remote_public))
        if existing is not None:
            return existing
        key = derive_data_key(epoch.pair, remote_public, self.cipher_suite)
        salt = os.urandom(4)
        state = EncapState(
            cipher=PacketCipher(self.cipher_suite, key, key_id, salt),
            key_id=key_id,
            remote_public=remote_public,
            header=data_header(self.instance_id, key_id),
            created_at=now,
            peer_name=peer_name,
            key=key,
            salt=salt,
        )
        # The peer confirmed this key: its states under other epochs, or under an ETR key it
        # no longer uses (it restarted), are superseded. Without this, a 120 s rekey leaves
        # ~720 states per peer a day, each walked per tick and kept in memory with its key.
        for stale in [
            k
            for k, s in self.encap.items()
            if s.peer_name == peer_name and (epoch is self.epoch or k[0] == epoch.pair.public)
        ]:
            del self.encap[stale]
        self.encap[(epoch.pair.public, remote_public)] = state
        return state

    def past_limits(self, state: EncapState, now: float) -> bool:
        """Has `state` reached a hard limit: too many packets, or too old (its peer never
        answered our rekeys)?"""
        too_old = now - state.created_at >= REJECT_AFTER_REKEYS * self.rekey_after_seconds
        return too_old or state.counter >= REJECT_AFTER_COUNTER

    def expire_encap(self, now: float) -> list[EncapState]:
        """Remove (and return) the states past the hard limits."""
        gone = [k for k, s in self.encap.items() if self.past_limits(s, now)]
        return [self.encap.pop(k) for k in gone]

    # ----- ETR side

    def install_decap(
        self,
        itr_rlocs: list[str],
        key_id: int,
        itr_public: bytes,
        peer_name: str,
        peer_eids: tuple[tuple[int, IpNetwork], ...],
        now: float,
    ) -> DecapSlot | None:
        """An ITR offered `itr_public` under `key_id`: install (or keep) the slot for each of its
        RLOCs. Other key-ids stay installed, so packets sealed with the previous key still
        open until the ITR has moved over (make-before-break). An RLOC another peer is using
        is left to it; None when that leaves no RLOC (the claim is refused)."""
        itr_rlocs = [r for r in itr_rlocs if not self._owned_by_another(r, peer_name, now)]
        if not itr_rlocs:
            return None
        # Only EIDs of our instance-id may be inner sources: the same prefix in another
        # instance is another network's (the controller may hand it out there too).
        peer_eids = tuple(e for e in peer_eids if e[0] == self.instance_id)
        current = next(
            (self.decap.get((rloc, key_id)) for rloc in itr_rlocs if (rloc, key_id) in self.decap),
            None,
        )
        if current is not None and current.itr_public == itr_public:
            slot = current
        else:
            key = derive_data_key(self.etr_pair, itr_public, self.cipher_suite)
            slot = DecapSlot(
                cipher=PacketCipher(self.cipher_suite, key, key_id),
                window=ReplayWindow(),
                peer_name=peer_name,
                peer_eids=peer_eids,
                installed_at=now,
                itr_public=itr_public,
                key=key,
                allowed=allowed_sources(peer_eids),
            )
        for rloc in itr_rlocs:
            self.decap[(rloc, key_id)] = slot
        return slot

    def _owned_by_another(self, rloc: str, peer_name: str, now: float) -> bool:
        return any(
            r == rloc
            and slot.peer_name != peer_name
            and now - max(slot.last_used, slot.installed_at) < RLOC_TAKEOVER_AFTER
            for (r, _key_id), slot in self.decap.items()
        )

    def expire_decap(self, now: float, idle_after: float) -> int:
        """Drop slots unused for `idle_after` seconds whose peer has a newer slot in use."""
        newest: dict[str, float] = {}  # per RLOC, when its newest slot was installed
        for (rloc, _key_id), slot in self.decap.items():
            newest[rloc] = max(newest.get(rloc, -math.inf), slot.installed_at)
        removed = 0
        for key, slot in list(self.decap.items()):
            idle = now - max(slot.last_used, slot.installed_at)
            if newest[key[0]] > slot.installed_at and idle > idle_after:
                del self.decap[key]
                removed += 1
        return removed


def random_nonce() -> int:
    return int.from_bytes(os.urandom(8), "big")


__all__ = ["CryptoError", "DecapSlot", "EncapState", "KeyStore", "random_nonce"]
