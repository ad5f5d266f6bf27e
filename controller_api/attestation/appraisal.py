"""One attestation round, verifier side: the quote, the event log replayed to it, the policy."""

from __future__ import annotations

from tpm2_pytss import TPMT_PUBLIC

from controller_api.attestation.errors import AttestationRefused
from controller_api.attestation.eventlog import EventLog
from controller_api.attestation.evidence import Quote
from controller_api.attestation.policy import AttestationPolicy, Verdict
from controller_api.attestation.quote import TpmClock, VerifiedQuote, verify_quote


class PolicyViolation(AttestationRefused):
    """The evidence is genuine but measures something the policy does not allow."""

    def __init__(self, verdict: Verdict) -> None:
        first = verdict.failures[0]
        super().__init__(
            f"attestation policy: {verdict.summary()}", "policy", pcr=first.pcr, event=first.event
        )
        self.verdict = verdict


def appraise(
    quote: Quote,
    ak_public: TPMT_PUBLIC,
    nonce: bytes,
    previous: TpmClock | None,
    event_log: bytes | None,
    policy: AttestationPolicy,
) -> VerifiedQuote:
    """The accepted quote, or AttestationRefused saying which check, PCR or event failed.
    `ak_public` must come from an activated enrollment; `previous` is the clock of this node's last
    accepted quote (keep the returned one for the next round)."""
    verified = verify_quote(quote, ak_public, nonce, policy.pcrs, previous)
    log = None
    if event_log is not None:
        log = EventLog.decode(event_log)
        log.check_self_describing()
        replayed = log.replay()
        for pcr in policy.log_pcrs:
            claimed = replayed.get(pcr, bytes(32))
            if verified.pcrs[pcr] != claimed:
                raise AttestationRefused(
                    f"PCR {pcr}: the TPM quoted {verified.pcrs[pcr].hex()}, the event log "
                    f"replays to {claimed.hex()} (an event was added, removed or altered, or "
                    "the PCR was extended outside the log)",
                    "event-log-replay",
                    pcr=pcr,
                )
    elif policy.log_pcrs:
        raise AttestationRefused("attestation: the node sent no event log", "event-log")
    verdict = policy.evaluate(verified.pcrs, log)
    if not verdict.ok:
        raise PolicyViolation(verdict)
    return verified
