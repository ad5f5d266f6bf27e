"""Remote attestation, verifier side: pure software checks (cryptography) of what a node's TPM
produced. Never talks to a TPM.

Enrollment: verify_ek_certificate -> check_attestation_key -> start_activation / check ->
verify_certification of the mesh key. Each attestation round: appraise (quote + event log + policy).
"""

from controller_api.attestation.appraisal import PolicyViolation, appraise
from controller_api.attestation.certify import verify_certification
from controller_api.attestation.credential import (
    PendingActivation,
    activation_proof,
    start_activation,
)
from controller_api.attestation.ek_certificate import (
    ManufacturerCAs,
    verify_ek_certificate,
    verify_endorsement,
)
from controller_api.attestation.errors import AttestationRefused
from controller_api.attestation.eventlog import Event, EventLog, EventLogError
from controller_api.attestation.evidence import (
    CredentialChallenge,
    Endorsement,
    Quote,
    SignedAttest,
)
from controller_api.attestation.keys import check_attestation_key, check_resident_signing_key
from controller_api.attestation.policy import AttestationPolicy, Failure, Verdict
from controller_api.attestation.quote import TpmClock, VerifiedQuote, verify_quote

__all__ = [
    "AttestationPolicy",
    "AttestationRefused",
    "CredentialChallenge",
    "Endorsement",
    "Event",
    "EventLog",
    "EventLogError",
    "Failure",
    "ManufacturerCAs",
    "PendingActivation",
    "PolicyViolation",
    "Quote",
    "SignedAttest",
    "TpmClock",
    "Verdict",
    "VerifiedQuote",
    "activation_proof",
    "appraise",
    "check_attestation_key",
    "check_resident_signing_key",
    "start_activation",
    "verify_certification",
    "verify_ek_certificate",
    "verify_endorsement",
    "verify_quote",
]
