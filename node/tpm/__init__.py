"""The node's TPM 2.0 (ESAPI through tpm2-pytss): the TPM-resident mesh key, the endorsement and
attestation keys, quotes and PCRs, and secrets sealed to PCR values. Checking what these produce is
the controller's job (controller_api/attestation/), done in software."""

from node.tpm.attestation_key import AttestationKey
from node.tpm.device import Tpm, TpmError
from node.tpm.endorsement import EndorsementKey
from node.tpm.keys import MeshKey
from node.tpm.seal import SealedSecret, SealRefused, seal, unseal

__all__ = [
    "AttestationKey",
    "EndorsementKey",
    "MeshKey",
    "SealRefused",
    "SealedSecret",
    "Tpm",
    "TpmError",
    "seal",
    "unseal",
]
