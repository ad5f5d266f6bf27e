"""The mesh CA: creates its key and self-signed certificate, issues node certificates.

It lives beside the controller, which runs it (controller_api.pki keeps its key in the store,
controller_api.ca_rotation rolls it over); the node side only reads certificates (certs/).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.files import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    new_private_key,
    read_certificate,
    read_private_key,
    write_certificate,
    write_private_key,
)
from certs.format import (
    SAN_URI_PREFIX,
    Eid,
    IdentityError,
    IpNetwork,
    Now,
    check_name,
    eid_extension,
    rloc_extension,
    utc_moment,
)

# Certificates are valid from a little before now: peers' clocks differ.
CLOCK_SKEW = dt.timedelta(minutes=5)


def ca_certificate_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    not_before: dt.datetime,
    lifetime: dt.timedelta,
) -> x509.CertificateBuilder:
    """An unsigned CA certificate for `public_key`: path length 0 (it signs node certificates
    only), keyCertSign + cRLSign, its subject key identifier. Self-signed when `issuer` is
    `subject`; a cross-certificate when another CA signs it (controller_api.ca_rotation)."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


class CertificateAuthority:
    """The mesh CA (the controller's). Issues node certificates."""

    def __init__(self, certificate: x509.Certificate, private_key: ec.EllipticCurvePrivateKey):
        self.certificate = certificate
        self._key = private_key

    @classmethod
    def create(
        cls, directory: Path | str, name: str, valid_days: int = 3650, now: Now = None
    ) -> CertificateAuthority:
        directory = Path(directory)
        if (directory / CA_KEY_FILE).exists():
            raise IdentityError(f"a CA already exists in {directory}; refusing to overwrite it")
        key = new_private_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        start = utc_moment(now) - CLOCK_SKEW
        cert = ca_certificate_builder(
            subject, subject, key.public_key(), start, dt.timedelta(days=valid_days)
        ).sign(key, hashes.SHA256())
        write_private_key(directory / CA_KEY_FILE, key)
        write_certificate(directory / CA_CERT_FILE, cert)
        return cls(cert, key)

    @classmethod
    def load(cls, directory: Path | str) -> CertificateAuthority:
        directory = Path(directory)
        return cls(
            read_certificate(directory / CA_CERT_FILE),
            read_private_key(directory / CA_KEY_FILE),
        )

    def issue(
        self,
        node_name: str,
        public_key: ec.EllipticCurvePublicKey,
        eids: Sequence[Eid],
        rlocs: Sequence[IpNetwork] | None = None,
        valid_days: float = 365,
        now: Now = None,
    ) -> x509.Certificate:
        """A node certificate for `node_name` and its EID prefixes (and RLOC prefixes, if the
        node's locators should be pinned; mobile nodes leave them out)."""
        check_name(node_name)
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise IdentityError("node keys must be ECDSA P-256")
        # Valid a little before now (peers' clocks differ) and `valid_days` from now: a short
        # lifetime (a lab renewing every few minutes) is not eaten by the back-dating.
        start = utc_moment(now) - CLOCK_SKEW
        end = utc_moment(now) + dt.timedelta(days=valid_days)
        end = min(end, self.certificate.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(SAN_URI_PREFIX + node_name)]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .add_extension(eid_extension(eids), critical=False)
        )
        if rlocs is not None:
            builder = builder.add_extension(rloc_extension(rlocs), critical=False)
        return builder.sign(self._key, hashes.SHA256())
