"""A node's identity in the mesh (its key and certificate) and the binding of the RFC 8061 key
exchange to it.

Key-exchange binding: each side signs a `KxTranscript` (role, Map-Request nonce, cipher suite,
key-id, its X25519 public key, its EIDs and RLOCs) and sends `{"v":1,"kid":..,"cert":..,"sig":..}`
in a JSON LCAF next to its Security-Key LCAF. The receiver rebuilds the transcript from what it
received and calls `verify_proof`: a man in the middle that rewrites the public key, nonce, EIDs
or RLOCs breaks the signature, and only a node whose certificate covers the EIDs can answer
for them. The certificate format, key files and verifiers are in certs/; the CA that issues
certificates is the controller's (controller_api.ca).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs.files import (
    NODE_CERT_FILE,
    NODE_KEY_FILE,
    new_private_key,
    read_certificate,
    read_private_key,
    write_certificate,
    write_private_key,
)
from certs.format import (
    At,
    Eid,
    IdentityError,
    IpAddr,
    IpNetwork,
    canonical_eids,
    check_name,
    covered,
)
from certs.verify import CaVerifier, CertificateVerifier, as_verifier
from lisp.address import NO_ADDRESS
from lisp.lcaf import JsonLcaf

# v2: the request names the EIDs it asks for (so, the receiving ETR) and when it was signed.
KX_DOMAIN = b"lispmesh-kx-v2\x00"
PROOF_VERSION = 2
MAX_PROOF_TEXT = 8192


class NodeIdentity:
    """A node's private key, and its certificate once the CA issued one."""

    def __init__(
        self,
        name: str,
        private_key: ec.EllipticCurvePrivateKey,
        certificate: x509.Certificate | None = None,
        directory: Path | None = None,
    ) -> None:
        self.name = check_name(name)
        self._key = private_key
        self.certificate = certificate
        self.directory = directory
        self._cert_der: bytes | None = None

    @classmethod
    def load_or_create(cls, directory: Path | str, name: str) -> NodeIdentity:
        """Load `node.key` (creating it, 0600, if missing) and `node.crt` if present."""
        directory = Path(directory)
        key_path = directory / NODE_KEY_FILE
        if key_path.exists():
            key = read_private_key(key_path)
        else:
            key = new_private_key()
            write_private_key(key_path, key)
        cert_path = directory / NODE_CERT_FILE
        cert = read_certificate(cert_path) if cert_path.exists() else None
        if cert is not None and cert.public_key() != key.public_key():
            raise IdentityError(f"{cert_path} is not the certificate of {key_path}")
        return cls(name, key, cert, directory)

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def install_certificate(self, certificate: x509.Certificate) -> None:
        """Use (and save, if the identity has a directory) a certificate for this key."""
        if certificate.public_key() != self._key.public_key():
            raise IdentityError("certificate is not for this node's key")
        self.certificate = certificate
        self._cert_der = None
        if self.directory is not None:
            write_certificate(self.directory / NODE_CERT_FILE, certificate)

    @property
    def certificate_der(self) -> bytes:
        if self.certificate is None:
            raise IdentityError(f"node {self.name} has no certificate yet")
        if self._cert_der is None:
            self._cert_der = self.certificate.public_bytes(serialization.Encoding.DER)
        return self._cert_der

    def sign(self, data: bytes) -> bytes:
        """ECDSA-SHA256 (DER) signature by the node key."""
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))

    def __repr__(self) -> str:
        return f"NodeIdentity({self.name!r}, certificate={self.certificate is not None})"


# ---------------------------------------------------------------------------------------------
# key-exchange binding


