"""The endorsement key's certificate: a chain to a configured TPM manufacturer CA, for this EK.

Chain building and path validation are cryptography's (RFC 5280 rules for the CAs). EK
certificates are not TLS certificates (empty or placeholder subjects, a critical directoryName SAN
with the TPM model, the tcg-kp-EKCertificate usage), so the end-entity extension policy is relaxed;
what makes the certificate mean something here is that its key is the EK the node presented.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification
from tpm2_pytss import TPMT_PUBLIC

from controller_api.attestation.errors import AttestationRefused
from controller_api.attestation.evidence import Endorsement
from controller_api.attestation.structures import decode, name


@dataclass(frozen=True)
class ManufacturerCAs:
    """The TPM manufacturers' CA certificates the operator trusts: roots, and the intermediates
    vendors publish separately (TPMs rarely carry them)."""

    roots: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...] = ()

    @classmethod
    def from_pem(cls, blobs: Iterable[bytes]) -> ManufacturerCAs:
        """Self-signed certificates become roots, the others intermediates."""
        roots: list[x509.Certificate] = []
        others: list[x509.Certificate] = []
        for blob in blobs:
            for cert in x509.load_pem_x509_certificates(blob):
                (roots if cert.issuer == cert.subject else others).append(cert)
        if not roots:
            raise ValueError("manufacturer CAs: no self-signed root certificate given")
        return cls(tuple(roots), tuple(others))


def _public_der(public: TPMT_PUBLIC) -> bytes:
    return bytes(public.to_der())


def verify_ek_certificate(
    endorsement: Endorsement, trusted: ManufacturerCAs, now: dt.datetime
) -> x509.Certificate:
    """The EK certificate, once it chains to `trusted` at `now` and certifies the EK public area."""
    if endorsement.certificate is None:
        raise AttestationRefused("EK: the TPM presented no EK certificate", "ek-certificate")
    try:
        cert = x509.load_der_x509_certificate(endorsement.certificate)
    except ValueError as exc:
        raise AttestationRefused(f"EK certificate: malformed ({exc})", "ek-certificate") from None
    if not trusted.roots:
        raise AttestationRefused(
            "EK certificate: no TPM manufacturer CA is configured", "ek-certificate"
        )
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(list(trusted.roots)))
        .time(now)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=verification.ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(cert, list(trusted.intermediates))
    except verification.VerificationError as exc:
        raise AttestationRefused(
            f"EK certificate (issuer {cert.issuer.rfc4514_string()}): does not chain to a trusted "
            f"TPM manufacturer CA ({exc})",
            "ek-certificate",
        ) from None
    ek = decode(TPMT_PUBLIC, endorsement.public, "EK public area")
    presented = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        ek_der = _public_der(ek)
    except ValueError as exc:
        raise AttestationRefused(
            f"EK public area: unsupported key ({exc})", "ek-certificate"
        ) from None
    if presented != ek_der:
        raise AttestationRefused(
            "EK certificate: certifies another key than the EK the node presented", "ek-certificate"
        )
    return cert


def verify_endorsement(
    endorsement: Endorsement,
    trusted: ManufacturerCAs,
    now: dt.datetime,
    allowed_uncertified: Collection[bytes] = (),
) -> x509.Certificate | None:
    """The EK's certificate as verify_ek_certificate checks it; or, for a TPM without one, None when
    the operator allowed this EK by its TPM name (listed in `allowed_uncertified`)."""
    if endorsement.certificate is not None:
        return verify_ek_certificate(endorsement, trusted, now)
    ek_name = name(decode(TPMT_PUBLIC, endorsement.public, "EK public area"))
    if ek_name not in allowed_uncertified:
        raise AttestationRefused(
            f"EK {ek_name.hex()}: no EK certificate, and this EK is not allowed without one",
            "ek-certificate",
        )
    return None


# TCG EK Credential Profile: the TPM's directoryName in the subjectAltName.
_TPM_NAME_FIELDS = (
    ("2.23.133.2.1", "manufacturer"),
    ("2.23.133.2.2", "model"),
    ("2.23.133.2.3", "version"),
)


def ek_subject(cert: x509.Certificate) -> str:
    """The EK certificate's subject for people: EK subjects are often empty or placeholders
    ("CN=unknown"), so the TPM the SAN names (manufacturer, model, version) is added."""
    parts = [cert.subject.rfc4514_string()] if len(cert.subject) else []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "".join(parts)
    for directory in san.get_values_for_type(x509.DirectoryName):
        fields = {a.oid.dotted_string: str(a.value) for a in directory}
        tpm = [f"{label} {fields[oid]}" for oid, label in _TPM_NAME_FIELDS if oid in fields]
        if tpm:
            parts.append("TPM " + ", ".join(tpm))
    return "; ".join(parts)
