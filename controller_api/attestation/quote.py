"""TPM2_Quote checked in software: signed by the AK, for our nonce, newer than the last quote, and
covering exactly the PCR values the node reported."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tpm2_pytss import TPM2_ALG, TPM2_ST, TPMS_ATTEST, TPMT_PUBLIC

from controller_api.attestation.errors import AttestationRefused
from controller_api.attestation.evidence import Quote
from controller_api.attestation.structures import verify_signed


@dataclass(frozen=True, order=True)
class TpmClock:
    """The TPM's clock at a quote. Ordered by (reset, restart, clock): the TPM never reports a
    smaller triple later, so a quote that is not greater than the last one is a replay. (The TPM
    reports the counters in the clear only for keys in the endorsement or platform hierarchy, which
    is one reason the AK lives in the endorsement hierarchy.)"""

    reset_count: int
    restart_count: int
    clock: int

    @classmethod
    def of(cls, attest: TPMS_ATTEST) -> TpmClock:
        info = attest.clockInfo
        return cls(int(info.resetCount), int(info.restartCount), int(info.clock))


@dataclass(frozen=True)
class VerifiedQuote:
    clock: TpmClock
    pcrs: dict[int, bytes]


def _quoted_pcrs(attest: TPMS_ATTEST) -> list[int]:
    indexes: list[int] = []
    for bank in attest.attested.quote.pcrSelect:
        if bank.hash != TPM2_ALG.SHA256:
            raise AttestationRefused("quote: covers a PCR bank other than SHA-256", "quote")
        select = bytes(bank.pcrSelect)[: bank.sizeofSelect]
        indexes += [i for i in range(len(select) * 8) if select[i // 8] & (1 << (i % 8))]
    return indexes


def _pcr_digest(values: Mapping[int, bytes]) -> bytes:
    return hashlib.sha256(b"".join(values[i] for i in sorted(values))).digest()


def verify_quote(
    quote: Quote,
    ak_public: TPMT_PUBLIC,
    nonce: bytes,
    pcrs: Sequence[int],
    previous: TpmClock | None,
) -> VerifiedQuote:
    """The quoted clock and PCR values; AttestationRefused naming the first check that fails."""
    attest = verify_signed(quote, ak_public, "quote")
    if attest.type != TPM2_ST.ATTEST_QUOTE:
        raise AttestationRefused("quote: not a TPM2_Quote statement", "quote")
    if bytes(attest.extraData) != nonce:
        raise AttestationRefused("quote: made for another nonce (stale or replayed)", "nonce")
    clock = TpmClock.of(attest)
    if previous is not None and not clock > previous:
        raise AttestationRefused(
            f"quote: TPM clock {clock} is not after the last accepted quote's {previous} "
            "(replayed quote or a TPM clock rollback)",
            "replay",
        )
    quoted = _quoted_pcrs(attest)
    if quoted != sorted(set(pcrs)):
        raise AttestationRefused(
            f"quote: covers PCRs {quoted}, not the requested {sorted(set(pcrs))}", "quote"
        )
    if sorted(quote.pcrs) != quoted or any(len(v) != 32 for v in quote.pcrs.values()):
        raise AttestationRefused(
            f"quote: PCR values sent for {sorted(quote.pcrs)}, quoted {quoted}", "quote"
        )
    if _pcr_digest(quote.pcrs) != bytes(attest.attested.quote.pcrDigest):
        raise AttestationRefused(
            "quote: the PCR values sent are not the ones quoted (changed meanwhile? ask again)",
            "pcr-digest",
        )
    return VerifiedQuote(clock=clock, pcrs=dict(quote.pcrs))