@dataclass(frozen=True, slots=True)
class KxTranscript:
    """What one side of a key exchange signs. Build it from the message fields, never from the
    proof itself; EIDs and RLOCs are sets (order and duplicates do not matter)."""

    role: Literal["request", "reply", "binding"]  # binding: a NAT binding claimed at an RTR
    nonce: int  # the Map-Request nonce (64 bits), echoed by the Map-Reply
    cipher_suite: int
    key_id: int
    ecdh_public: bytes
    # A request: the EID-prefixes it asks for (the receiver); a reply: those it answers.
    eids: tuple[Eid, ...]
    rlocs: tuple[IpAddr, ...] = ()
    issued_at_ms: int = 0  # when the proof was signed (Unix ms): its freshness

    def encode(self) -> bytes:
        """Canonical bytes: domain tag, then fixed-width fields and sorted, deduplicated sets."""
        if self.role not in _ROLES:
            raise IdentityError(f"transcript role {self.role!r} is not request/reply/binding")
        try:
            return self._encode()
        except (struct.error, AttributeError, TypeError) as exc:
            raise IdentityError(f"transcript cannot be encoded: {exc}") from None

    def _encode(self) -> bytes:
        parts = [
            KX_DOMAIN,
            struct.pack(
                "!BQQBBH",
                _ROLES[self.role],
                self.nonce,
                self.issued_at_ms,
                self.cipher_suite,
                self.key_id,
                len(self.ecdh_public),
            ),
            self.ecdh_public,
        ]
        eids = canonical_eids(self.eids)
        parts.append(struct.pack("!H", len(eids)))
        for iid, prefix in eids:
            parts.append(struct.pack("!IBB", iid, prefix.version, prefix.prefixlen))
            parts.append(prefix.network_address.packed)
        rlocs = sorted(set(self.rlocs), key=lambda a: (a.version, a))
        parts.append(struct.pack("!H", len(rlocs)))
        for rloc in rlocs:
            parts.append(bytes((rloc.version,)) + rloc.packed)
        return b"".join(parts)


_ROLES = {"request": 1, "reply": 2, "binding": 3}  # signed: a proof for one never fits another


@dataclass(frozen=True, slots=True)
class Proof:
    """A parsed proof JSON LCAF (not yet verified)."""

    version: int
    key_id: int
    certificate_der: bytes
    signature: bytes
    issued_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """A peer whose proof verified: who it is and what it may claim."""

    name: str
    eids: tuple[Eid, ...]
    rlocs: tuple[IpNetwork, ...] | None
    fingerprint: str  # SHA-256 of the certificate DER, hex
    not_after: dt.datetime

    def covers(self, iid: int, prefix: IpNetwork) -> bool:
        return covered(self.eids, iid, prefix)


def make_proof(identity: NodeIdentity, transcript: KxTranscript) -> JsonLcaf:
    """The JSON LCAF proving `identity` offered `transcript` (compact: one line, no spaces)."""
    text = json.dumps(
        {
            "v": PROOF_VERSION,
            "kid": transcript.key_id,
            "t": transcript.issued_at_ms,
            "cert": base64.b64encode(identity.certificate_der).decode("ascii"),
            "sig": base64.b64encode(identity.sign(transcript.encode())).decode("ascii"),
        },
        separators=(",", ":"),
    )
    return JsonLcaf(text, NO_ADDRESS)


def _b64(value: object, what: str, limit: int) -> bytes:
    if not isinstance(value, str) or len(value) > limit:
        raise IdentityError(f"proof {what} is not a base64 string of at most {limit} chars")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise IdentityError(f"proof {what} is not valid base64") from None


