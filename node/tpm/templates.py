"""The public-area templates of the keys lispmesh keeps in a TPM.

Primary keys are derived from a hierarchy seed and their template, so each template carries a
lispmesh-specific `unique` value: another program using a plain ECC template in the same hierarchy
gets a different key, and lispmesh gets the same key back after the TPM forgets the object.
"""

from __future__ import annotations

import hashlib

from tpm2_pytss import TPM2_ALG, TPMA_OBJECT, TPMT_PUBLIC

# Persistent handles (TCG handle registry: 0x81000000.. owner range, 0x81010000.. endorsement).
MESH_KEY_HANDLE = 0x81000A10
AK_HANDLE = 0x81010A10

# Attributes that make a key unexportable and born inside this TPM.
RESIDENT = TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN


def _ecc_signing(label: str, attributes: int) -> TPMT_PUBLIC:
    public = TPMT_PUBLIC.parse("ecc256:ecdsa-sha256", objectAttributes=attributes, nameAlg="sha256")
    # parse() fills in AES-128-CFB as the symmetric algorithm; a signing key must have none (the
    # TPM refuses a restricted signing key that names one).
    public.parameters.eccDetail.symmetric.algorithm = TPM2_ALG.NULL
    public.unique.ecc.x = hashlib.sha256(label.encode()).digest()
    public.unique.ecc.y = bytes(32)
    return public


def mesh_key_template() -> TPMT_PUBLIC:
    """The node's mesh and mTLS identity: an ECC P-256 ECDSA key that signs anything (TLS
    handshakes, key-exchange proofs, CSRs) but never leaves the TPM."""
    return _ecc_signing(
        "lispmesh node mesh key v1", RESIDENT | TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.USERWITHAUTH
    )


def attestation_key_template() -> TPMT_PUBLIC:
    """The attestation key (AK): restricted, so it signs only TPM-generated structures (quotes,
    certifications), never a digest that merely looks like one."""
    return _ecc_signing(
        "lispmesh attestation key v1",
        RESIDENT | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.USERWITHAUTH,
    )


def storage_key_template() -> TPMT_PUBLIC:
    """The storage root key that sealed secrets are created under (TCG provisioning guidance's ECC
    SRK: restricted decryption with AES-128-CFB for its children)."""
    return TPMT_PUBLIC.parse(
        "ecc256:aes128cfb",
        objectAttributes=RESIDENT
        | TPMA_OBJECT.RESTRICTED
        | TPMA_OBJECT.DECRYPT
        | TPMA_OBJECT.USERWITHAUTH
        | TPMA_OBJECT.NODA,
        nameAlg="sha256",
    )


def sealed_object_template(policy_digest: bytes) -> TPMT_PUBLIC:
    """A keyed-hash data object that only `policy_digest` can unseal (no password path: userWithAuth
    is clear)."""
    public = TPMT_PUBLIC.parse(
        "keyedhash",
        objectAttributes=TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.NODA,
        nameAlg="sha256",
    )
    public.authPolicy = policy_digest
    return public
