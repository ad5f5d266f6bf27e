"""What the node's TPM tells the controller: its identity at enrollment (EK, AK), the answer to the
enrollment challenge (credential activation, the mesh key certified by the AK, a quote) and the
quote of each attestation round, with the measured-boot event log.

The controller checks all of it in software (controller_api/tpm_verifier.py); nothing here
decides whether the node is healthy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from controller_api.gen.lispmesh.v1 import attestation_pb2, enrollment_pb2

if TYPE_CHECKING:
    # Only here for the types: node.tpm and controller_api.attestation are imported in the methods,
    # once a TPM is used (tpm2-pytss costs a file-key node a tenth of a second at every start).
    from node.tpm import MeshKey, Tpm

log = logging.getLogger("lispmesh.agent")

# Where Linux exposes the firmware's TCG event log for the first TPM.
DEFAULT_EVENT_LOG = Path("/sys/kernel/security/tpm0/binary_bios_measurements")


class TpmWitness:
    """The node's TPM as a witness: one EK, one AK, one mesh key, one event log file."""

    def __init__(self, tpm: Tpm, mesh: MeshKey, event_log: Path | None = DEFAULT_EVENT_LOG):
        self.tpm = tpm
        self.mesh = mesh
        self.event_log = event_log
        from node.tpm import AttestationKey, EndorsementKey

        with tpm.lock:
            self.ek = EndorsementKey.read(tpm)
            self.ak = AttestationKey(tpm)
        self.ek_subject = _ek_subject(self.ek.certificate)

    def identity(self) -> enrollment_pb2.TpmIdentity:
        with self.tpm.lock:
            endorsement = self.ek.evidence(self.tpm)
            return enrollment_pb2.TpmIdentity(
                ek_public=endorsement.public,
                ek_certificate=endorsement.certificate or b"",
                ak_public=self.ak.public(),
            )

    def answer(self, challenge: enrollment_pb2.TpmChallenge) -> enrollment_pb2.TpmEvidence:
        """Open the credential (only this TPM can), certify the mesh key and quote, all for the
        controller's nonce."""
        from controller_api.attestation import CredentialChallenge, activation_proof

        credential = CredentialChallenge(challenge.credential_blob, challenge.encrypted_secret)
        with self.tpm.lock:
            secret = self.ak.activate(self.ek, credential)
            certification = self.ak.certify(self.mesh.handle, challenge.nonce)
            return enrollment_pb2.TpmEvidence(
                challenge_id=challenge.challenge_id,
                activation_proof=activation_proof(secret, self.ak.name()),
                mesh_key_public=self.mesh.public_area(),
                certify_attest=certification.attest,
                certify_signature=certification.signature,
                quote=self.quote(challenge.nonce, challenge.pcrs),
            )

    def quote(self, nonce: bytes, pcrs: Sequence[int]) -> attestation_pb2.TpmQuote:
        with self.tpm.lock:
            quote = self.ak.quote(list(pcrs), nonce)
        return attestation_pb2.TpmQuote(
            attest=quote.attest,
            signature=quote.signature,
            pcrs=quote.pcrs,
            event_log=self._event_log(),
        )

    def _event_log(self) -> bytes:
        if self.event_log is None:
            return b""
        try:
            return self.event_log.read_bytes()
        except FileNotFoundError:
            return b""  # no measured boot here: the controller's policy decides what that means
        except OSError as exc:
            from node.tpm import TpmError

            raise TpmError(f"event log {self.event_log}: {exc.strerror}") from None


def _ek_subject(certificate: bytes | None) -> str:
    """For `lispmesh status`: the EK certificate's subject and TPM ("" without a certificate)."""
    if certificate is None:
        return ""
    try:
        from controller_api.attestation.ek_certificate import ek_subject

        return ek_subject(x509.load_der_x509_certificate(certificate))
    except ValueError:
        return "(unreadable EK certificate)"
