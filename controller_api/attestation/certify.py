"""TPM2_Certify checked in software: the AK vouches that the mesh key lives in the same TPM."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss import TPM2_ST, TPMT_PUBLIC

from controller_api.attestation.errors import AttestationRefused
from controller_api.attestation.evidence import SignedAttest
from controller_api.attestation.keys import check_resident_signing_key
from controller_api.attestation.structures import name, public_key, verify_signed


def verify_certification(
    certification: SignedAttest, ak_public: TPMT_PUBLIC, key_public: bytes, nonce: bytes
) -> ec.EllipticCurvePublicKey:
    """The mesh key (as a cryptography key, to compare with the node's certificate request) once
    the activated AK has certified exactly this public area, for this nonce."""
    key = check_resident_signing_key(key_public)
    attest = verify_signed(certification, ak_public, "key certification")
    if attest.type != TPM2_ST.ATTEST_CERTIFY:
        raise AttestationRefused("key certification: not a TPM2_Certify statement", "certify")
    if bytes(attest.extraData) != nonce:
        raise AttestationRefused("key certification: made for another nonce", "nonce")
    if bytes(attest.attested.certify.name) != name(key):
        raise AttestationRefused(
            "key certification: certifies another key than the mesh key presented", "certify"
        )
    return public_key(key, "mesh key")
