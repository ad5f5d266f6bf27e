"""Credential activation, the verifier's half (TPM 2.0 part 1, "Credential Protection"):
MakeCredential in software, and the check of the node's proof that its TPM opened it.

The secret is encrypted to the EK (RSA-OAEP or ECDH seed, as the EK's type requires) and bound
to the AK's name, and the TPM opens it only when it holds that EK's private key and a loaded
object with that name: a node that returns proof of the secret has its AK in the TPM the EK
certificate names.
The crypto is tpm2-pytss's software MakeCredential (KDFa, AES-CFB, HMAC integrity), not ours.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from tpm2_pytss import TPMT_PUBLIC
from tpm2_pytss.utils import make_credential

from controller_api.attestation.errors import AttestationRefused
from controller_api.attestation.evidence import CredentialChallenge
from controller_api.attestation.structures import decode, name

_PROOF_LABEL = b"lispmesh credential activation v1\x00"


def activation_proof(secret: bytes, ak_name: bytes) -> bytes:
    """What the node returns: HMAC-SHA256 keyed with the secret over the AK's name, so the secret
    itself never crosses the wire a second time (Keylime does the same with the agent id)."""
    return hmac.new(secret, _PROOF_LABEL + ak_name, hashlib.sha256).digest()


@dataclass(frozen=True)
class PendingActivation:
    """A challenge sent to a node, and what the controller keeps to check the answer."""

    challenge: CredentialChallenge
    ak_name: bytes
    secret: bytes = field(repr=False)

    def check(self, proof: bytes) -> None:
        if not hmac.compare_digest(proof, activation_proof(self.secret, self.ak_name)):
            raise AttestationRefused(
                "credential activation: wrong proof (the AK is not in the TPM of the certified EK)",
                "activation",
            )


def start_activation(ek_public: bytes, ak_public: TPMT_PUBLIC) -> PendingActivation:
    """MakeCredential for the AK's name under the EK."""
    ek = decode(TPMT_PUBLIC, ek_public, "EK public area")
    ak_name = name(ak_public)
    secret = secrets.token_bytes(32)
    try:
        id_object, encrypted_secret = make_credential(ek, secret, ak_name)
    except ValueError as exc:
        raise AttestationRefused(
            f"EK: cannot encrypt a credential to it ({exc})", "activation"
        ) from None
    return PendingActivation(
        CredentialChallenge(bytes(id_object), bytes(encrypted_secret)), ak_name, secret
    )
