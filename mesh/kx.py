"""Binds the RFC 8061 key exchange to node identities: what the xTR signs and checks.

Requests prove the ITR's key and RLOCs (its EIDs come from its certificate and become the inner
source addresses the ETR accepts from that key); replies prove the ETR's key, the EID-prefixes
answered and the RLOCs to use. A proof that fails raises `IdentityError` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from lisp.lcaf import JsonLcaf
from mesh.config import IpAddress, IpNetwork
from mesh.identity import (
    IdentityError,
    KxTranscript,
    NodeIdentity,
    make_proof,
    parse_proof,
    read_certificate,
    read_private_key,
    verify_proof,
)


@dataclass(frozen=True)
class Peer:
    name: str
    eids: tuple[tuple[int, IpNetwork], ...]
    key_id: int


class KxAuthority:
    def __init__(self, identity: NodeIdentity, ca_certificate: x509.Certificate) -> None:
        if identity.certificate is None:
            raise IdentityError(f"node {identity.name} has no certificate")
        self.identity = identity
        self.ca = ca_certificate

    @classmethod
    def from_files(
        cls,
        name: str,
        key: str,
        cert: str,
        ca: str,
        private_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> KxAuthority:
        """`private_key`, when given, is used instead of reading the `key` file (a TPM key)."""
        from pathlib import Path

        signing_key = private_key if private_key is not None else read_private_key(Path(key))
        certificate = read_certificate(Path(cert))
        if certificate.public_key() != signing_key.public_key():
            raise IdentityError(f"{cert} is not the certificate of this node's key")
        identity = NodeIdentity(name, signing_key, certificate)
        return cls(identity, read_certificate(Path(ca)))

    def request_proof(
        self,
        nonce: int,
        cipher_suite: int,
        key_id: int,
        public: bytes,
        rlocs: tuple[IpAddress, ...],
    ) -> JsonLcaf:
        transcript = KxTranscript("request", nonce, cipher_suite, key_id, public, (), rlocs)
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
        transcript = KxTranscript("reply", nonce, cipher_suite, key_id, public, eids, rlocs)
        return make_proof(self.identity, transcript)

    def verify_request(
        self,
        proof: JsonLcaf | None,
        nonce: int,
        cipher_suite: int,
        public: bytes,
        rlocs: tuple[IpAddress, ...],
        now: float,
    ) -> Peer:
        if proof is None:
            raise IdentityError("the Map-Request carries no identity proof")
        key_id = parse_proof(proof).key_id
        transcript = KxTranscript("request", nonce, cipher_suite, key_id, public, (), rlocs)
        peer = verify_proof(self.ca, proof, transcript)
        return Peer(peer.name, peer.eids, key_id)

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
        transcript = KxTranscript("reply", nonce, cipher_suite, key_id, public, eids, rlocs)
        peer = verify_proof(self.ca, proof, transcript)
        return Peer(peer.name, peer.eids, key_id)
