"""CA rotation: a new controller CA, cross-signed by the old one, trusted beside it for a switch.

The CA set is a list of `CaMaterial`, the issuing CA first:

    [old]              before a rotation
    [old, new]         `ca rotate`: the new CA is trusted everywhere (every desired state carries
                       the bundle) but the old one still issues, until every connected node has
                       acknowledged a desired state with the bundle in it
    [new, old]         then the new CA issues; nodes whose certificate is from another CA than
                       the issuer renew at once, so the switch takes minutes
    [new]              `ca rotate --finish`: once no live node holds an old-CA certificate

The issuer switches only once the bundle is everywhere, so no node is ever shown a certificate
from a CA it does not trust yet. The controller's own TLS certificate stays with the oldest CA
until the finish (a node that slept through the rotation still trusts only that one, reconnects
and gets the bundle); tokens pin that CA.

The cross-certificate (the new CA's name and key, signed by the old CA) is what lets a node
extend its trust (common.ca_trust.extend_trust): a node adds a CA to its bundle only when a CA it
already trusts cross-signed it, as a TUF root is signed by the previous root.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.ca_trust import TrustError, ca_fingerprint
from controller_api.ca import ca_certificate_builder
from controller_api.store import CaMaterial

CA_DAYS = 3650
BACKDATE = dt.timedelta(minutes=5)  # a new CA is valid from a little before its rotation


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CaEntry:
    """One CA of the set, parsed."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cross: x509.Certificate | None  # this CA's key, certified by the CA before it

    @property
    def fingerprint(self) -> str:
        return ca_fingerprint(self.certificate)


def parse(material: CaMaterial) -> CaEntry:
    try:
        certs = x509.load_pem_x509_certificates(material.cert_pem)
        key = serialization.load_pem_private_key(material.key_pem, password=None)
    except ValueError as exc:
        raise TrustError(f"the stored CA is unreadable: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TrustError("the stored CA key is not ECDSA")
    # cert_pem holds the CA certificate, then (after a rotation) its cross-certificate.
    return CaEntry(certs[0], key, certs[1] if len(certs) > 1 else None)


def material(entry: CaEntry) -> CaMaterial:
    cert_pem = _pem(entry.certificate) + (_pem(entry.cross) if entry.cross is not None else b"")
    key_pem = entry.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return CaMaterial(cert_pem, key_pem)


def new_ca(previous: CaEntry, now: dt.datetime) -> CaEntry:
    """A new self-signed CA and its cross-certificate from `previous`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"lispmesh controller CA {now:%Y-%m-%dT%H:%M:%SZ}"
            )
        ]
    )
    start = now - BACKDATE

    def builder(issuer: x509.Name) -> x509.CertificateBuilder:
        return ca_certificate_builder(
            name, issuer, key.public_key(), start, dt.timedelta(days=CA_DAYS)
        )

    cert = builder(name).sign(key, hashes.SHA256())
    cross = (
        builder(previous.certificate.subject)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(previous.key.public_key()), False
        )
        .sign(previous.key, hashes.SHA256())
    )
    return CaEntry(cert, key, cross)
