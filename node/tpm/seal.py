"""Secrets sealed to this TPM under a PCR policy: they open only while the PCRs hold the values
they were sealed to.

The sealed blob is encrypted by the TPM's storage key, so it may be stored anywhere (the node
keeps it beside its checkpoint). The PCR values it was sealed to are stored with it: they are
measurements, not secrets, and they let a refusal name the PCRs that changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tpm2_pytss import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_RC,
    TPM2_SE,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPMS_SENSITIVE_CREATE,
    TPMT_PUBLIC,
    TPMT_SYM_DEF,
    TSS2_Exception,
)

from node.tpm.device import Tpm, TpmError, pcr_selection
from node.tpm.templates import sealed_object_template, storage_key_template

MAX_SECRET = 128  # MAX_SYM_DATA: the largest data object a TPM seals


class SealRefused(TpmError):
    """The TPM refused to unseal because the PCRs differ from the sealed values."""

    def __init__(self, message: str, pcrs: Sequence[int]) -> None:
        super().__init__(message)
        self.pcrs = tuple(pcrs)


@dataclass(frozen=True)
class SealedSecret:
    private: bytes
    public: bytes
    pcrs: dict[int, bytes]

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "version": 1,
                "private": self.private.hex(),
                "public": self.public.hex(),
                "pcrs": {str(i): v.hex() for i, v in sorted(self.pcrs.items())},
            }
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "sealed secret") -> SealedSecret:
        try:
            doc = json.loads(data)
            if doc.get("version") != 1:
                raise ValueError(f"unsupported version {doc.get('version')!r}")
            return cls(
                private=bytes.fromhex(doc["private"]),
                public=bytes.fromhex(doc["public"]),
                pcrs={int(i): bytes.fromhex(v) for i, v in doc["pcrs"].items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TpmError(f"{where}: not a sealed secret: {exc}") from None


def _pcr_digest(values: Mapping[int, bytes]) -> bytes:
    """TPM2_PolicyPCR's pcrDigest: SHA-256 over the selected values in index order."""
    return hashlib.sha256(b"".join(values[i] for i in sorted(values))).digest()


def _policy_session(tpm: Tpm, kind: TPM2_SE) -> ESYS_TR:
    return tpm.esapi.start_auth_session(
        ESYS_TR.NONE, ESYS_TR.NONE, kind, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256
    )


def seal(
    tpm: Tpm, secret: bytes, pcrs: Sequence[int], values: Mapping[int, bytes] | None = None
) -> SealedSecret:
    """Seal `secret` to the SHA-256 `pcrs` holding `values` (their current values by default; give
    the expected values to re-seal ahead of a legitimate, attested update)."""
    if not 0 < len(secret) <= MAX_SECRET:
        raise TpmError(f"sealing: a secret is 1..{MAX_SECRET} bytes, got {len(secret)}")
    expected = dict(values) if values is not None else tpm.pcr_read(pcrs)
    if sorted(expected) != sorted(set(pcrs)):
        raise TpmError(f"sealing: values given for PCRs {sorted(expected)}, not {sorted(pcrs)}")
    try:
        with tpm.flushing(_policy_session(tpm, TPM2_SE.TRIAL)) as trial:
            tpm.esapi.policy_pcr(trial, _pcr_digest(expected), pcr_selection(pcrs))
            policy = bytes(tpm.esapi.policy_get_digest(trial))
        srk, _ = tpm.create_primary(storage_key_template(), ESYS_TR.OWNER)
        with tpm.flushing(srk):
            private, public, *_ = tpm.esapi.create(
                srk,
                TPM2B_SENSITIVE_CREATE(sensitive=TPMS_SENSITIVE_CREATE(data=secret)),
                TPM2B_PUBLIC(publicArea=sealed_object_template(policy)),
            )
    except TSS2_Exception as exc:
        raise tpm.error(f"sealing a secret to PCRs {sorted(pcrs)}", exc) from None
    return SealedSecret(
        private=private.marshal(), public=public.publicArea.marshal(), pcrs=expected
    )


def unseal(tpm: Tpm, sealed: SealedSecret) -> bytes:
    """The secret, if the PCRs hold the sealed values; SealRefused naming the PCRs otherwise."""
    pcrs = sorted(sealed.pcrs)
    private, _ = TPM2B_PRIVATE.unmarshal(sealed.private)
    public, _ = TPMT_PUBLIC.unmarshal(sealed.public)
    try:
        srk, _ = tpm.create_primary(storage_key_template(), ESYS_TR.OWNER)
        with tpm.flushing(srk):
            obj = tpm.esapi.load(srk, private, TPM2B_PUBLIC(publicArea=public))
        with tpm.flushing(obj), tpm.flushing(_policy_session(tpm, TPM2_SE.POLICY)) as session:
            # An empty pcrDigest makes the TPM use the PCRs' current values; the unseal below
            # fails with POLICY_FAIL when they are not the sealed ones.
            tpm.esapi.policy_pcr(session, b"", pcr_selection(pcrs))
            return bytes(tpm.esapi.unseal(obj, session1=session))
    except TSS2_Exception as exc:
        if exc.error != TPM2_RC.POLICY_FAIL:
            raise tpm.error("unsealing a secret", exc) from None
    now = tpm.pcr_read(pcrs)
    changed = [i for i in pcrs if now[i] != sealed.pcrs[i]]
    raise SealRefused(
        f"TPM {tpm.where}: sealed secret refused: PCR "
        + ", ".join(str(i) for i in changed or pcrs)
        + " changed since it was sealed",
        changed or pcrs,
    )
