"""The controller's half of TPM-bound enrollment and of each attestation round: challenges out,
evidence in. The checks themselves are controller_api/attestation/ (software only).

Enrollment (Keylime-style, two calls): `start` checks the EK certificate against the configured
manufacturer CAs (or the EK against the operator's allow-list) and the AK's attributes, and runs
MakeCredential; `finish` requires the activation proof, the AK's certification of the mesh key in
the CSR, and a quote for the same nonce that passes the attestation policy. A round after that
(`challenge`, `attest`) is a fresh nonce and a quote checked with the enrolled AK.

Pending challenges live in this process for a minute (a node retries from step 1 if its
controller restarted in between).
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss import TPMT_PUBLIC

from controller_api.attestation import (
    AttestationPolicy,
    AttestationRefused,
    Endorsement,
    ManufacturerCAs,
    PendingActivation,
    Quote,
    SignedAttest,
    TpmClock,
    VerifiedQuote,
    appraise,
    check_attestation_key,
    start_activation,
    verify_certification,
    verify_endorsement,
)
from controller_api.attestation.ek_certificate import ek_subject
from controller_api.attestation.policy import BOOT_LOG_PCRS
from controller_api.attestation.structures import decode, name
from controller_api.attestation_policies import AttestationPolicies
from controller_api.gen.lispmesh.v1 import attestation_pb2, enrollment_pb2

# Secure by default: the boot PCRs are quoted and must replay from the node's event log.
DEFAULT_POLICY = AttestationPolicy(pcrs=BOOT_LOG_PCRS, log_pcrs=BOOT_LOG_PCRS)
CHALLENGE_TTL = 60.0
MAX_PENDING = 1024  # challenges outstanding at once; the oldest is dropped beyond that


@dataclass(frozen=True)
class _Enrolling:
    activation: PendingActivation
    ek_name: bytes
    ek_issuer: str
    ek_subject: str
    ak_public: bytes
    nonce: bytes
    expires: float
    policy: AttestationPolicy  # the one whose PCRs were asked for


@dataclass(frozen=True)
class _Round:
    nonce: bytes
    expires: float
    policy: AttestationPolicy


@dataclass(frozen=True)
class VerifiedTpm:
    """A TPM the controller now trusts for one enrollment: its EK, the AK that lives in it, and
    the clock of its first accepted quote."""

    ek_name: str
    ek_issuer: str
    ak_public: bytes
    clock: TpmClock
    ek_subject: str = ""


def quote_of(message: attestation_pb2.TpmQuote) -> tuple[Quote, bytes | None]:
    """The quote and the event log (None when the node sent none) of a TpmQuote message."""
    quote = Quote(message.attest, message.signature, {int(i): v for i, v in message.pcrs.items()})
    return quote, message.event_log or None


class TpmVerifier:
    def __init__(
        self,
        cas: ManufacturerCAs,
        allowed_uncertified: Collection[bytes] = (),
        policy: AttestationPolicy = DEFAULT_POLICY,
        clock: Callable[[], float] = time.time,
        interval: float = 0.0,
        policies: AttestationPolicies | None = None,
    ) -> None:
        """`policies` (the operator's, from the store) replaces the fixed `policy` when given;
        `interval` is how often an attested node attests again (0: on each connection only)."""
        self.cas = cas
        self.allowed_uncertified = frozenset(allowed_uncertified)
        self.policies = policies
        self._fixed_policy = policy
        self.interval = interval
        self.clock = clock
        self._enrolling: OrderedDict[str, _Enrolling] = OrderedDict()
        self._rounds: OrderedDict[str, _Round] = OrderedDict()  # by node id

    @property
    def policy(self) -> AttestationPolicy:
        """The policy in force now (read each round: an operator may change it at any time)."""
        return self.policies.policy() if self.policies is not None else self._fixed_policy

    # ------------------------------------------------------------------ enrollment

    def start(self, identity: enrollment_pb2.TpmIdentity) -> enrollment_pb2.TpmChallenge:
        """AttestationRefused unless the EK is a trusted manufacturer's (or allowed) and the AK a
        restricted TPM-resident signing key; else the credential and the nonce."""
        endorsement = Endorsement(identity.ek_public, identity.ek_certificate or None)
        now = self.clock()
        certificate = verify_endorsement(
            endorsement, self.cas, dt.datetime.fromtimestamp(now, dt.UTC), self.allowed_uncertified
        )
        ak_public = check_attestation_key(identity.ak_public)
        activation = start_activation(identity.ek_public, ak_public)
        challenge_id, nonce = secrets.token_hex(16), secrets.token_bytes(32)
        policy = self.policy
        self._expire(self._enrolling, now)
        self._enrolling[challenge_id] = _Enrolling(
            activation,
            name(decode(TPMT_PUBLIC, identity.ek_public, "EK public area")),
            certificate.issuer.rfc4514_string() if certificate is not None else "",
            ek_subject(certificate) if certificate is not None else "",
            identity.ak_public,
            nonce,
            now + CHALLENGE_TTL,
            policy,
        )
        return enrollment_pb2.TpmChallenge(
            challenge_id=challenge_id,
            credential_blob=activation.challenge.id_object,
            encrypted_secret=activation.challenge.encrypted_secret,
            nonce=nonce,
            pcrs=list(policy.pcrs),
        )

    def finish(
        self, evidence: enrollment_pb2.TpmEvidence, csr_key: ec.EllipticCurvePublicKey
    ) -> VerifiedTpm:
        """The TPM, once the node proved the AK is in it, the CSR's key is resident in it, and
        it booted what the policy allows; AttestationRefused naming the failed check otherwise."""
        pending = self._enrolling.pop(evidence.challenge_id, None)
        if pending is None or pending.expires < self.clock():
            raise AttestationRefused(
                "TPM enrollment: unknown or expired challenge (start again)", "challenge"
            )
        pending.activation.check(evidence.activation_proof)
        ak_public = decode(TPMT_PUBLIC, pending.ak_public, "attestation key public area")
        certification = SignedAttest(evidence.certify_attest, evidence.certify_signature)
        mesh_key = verify_certification(
            certification, ak_public, evidence.mesh_key_public, pending.nonce
        )
        if mesh_key != csr_key:
            raise AttestationRefused(
                "TPM enrollment: the CSR is for another key than the TPM-certified mesh key",
                "certify",
            )
        quote, event_log = quote_of(evidence.quote)
        verified = appraise(quote, ak_public, pending.nonce, None, event_log, pending.policy)
        return VerifiedTpm(
            pending.ek_name.hex(),
            pending.ek_issuer,
            pending.ak_public,
            verified.clock,
            pending.ek_subject,
        )

    # ------------------------------------------------------------------ attestation rounds

    def challenge(self, node_id: str) -> attestation_pb2.AttestationChallenge:
        nonce = secrets.token_bytes(32)
        now = self.clock()
        self._rounds.pop(node_id, None)
        self._expire(self._rounds, now)
        policy = self.policy
        self._rounds[node_id] = _Round(nonce, now + CHALLENGE_TTL, policy)
        return attestation_pb2.AttestationChallenge(
            nonce=nonce, pcrs=list(policy.pcrs), interval_seconds=self.interval
        )

    def attest(
        self,
        node_id: str,
        ak_public: bytes,
        previous: TpmClock | None,
        message: attestation_pb2.TpmQuote,
    ) -> VerifiedQuote:
        """The node's quote for its outstanding nonce, appraised; AttestationRefused otherwise."""
        round_ = self._rounds.pop(node_id, None)
        if round_ is None or round_.expires < self.clock():
            raise AttestationRefused("attestation: no outstanding challenge (ask again)", "nonce")
        quote, event_log = quote_of(message)
        ak = decode(TPMT_PUBLIC, ak_public, "attestation key public area")
        return appraise(quote, ak, round_.nonce, previous, event_log, round_.policy)

    @staticmethod
    def _expire(pending: OrderedDict[str, Any], now: float) -> None:
        for key in [k for k, v in pending.items() if v.expires < now]:
            del pending[key]
        while len(pending) >= MAX_PENDING:
            pending.popitem(last=False)
