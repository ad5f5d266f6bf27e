"""The TPM's endorsement key (EK) and its manufacturer certificate from NV.

The EK proves which TPM this is: the controller checks its certificate chain and encrypts the
credential-activation secret to it (RSA-OAEP or ECDH, as the EK's type requires). Low-range EKs
(RSA 2048, ECC P-256 at 0x1c00002/0x1c0000a) authorize use only through PolicySecret(endorsement);
high-range ones (EK Credential Profile 2.3+, such as swtpm's ECC P-384 at 0x1c00016) also take the
empty password (userWithAuth).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tpm2_pytss import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_SE,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPMA_OBJECT,
    TPMT_PUBLIC,
    TPMT_SYM_DEF,
    TSS2_Exception,
)
from tpm2_pytss.utils import NVReadEK, create_ek_template

from controller_api.attestation.evidence import Endorsement
from node.tpm.device import Tpm, TpmError

# In order of preference: the first with a certificate in NV is used.
EK_TYPES = ("EK-RSA2048", "EK-ECC256", "EK-HIGH-ECC384", "EK-HIGH-RSA2048", "EK-HIGH-ECC256")


@dataclass(frozen=True)
class EndorsementKey:
    ek_type: str
    template: TPMT_PUBLIC
    certificate: bytes | None

    @classmethod
    def read(cls, tpm: Tpm, ek_types: Sequence[str] = EK_TYPES) -> EndorsementKey:
        """The first of `ek_types` with a certificate in NV; the first low-range one without a
        certificate when none has one (the operator may still allow that EK by its public key)."""
        for ek_type in ek_types:
            try:
                cert, template = create_ek_template(ek_type, NVReadEK(tpm.esapi))
            except ValueError:  # a high-range type without its certificate
                continue
            except TSS2_Exception as exc:
                raise tpm.error(f"reading the {ek_type} certificate from NV", exc) from None
            if cert is not None:
                return cls(ek_type, template.publicArea, bytes(cert))
        fallback = next((t for t in ek_types if "HIGH" not in t), None)
        if fallback is None:
            raise TpmError(f"TPM {tpm.where}: no EK certificate for any of {', '.join(ek_types)}")
        _, template = create_ek_template(fallback, NVReadEK(tpm.esapi))
        return cls(fallback, template.publicArea, None)

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
            if self.template.objectAttributes & TPMA_OBJECT.USERWITHAUTH:
                return self._activate(tpm, key, ek, id_object, encrypted_secret, ESYS_TR.PASSWORD)
            session = tpm.esapi.start_auth_session(
                ESYS_TR.NONE,
                ESYS_TR.NONE,
                TPM2_SE.POLICY,
                TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
                self.template.nameAlg,
            )
            with tpm.flushing(session):
                try:
                    # The low-range EK policy: the endorsement hierarchy's authorization.
                    tpm.esapi.policy_secret(ESYS_TR.ENDORSEMENT, session, b"", b"", b"", 0)
                except TSS2_Exception as exc:
                    raise tpm.error("satisfying the EK policy", exc) from None
                return self._activate(tpm, key, ek, id_object, encrypted_secret, session)

    @staticmethod
    def _activate(
        tpm: Tpm,
        key: ESYS_TR,
        ek: ESYS_TR,
        id_object: bytes,
        encrypted_secret: bytes,
        ek_session: ESYS_TR,
    ) -> bytes:
        try:
            secret = tpm.esapi.activate_credential(
                key,
                ek,
                TPM2B_ID_OBJECT(id_object),
                TPM2B_ENCRYPTED_SECRET(encrypted_secret),
                session1=ESYS_TR.PASSWORD,
                session2=ek_session,
            )
        except TSS2_Exception as exc:
            raise tpm.error("credential activation refused", exc) from None
        return bytes(secret)
