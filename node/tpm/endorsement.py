"""The TPM's endorsement key (EK) and its manufacturer certificate from NV.

The EK proves which TPM this is: the controller checks its certificate chain and encrypts the
credential-activation secret to it. Only the low-range EK templates (RSA 2048, ECC P-256) are used:
their authorization policy is the plain PolicySecret(endorsement) that activation satisfies below.
"""

from __future__ import annotations

from dataclasses import dataclass

from tpm2_pytss import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_SE,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPMT_PUBLIC,
    TPMT_SYM_DEF,
    TSS2_Exception,
)
from tpm2_pytss.utils import NVReadEK, create_ek_template

from controller_api.attestation.evidence import Endorsement
from node.tpm.device import Tpm

EK_TYPES = ("EK-RSA2048", "EK-ECC256")


@dataclass(frozen=True)
class EndorsementKey:
    ek_type: str
    template: TPMT_PUBLIC
    certificate: bytes | None

    @classmethod
    def read(cls, tpm: Tpm) -> EndorsementKey:
        """The first EK type with a certificate in NV; RSA 2048 without one when none has."""
        for ek_type in EK_TYPES:
            cert, template = create_ek_template(ek_type, NVReadEK(tpm.esapi))
            if cert is not None:
                return cls(ek_type, template.publicArea, bytes(cert))
        _, template = create_ek_template(EK_TYPES[0], NVReadEK(tpm.esapi))
        return cls(EK_TYPES[0], template.publicArea, None)

    def evidence(self, tpm: Tpm) -> Endorsement:
        handle, public = tpm.create_primary(self.template, ESYS_TR.ENDORSEMENT)
        with tpm.flushing(handle):
            return Endorsement(public=public.marshal(), certificate=self.certificate)

    def activate_credential(
        self, tpm: Tpm, key: ESYS_TR, id_object: bytes, encrypted_secret: bytes
    ) -> bytes:
        """TPM2_ActivateCredential: the secret the verifier encrypted to this EK for `key`'s name.
        The TPM refuses when the EK is not its own or the credential names another key."""
        ek, _ = tpm.create_primary(self.template, ESYS_TR.ENDORSEMENT)
        with tpm.flushing(ek):
            session = tpm.esapi.start_auth_session(
                ESYS_TR.NONE,
                ESYS_TR.NONE,
                TPM2_SE.POLICY,
                TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
                TPM2_ALG.SHA256,
            )
            with tpm.flushing(session):
                try:
                    # The EK's policy: the endorsement hierarchy's authorization (empty here).
                    tpm.esapi.policy_secret(ESYS_TR.ENDORSEMENT, session, b"", b"", b"", 0)
                    secret = tpm.esapi.activate_credential(
                        key,
                        ek,
                        TPM2B_ID_OBJECT(id_object),
                        TPM2B_ENCRYPTED_SECRET(encrypted_secret),
                        session1=ESYS_TR.PASSWORD,
                        session2=session,
                    )
                except TSS2_Exception as exc:
                    raise tpm.error("credential activation refused", exc) from None
        return bytes(secret)
