"""The node's RFC 8061 key exchange as one state machine: what an offered key may change.

As Nebula's handshake/machine.go and h11's _state.py, every decision about a peer's key is made
here and nowhere else; the callers (mesh.etr_answer for Map-Requests, mesh.itr_resolve for
Map-Replies) only find the key in a message and say what the outcome did to the packets. Each
entry point takes `now` (the xTR's clock); wall-clock times of proofs and certificates come from
the authority's injected clock, and certificates are judged by its injected verifier.

The state it moves (mesh.keys.KeyStore): our ITR epochs (key-id 1..3), the encap state per remote
ETR key and the decap slots per (remote ITR RLOC, key-id). The transitions:

    Map-Request with key K from ITR I  ->  decap slot (I's RLOCs, key-id) = K       (accept_request)
    Map-Reply with key K for key-id k  ->  encap state (epoch k, K), older ones go  (accept_reply)

Everything else is a refusal, `KxRefused`, naming the drop counter it is counted under; nothing
is installed then. In the order checked: `kx-bad-key`, `kx-cipher-mismatch`, `kx-rate-limited`
(requests: before any public-key work), `kx-auth-failed` / `kx-replayed` (the proof),
`kx-revoked-peer`, `kx-retired-certificate`, `kx-wrong-instance`, `kx-rloc-taken` (requests),
`kx-stale-epoch` (replies).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address

from certs.format import Eid, IdentityError
from lisp.address import Address
from lisp.crypto import CryptoError
from lisp.kx_lcaf import build_reply_rloc_address, build_request_itr_rloc, public_key_of
from lisp.lcaf import JsonLcaf, SecurityKey
from lisp.records import eid_prefix
from mesh.config import IpAddress, IpNetwork
from mesh.keys import EncapState, KeyStore
from mesh.kx import KxAuthority, KxReplayError
from mesh.rate_limit import TokenBuckets

# Keyed Map-Requests (each an ECDSA verify, an X25519 and an ECDSA sign) per claimed ITR-RLOC,
# and in all: far above what rekeying and probing need (a few per peer per minute), far below
# what would starve the data path sharing the event loop.
KX_PER_SOURCE = (5.0, 20.0)  # per second, burst
KX_TOTAL = (200.0, 400.0)
_ANY = (eid_prefix(IPv4Address(0), 0), eid_prefix(IPv6Address(0), 0))  # interop: any source


class KxRefused(Exception):
    """An offered key that installs nothing: `drop` is the counter, `reason` says why."""

    def __init__(self, drop: str, reason: str) -> None:
        super().__init__(reason)
        self.drop = drop
        self.reason = reason


class KeyExchange:
    """Our side of every key exchange, signing and checking (see the module docstring).

    `authority` is None only in the explicit unauthenticated interop mode: keys are then taken
    unsigned, and any inner source is accepted from them. `revoked` (node names) and `retired`
    (certificate fingerprints, SHA-256 hex) come from the controller's desired state."""

    def __init__(self, keys: KeyStore, authority: KxAuthority | None) -> None:
        self.keys = keys
        self.authority = authority
        self.revoked: frozenset[str] = frozenset()
        self.retired: frozenset[str] = frozenset()
        self.per_source = TokenBuckets(*KX_PER_SOURCE)
        self.total = TokenBuckets(*KX_TOTAL, max_keys=1)

    # ----- the Security-Key both directions carry

    def offered_public(self, key: SecurityKey | None) -> bytes:
        """The peer's public key from its Security-Key LCAF, in our cipher suite."""
        if key is None:
            raise KxRefused(
                "peer-without-encryption", "no encryption key offered: refusing plaintext"
            )
        try:
            public = public_key_of(key)
        except CryptoError as exc:
            raise KxRefused("kx-bad-key", f"unusable key: {exc}") from None
        if key.cipher_suite != self.keys.cipher_suite:
            raise KxRefused(
                "kx-cipher-mismatch",
                f"cipher suite {key.cipher_suite} offered, {self.keys.cipher_suite} in use",
            )
        return public

    def _check_peer(self, name: str, fingerprint: str) -> None:
        if name in self.revoked:
            raise KxRefused("kx-revoked-peer", f"node {name} is revoked")
        if fingerprint in self.retired:
            raise KxRefused(
                "kx-retired-certificate",
                f"node {name} offered a certificate it renewed ({fingerprint[:16]}…)",
            )

    # ----- ITR side: our Map-Requests offer our epoch key; their Map-Replies answer it

    def request_itr_rloc(
        self,
        nonce: int,
        itr_rloc: IpAddress,
        rlocs: tuple[IpAddress, ...],
        requested: tuple[Eid, ...],
    ) -> Address:
        """ITR-RLOC 1 of a Map-Request asking for `requested`: our current epoch key, and its
        signed proof (naming our RLOCs and what we ask for)."""
        keys = self.keys
        epoch = keys.epoch
        proof = None
        if self.authority is not None:
            proof = self.authority.request_proof(
                nonce, keys.cipher_suite, epoch.key_id, epoch.pair.public, rlocs, requested
            )
        return build_request_itr_rloc(keys.cipher_suite, epoch.pair.public, itr_rloc, proof)

    def accept_reply(
        self,
        key: SecurityKey | None,
        proof: JsonLcaf | None,
        nonce: int,
        key_id: int,
        eid: tuple[int, IpNetwork],
        rlocs: tuple[IpAddress, ...],
        now: float,
    ) -> EncapState:
        """The ETR answered our key-id `key_id` for `eid`: the state to seal with."""
        public = self.offered_public(key)
        peer_name = f"rloc:{rlocs[0]}" if rlocs else "rloc:?"
        fingerprint = ""
        if self.authority is not None:
            try:
                peer = self.authority.verify_reply(
                    proof, nonce, self.keys.cipher_suite, key_id, public, (eid,), rlocs, now
                )
            except IdentityError as exc:
                raise KxRefused("kx-auth-failed", str(exc)) from None
            peer_name, fingerprint = peer.name, peer.fingerprint
            self._check_peer(peer_name, fingerprint)
        elif peer_name in self.revoked:
            raise KxRefused("kx-revoked-peer", f"node {peer_name} is revoked")
        encap = self.keys.install_encap(key_id, public, peer_name, now)
        if encap is None:
            raise KxRefused("kx-stale-epoch", f"answers key-id {key_id}, which we no longer hold")
        encap.certificate = fingerprint
        return encap

    # ----- ETR side: their Map-Requests offer their epoch key; our Map-Replies answer it

    def accept_request(
        self,
        key: SecurityKey,
        proof: JsonLcaf | None,
        nonce: int,
        rlocs: Sequence[str],
        claimed: str,
        requested: tuple[Eid, ...],
        now: float,
        relays: Mapping[str, str] | None = None,
    ) -> tuple[str, int]:
        """An ITR at `rlocs` (`claimed`: the ITR-RLOC its key came with) offered its key:
        (peer name, key-id) once its decap slot is installed. `relays`: the RTRs' RLOCs (and
        names) a node behind a NAT lists among its own; no slot is installed for them."""
        public = self.offered_public(key)
        if not self.per_source.allow(claimed, now) or not self.total.allow("", now):
            raise KxRefused("kx-rate-limited", "too many key exchanges")
        keys = self.keys
        iid = keys.instance_id
        if self.authority is None:
            # Interop mode: no identity, so any inner source is accepted from this key.
            peer_name, key_id, fingerprint = f"rloc:{claimed}", 1, ""
            peer_eids: tuple[tuple[int, IpNetwork], ...] = tuple((iid, n) for n in _ANY)
            if peer_name in self.revoked:
                raise KxRefused("kx-revoked-peer", f"node {peer_name} is revoked")
        else:
            try:
                peer = self.authority.verify_request(
                    proof,
                    nonce,
                    keys.cipher_suite,
                    public,
                    tuple(ip_address(r) for r in rlocs),
                    now,
                    requested,
                )
            except KxReplayError as exc:
                raise KxRefused("kx-replayed", str(exc)) from None
            except IdentityError as exc:
                raise KxRefused("kx-auth-failed", str(exc)) from None
            peer_name, peer_eids, key_id = peer.name, peer.eids, peer.key_id
            fingerprint = peer.fingerprint
            self._check_peer(peer.name, fingerprint)
            if not any(eid_iid == iid for eid_iid, _ in peer_eids):
                raise KxRefused(
                    "kx-wrong-instance",
                    f"the certificate of {peer_name} names no EID in instance-id {iid}",
                )
        # An RTR's address is the RTR's own: a node behind it names it among its ITR-RLOCs (to be
        # answered through it), but its packets reach us with its own RLOC in the relay frame.
        relays = relays or {}
        rlocs = [r for r in rlocs if relays.get(r, peer_name) == peer_name]
        slot = keys.install_decap(list(rlocs), key_id, public, peer_name, peer_eids, now)
        if slot is None:
            raise KxRefused(
                "kx-rloc-taken",
                f"the RLOCs {list(rlocs)} of {peer_name} are in use by another node",
            )
        slot.certificate = fingerprint
        return peer_name, key_id

    def reply_rloc(self, rloc: IpAddress, proof: JsonLcaf | None) -> Address:
        """An RLOC-record address of our Map-Reply to a keyed request: our ETR key."""
        keys = self.keys
        return build_reply_rloc_address(rloc, keys.cipher_suite, keys.etr_pair.public, proof)

    def reply_proof(
        self,
        nonce: int,
        key_id: int,
        eids: tuple[tuple[int, IpNetwork], ...],
        rlocs: tuple[IpAddress, ...],
    ) -> JsonLcaf | None:
        """Our signed answer to the request `nonce` (None in the interop mode)."""
        if self.authority is None:
            return None
        keys = self.keys
        return self.authority.reply_proof(
            nonce, keys.cipher_suite, key_id, keys.etr_pair.public, eids, rlocs
        )
