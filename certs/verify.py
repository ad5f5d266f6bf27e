"""Which node certificates a key exchange accepts: the certificate verifier.

As Nebula's handshake machine takes its CA pool, the key exchange is given a verifier: the mesh
CA by default (`CaVerifier`), the CA bundle during a CA rotation (`CaBundleVerifier`), another
trust model in tests. Verifiers take the moment to judge validity at and never read a clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from certs.format import At, IdentityError, NodeClaims, NotFromCa, certificate_claims, utc_moment


@dataclass(frozen=True, slots=True)
class VerifiedCertificate:
    """A node certificate a verifier accepted: its claims, key and validity."""

    claims: NodeClaims
    public_key: ec.EllipticCurvePublicKey
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str


_CACHE_SIZE = 1024
_cert_cache: OrderedDict[tuple[bytes, bytes], VerifiedCertificate] = OrderedDict()


def _ca_fingerprint(ca_certificate: x509.Certificate) -> bytes:
    return ca_certificate.fingerprint(hashes.SHA256())


def _verified_certificate(ca_certificate: x509.Certificate, der: bytes) -> VerifiedCertificate:
    """Parse `der` and check it was issued by the CA (cached by (CA, cert) fingerprint; only
    certificates that chained are cached, validity times are checked by the caller)."""
    fingerprint = hashlib.sha256(der).digest()
    key = (_ca_fingerprint(ca_certificate), fingerprint)
    cached = _cert_cache.get(key)
    if cached is not None:
        _cert_cache.move_to_end(key)
        return cached
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise IdentityError("proof certificate is not valid DER X.509") from None
    try:
        cert.verify_directly_issued_by(ca_certificate)
    except (ValueError, TypeError, InvalidSignature):
        raise NotFromCa(
            f"certificate of {cert.subject.rfc4514_string()} not issued by the mesh CA"
        ) from None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or constraints.ca:
        raise IdentityError("proof certificate is not a node (end-entity) certificate")
    public_key = cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise IdentityError("proof certificate key is not ECDSA")
    verified = VerifiedCertificate(
        certificate_claims(cert),
        public_key,
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
        fingerprint.hex(),
    )
    _cert_cache[key] = verified
    if len(_cert_cache) > _CACHE_SIZE:
        _cert_cache.popitem(last=False)
    return verified


class CertificateVerifier(Protocol):
    """Decides which node certificates a key exchange accepts (as Nebula's handshake machine
    takes its CA pool): the mesh CA by default (`CaVerifier`); tests and other trust models
    inject their own. IdentityError with the reason when a certificate is refused."""

    def verify(self, der: bytes, now: At) -> VerifiedCertificate: ...


class CaVerifier:
    """Node certificates directly issued by one CA, within their validity at `now`."""

    def __init__(self, ca_certificate: x509.Certificate) -> None:
        self.ca_certificate = ca_certificate

    def verify(self, der: bytes, now: At) -> VerifiedCertificate:
        cert = _verified_certificate(self.ca_certificate, der)
        name = cert.claims.name
        moment = utc_moment(now)
        if moment < cert.not_before:
            raise IdentityError(f"certificate of node {name} not valid before {cert.not_before}")
        if moment > cert.not_after:
            raise IdentityError(f"certificate of node {name} expired at {cert.not_after}")
        return cert


class CaBundleVerifier:
    """Node certificates directly issued by any CA of a trust bundle, within their validity at
    `now`. During a CA rotation the bundle holds the old CA and the new one, so certificates of
    both are accepted; once the old CA is dropped from the bundle its certificates are not."""

    def __init__(self, cas: Sequence[x509.Certificate]) -> None:
        if not cas:
            raise IdentityError("the CA bundle is empty")
        self.cas = tuple(cas)

    def verify(self, der: bytes, now: At) -> VerifiedCertificate:
        digest = hashlib.sha256(der).digest()
        for ca in self.cas:  # a certificate seen before: its CA without a failed signature check
            if (_ca_fingerprint(ca), digest) in _cert_cache:
                return CaVerifier(ca).verify(der, now)
        for ca in self.cas[:-1]:
            try:
                return CaVerifier(ca).verify(der, now)
            except NotFromCa:
                continue  # another CA of the bundle may have issued it
        return CaVerifier(self.cas[-1]).verify(der, now)


def as_verifier(
    trust: CertificateVerifier | x509.Certificate | Sequence[x509.Certificate],
) -> CertificateVerifier:
    """A verifier, given one, the CA certificate or the CA bundle to verify against."""
    if isinstance(trust, x509.Certificate):
        return CaVerifier(trust)
    if isinstance(trust, Sequence):
        return CaBundleVerifier(trust)
    return trust
