"""What a node sends the verifier and what the verifier sends back, as TPM wire bytes.

Both sides use these: the node fills them from its TPM (node/tpm/), the controller checks them in
software (the rest of this package). Public areas are marshalled TPMT_PUBLIC, attestation structures
marshalled TPMS_ATTEST, signatures marshalled TPMT_SIGNATURE: the TPM's own encodings, so nothing is
re-encoded between what the TPM signed and what the verifier checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Endorsement:
    """The TPM's endorsement key: its public area, and its DER certificate where it has one."""

    public: bytes
    certificate: bytes | None


@dataclass(frozen=True)
class CredentialChallenge:
    """MakeCredential's output: a secret only a TPM holding the EK and the named AK can open."""

    id_object: bytes
    encrypted_secret: bytes


@dataclass(frozen=True)
class SignedAttest:
    """A TPMS_ATTEST and the AK's signature over it (TPM2_Certify, TPM2_Quote)."""

    attest: bytes
    signature: bytes


@dataclass(frozen=True)
class Quote(SignedAttest):
    """A quote plus the SHA-256 PCR values it covers (the quote itself holds only their digest)."""

    pcrs: dict[int, bytes] = field(default_factory=dict)
