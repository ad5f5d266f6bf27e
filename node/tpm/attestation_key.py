"""The attestation key (AK): a restricted ECC P-256 signing key that vouches for this TPM's state.

It signs only structures the TPM itself builds: a certification that the mesh key lives in this TPM
(TPM2_Certify) and quotes of the PCRs (TPM2_Quote). Credential activation proves to the controller
that this AK sits in the same TPM as the certified EK.
"""

from __future__ import annotations

from collections.abc import Sequence

from tpm2_pytss import ESYS_TR, TPM2_ALG, TPMT_SIG_SCHEME, TSS2_Exception

from controller_api.attestation.evidence import CredentialChallenge, Quote, SignedAttest
from node.tpm.device import Tpm, pcr_selection
from node.tpm.endorsement import EndorsementKey
from node.tpm.keys import provision
from node.tpm.templates import AK_HANDLE, attestation_key_template

_ECDSA_SHA256 = TPMT_SIG_SCHEME(scheme=TPM2_ALG.ECDSA)
_ECDSA_SHA256.details.any.hashAlg = TPM2_ALG.SHA256


class AttestationKey:
    """The AK at its persistent handle (created from the template on first use)."""

    def __init__(self, tpm: Tpm, handle: int = AK_HANDLE) -> None:
        self._tpm = tpm
        self._handle = provision(tpm, handle, attestation_key_template(), ESYS_TR.ENDORSEMENT)

    def public(self) -> bytes:
        """The AK's public area (marshalled TPMT_PUBLIC), which the controller checks and names."""
        return bytes(self._tpm.read_public(self._handle).marshal())

    def name(self) -> bytes:
        return bytes(self._tpm.esapi.tr_get_name(self._handle))

    def activate(self, ek: EndorsementKey, challenge: CredentialChallenge) -> bytes:
        """The secret from the controller's MakeCredential, opened inside this TPM."""
        return ek.activate_credential(
            self._tpm, self._handle, challenge.id_object, challenge.encrypted_secret
        )

    def certify(self, key: ESYS_TR, nonce: bytes) -> SignedAttest:
        """TPM2_Certify: the AK's statement that `key` (by its name) is loaded in this TPM."""
        try:
            attest, signature = self._tpm.esapi.certify(
                key,
                self._handle,
                nonce,
                _ECDSA_SHA256,
                session1=ESYS_TR.PASSWORD,
                session2=ESYS_TR.PASSWORD,
            )
        except TSS2_Exception as exc:
            raise self._tpm.error("certifying a key with the AK", exc) from None
        return SignedAttest(attest=bytes(attest), signature=signature.marshal())

    def quote(self, pcrs: Sequence[int], nonce: bytes) -> Quote:
        """TPM2_Quote over the SHA-256 `pcrs` with the verifier's nonce, plus their values.

        The values are read after the quote; if a PCR changed in between, the verifier sees a digest
        mismatch and asks again, so no lock is needed here.
        """
        try:
            attest, signature = self._tpm.esapi.quote(
                self._handle, pcr_selection(pcrs), nonce, _ECDSA_SHA256
            )
        except TSS2_Exception as exc:
            raise self._tpm.error(f"quoting PCRs {sorted(pcrs)}", exc) from None
        return Quote(
            attest=bytes(attest), signature=signature.marshal(), pcrs=self._tpm.pcr_read(pcrs)
        )
