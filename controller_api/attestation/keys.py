"""Checks on the public areas of the node's TPM keys: the attestation key and the mesh key.

The attributes are what the TPM enforces and reports truthfully (they are part of the key's name,
which credential activation and certification bind to): fixedTPM and fixedParent mean the key can
never be duplicated out of this TPM, sensitiveDataOrigin that the TPM generated it, restricted that
an AK signs only structures the TPM built itself.
"""

from __future__ import annotations

from tpm2_pytss import TPM2_ALG, TPMA_OBJECT, TPMT_PUBLIC

from controller_api.attestation.errors import AttestationRefused
from controller_api.attestation.structures import decode, public_key

_RESIDENT = {
    "fixedTPM": TPMA_OBJECT.FIXEDTPM,
    "fixedParent": TPMA_OBJECT.FIXEDPARENT,
    "sensitiveDataOrigin": TPMA_OBJECT.SENSITIVEDATAORIGIN,
    "sign": TPMA_OBJECT.SIGN_ENCRYPT,
}


def _check(
    data: bytes, what: str, required: dict[str, int], forbidden: dict[str, int]
) -> TPMT_PUBLIC:
    public = decode(TPMT_PUBLIC, data, f"{what} public area")
    attributes = int(public.objectAttributes)
    missing = [label for label, bit in required.items() if not attributes & bit]
    if missing:
        raise AttestationRefused(
            f"{what}: attribute{'s' if len(missing) > 1 else ''} {', '.join(missing)} not set",
            "key-attributes",
        )
    present = [label for label, bit in forbidden.items() if attributes & bit]
    if present:
        raise AttestationRefused(
            f"{what}: attribute {', '.join(present)} must not be set", "key-attributes"
        )
    if public.nameAlg != TPM2_ALG.SHA256:
        raise AttestationRefused(f"{what}: name algorithm is not SHA-256", "key-type")
    public_key(public, what)
    return public


def check_attestation_key(data: bytes) -> TPMT_PUBLIC:
    """The AK's public area if it is a restricted, TPM-bound ECC P-256 signing key."""
    return _check(
        data,
        "attestation key",
        {**_RESIDENT, "restricted": TPMA_OBJECT.RESTRICTED},
        {"decrypt": TPMA_OBJECT.DECRYPT},
    )


def check_resident_signing_key(data: bytes) -> TPMT_PUBLIC:
    """The mesh key's public area if it is a TPM-bound ECC P-256 signing key."""
    return _check(data, "mesh key", _RESIDENT, {"decrypt": TPMA_OBJECT.DECRYPT})
