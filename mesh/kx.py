"""Binds the RFC 8061 key exchange to node identities: what the xTR signs and checks.

Requests prove the ITR's key, its RLOCs and the EID-prefixes asked for (so a request recorded on
its way to one ETR is refused by every other: it does not ask for their EIDs); their EIDs come
from the certificate and become the inner source addresses the ETR accepts from that key. Replies
prove the ETR's key, the EID-prefixes answered and the RLOCs to use. A proof that fails raises
`IdentityError` with the reason.

Freshness (issue 12 finding 1): a request carries the time it was signed. One signed more than
FRESHNESS from our clock is refused, and so is one older than the newest request already
accepted from that peer unless it offers the very key that one did. So a request recorded and
replayed once the ITR's key-id has cycled back can neither bring back the old key nor reset the
replay window of the slot it would land in (`kx-replayed`).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certs.files import read_ca_bundle, read_certificate, read_private_key
from certs.format import Eid, IdentityError
from certs.verify import CaBundleVerifier, CertificateVerifier, as_verifier
from lisp import InstanceId, RequestRecord
from lisp.lcaf import JsonLcaf
from lisp.records import eid_prefix
from mesh.config import IpAddress, IpNetwork
from mesh.identity import (
    KxTranscript,
    NodeIdentity,
    PeerIdentity,
    make_proof,
    parse_proof,
    verify_proof,
)

FRESHNESS = 300.0  # seconds either way: the certificates' clock-skew allowance
PEER_MEMORY = 8192  # peers whose newest request time is remembered (least recent forgotten)
PROOF_CACHE = 1024  # verified proofs remembered by content
Clock = Callable[[], float]


class KxReplayError(IdentityError):
    """A correctly signed request that is not fresh: replayed, or from a far-off clock."""


def requested_eids(records: Sequence[RequestRecord]) -> tuple[Eid, ...]:
    """The EID-prefixes a Map-Request asks for, as both ends put them in its transcript."""
    out: list[Eid] = []
    for record in records:
        eid = record.eid
        iid = eid.iid if isinstance(eid, InstanceId) else 0
        address = eid.address if isinstance(eid, InstanceId) else eid
        try:
            out.append((iid, eid_prefix(address, record.mask_len)))
        except (TypeError, ValueError):
            continue  # not an IP EID: nothing we answer
    return tuple(out)


@dataclass(frozen=True)
class Peer:
    name: str
    eids: tuple[tuple[int, IpNetwork], ...]
    key_id: int
    fingerprint: str = ""  # SHA-256 of its certificate (DER), hex


class KxAuthority:
    def __init__(
        self,
        identity: NodeIdentity,
        trust: CertificateVerifier | x509.Certificate,
        clock: Clock = time.time,
    ) -> None:
        if identity.certificate is None:
            raise IdentityError(f"node {identity.name} has no certificate")
        self.identity = identity
        # Which certificates a key exchange accepts (the mesh CA unless one is injected).
        self.verifier = as_verifier(trust)
        # node name -> EIDs the controller assigned it beyond its certificate's (app replicas);
        # set by the xTR from Security.delegated_eids, replaced whole on reconfigure.
        self.delegations: dict[str, tuple[tuple[int, IpNetwork], ...]] = {}
        self.clock = clock  # wall-clock seconds: proof times and certificate validity
        self._newest: OrderedDict[str, tuple[int, bytes]] = OrderedDict()  # peer: (ms, key)
        self._proofs: OrderedDict[bytes, PeerIdentity] = OrderedDict()  # verified, by content

    @classmethod
    def from_files(
        cls,
        name: str,
        key: str,
        cert: str,
        ca: str,
        private_key: ec.EllipticCurvePrivateKey | None = None,
        clock: Clock = time.time,
    ) -> KxAuthority:
        """`private_key`, when given, is used instead of reading the `key` file (a TPM key)."""
        from pathlib import Path

        signing_key = private_key if private_key is not None else read_private_key(Path(key))
        certificate = read_certificate(Path(cert))
        if certificate.public_key() != signing_key.public_key():
            raise IdentityError(f"{cert} is not the certificate of this node's key")
        identity = NodeIdentity(name, signing_key, certificate)
        return cls(identity, CaBundleVerifier(read_ca_bundle(Path(ca))), clock)

    def request_proof(
        self,
        nonce: int,
        cipher_suite: int,
        key_id: int,
        public: bytes,
        rlocs: tuple[IpAddress, ...],
        requested: tuple[Eid, ...] = (),
    ) -> JsonLcaf:
        issued = int(self.clock() * 1000)
        transcript = KxTranscript(
            "request", nonce, cipher_suite, key_id, public, requested, rlocs, issued
        )
        return make_proof(self.identity, transcript)

    def reply_proof(
        self,
        nonce: int,
        cipher_suite: int,
        key_id: int,
        public: bytes,
        eids: tuple[tuple[int, IpNetwork], ...],
        rlocs: tuple[IpAddress, ...],
    ) -> JsonLcaf:
        issued = int(self.clock() * 1000)
        transcript = KxTranscript("reply", nonce, cipher_suite, key_id, public, eids, rlocs, issued)
        return make_proof(self.identity, transcript)

    def verify_request(
        self,
        proof: JsonLcaf | None,
        nonce: int,
        cipher_suite: int,
        public: bytes,
        rlocs: tuple[IpAddress, ...],
        now: float,
        requested: tuple[Eid, ...] = (),
    ) -> Peer:
        """The peer behind a keyed Map-Request; IdentityError (KxReplayError when the proof
        is genuine but not fresh). `now` is the xTR's clock; times come from `self.clock`."""
        if proof is None:
            raise IdentityError("the Map-Request carries no identity proof")
        parsed = parse_proof(proof)
        transcript = KxTranscript(
            "request", nonce, cipher_suite, parsed.key_id, public, requested, rlocs,
            parsed.issued_at_ms,
        )  # fmt: skip
        wall = self.clock()
        # Stale is refused before any public-key work; the time is signed, so once the proof
        # verifies this check holds for the signed value too.
        self._check_window(parsed.issued_at_ms, wall)
        peer = self._verified(proof, transcript, wall)
        self._check_fresh(peer.name, parsed.issued_at_ms, public)
        eids = (*peer.eids, *self.delegations.get(peer.name, ()))
        return Peer(peer.name, eids, parsed.key_id, peer.fingerprint)

    def _verified(self, proof: JsonLcaf, transcript: KxTranscript, wall: float) -> PeerIdentity:
        """verify_proof, remembering what verified: the same signed bytes again (a retry, a
        replay within the window) cost a hash, not an ECDSA verify."""
        key = hashlib.sha256(proof.text.encode() + transcript.encode()).digest()
        known = self._proofs.get(key)
        if known is not None and wall <= known.not_after.timestamp():
            self._proofs.move_to_end(key)
            return known
        peer = verify_proof(self.verifier, proof, transcript, wall)
        self._proofs[key] = peer
        if len(self._proofs) > PROOF_CACHE:
            self._proofs.popitem(last=False)
        return peer

    @staticmethod
    def _check_window(issued_ms: int, wall: float) -> None:
        age = wall - issued_ms / 1000
        if abs(age) > FRESHNESS:
            raise KxReplayError(
                f"key exchange signed {age:.0f} s from now (more than "
                f"{FRESHNESS:g} s): replayed, or a clock is wrong"
            )

    def _check_fresh(self, name: str, issued_ms: int, public: bytes) -> None:
        newest = self._newest.get(name)
        if newest is not None and issued_ms < newest[0]:
            if public != newest[1]:
                raise KxReplayError(
                    f"key exchange from node {name} is older than its newest one and offers "
                    "another key: replayed"
                )
            return  # a late copy of the newest exchange: nothing changes
        self._newest[name] = (issued_ms, public)
        self._newest.move_to_end(name)
        while len(self._newest) > PEER_MEMORY:
            self._newest.popitem(last=False)

    def verify_reply(
        self,
        proof: JsonLcaf | None,
        nonce: int,
        cipher_suite: int,
        key_id: int,
        public: bytes,
        eids: tuple[tuple[int, IpNetwork], ...],
        rlocs: tuple[IpAddress, ...],
        now: float,
    ) -> Peer:
        if proof is None:
            raise IdentityError("the Map-Reply carries no identity proof")
        # A reply is fresh by its nonce (ours, random, asked once); its time is only signed.
        issued = parse_proof(proof).issued_at_ms
        transcript = KxTranscript("reply", nonce, cipher_suite, key_id, public, eids, rlocs, issued)
        peer = verify_proof(self.verifier, proof, transcript, self.clock(),
                            lambda name: self.delegations.get(name, ()))  # fmt: skip
        return Peer(peer.name, peer.eids, key_id, peer.fingerprint)