def parse_proof(json_lcaf: JsonLcaf) -> Proof:
    """The fields of a proof JSON LCAF; IdentityError (only) for anything malformed."""
    try:
        if json_lcaf.binary:
            raise IdentityError("proof JSON LCAF is binary, expected text")
        text = json_lcaf.text
        if not isinstance(text, str) or len(text) > MAX_PROOF_TEXT:
            raise IdentityError(f"proof is not text of at most {MAX_PROOF_TEXT} chars")
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            raise IdentityError("proof is not valid JSON") from None
        if not isinstance(doc, dict):
            raise IdentityError("proof JSON is not an object")
        version, kid = doc.get("v"), doc.get("kid")
        if type(version) is not int or version != PROOF_VERSION:
            raise IdentityError(f"unsupported proof version {version!r}")
        if type(kid) is not int or not 1 <= kid <= 3:
            raise IdentityError(f"proof key-id {kid!r} is not 1..3")
        issued = doc.get("t")
        if type(issued) is not int or not 0 <= issued < 2**63:
            raise IdentityError(f"proof time {issued!r} is not a time in ms")
        cert = _b64(doc.get("cert"), "cert", 6000)
        sig = _b64(doc.get("sig"), "sig", 200)
        return Proof(version, kid, cert, sig, issued)
    except IdentityError:
        raise
    except Exception as exc:  # robust to any garbage: never another exception type
        raise IdentityError(f"malformed proof ({type(exc).__name__})") from None


def verify_node_certificate(
    ca_certificate: x509.Certificate, certificate: x509.Certificate, now: At
) -> PeerIdentity:
    """What a peer would accept of `certificate` at `now`: issued by the CA, a node certificate,
    within its validity; IdentityError with the reason otherwise (`lispmesh pki cert verify`)."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    cert = CaVerifier(ca_certificate).verify(der, now)
    return PeerIdentity(
        cert.claims.name, cert.claims.eids, cert.claims.rlocs, cert.fingerprint, cert.not_after
    )


def verify_proof(
    trust: CertificateVerifier | x509.Certificate,
    json_lcaf: JsonLcaf,
    transcript: KxTranscript,
    now: At,
    delegated: Callable[[str], Sequence[Eid]] | None = None,
) -> PeerIdentity:
    """Check a peer's proof at `now` (the caller's clock: nothing here reads one) against the
    transcript rebuilt from its message; `trust` is the certificate verifier, or the CA
    certificate for the default one. IdentityError with a precise reason for: malformed proof,
    key-id mismatch, certificate refused by the verifier (not from the CA, not yet valid or
    expired), signature mismatch, an EID (or pinned RLOC) the certificate does not cover.
    `delegated(name)`: EIDs the controller assigned to node `name` beyond its certificate's
    (app replicas placed on it), which its replies may claim too.
    """
    proof = parse_proof(json_lcaf)
    if proof.key_id != transcript.key_id:
        raise IdentityError(
            f"proof key-id {proof.key_id} does not match key-id {transcript.key_id}"
        )
    cert = as_verifier(trust).verify(proof.certificate_der, now)
    name = cert.claims.name
    try:
        cert.public_key.verify(proof.signature, transcript.encode(), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise IdentityError(f"signature does not match (node {name})") from None
    # A reply's EIDs are the signer's own (the certificate must cover them); a request's are
    # what it asks another node for.
    extra = delegated(name) if delegated is not None else ()
    for iid, prefix in transcript.eids if transcript.role == "reply" else ():
        if not covered(cert.claims.eids, iid, prefix) and not covered(extra, iid, prefix):
            raise IdentityError(f"EID {prefix} iid {iid} not in certificate of node {name}")
    if cert.claims.rlocs is not None:
        for rloc in transcript.rlocs:
            if not any(rloc in net for net in cert.claims.rlocs):
                raise IdentityError(f"RLOC {rloc} not in certificate of node {name}")
    return PeerIdentity(name, cert.claims.eids, cert.claims.rlocs, cert.fingerprint, cert.not_after)


def transcript_rlocs(addresses: Sequence[object]) -> tuple[IpAddr, ...]:
    """The IP addresses among `addresses` (helper to build a transcript from message fields)."""
    out: list[IpAddr] = []
    for a in addresses:
        if isinstance(a, IPv4Address | IPv6Address):
            out.append(a)
        elif isinstance(a, str):
            out.append(ip_address(a))
    return tuple(out)
