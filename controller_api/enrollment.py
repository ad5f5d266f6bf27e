"""Enrollment: a join token or an onboarding certificate, plus a CSR, becomes a node.

One atomic store step (`Store.create_node`) counts the token use, allocates the name, slot and
EID prefixes and stores the node with its certificate, so a crash or a race (even between
controller replicas) never leaves half a node or a token used twice. Enrolling again with the
same key and token (an answer lost on the way) returns the same node without counting another
use.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certs.format import IdentityError
from controller_api import pki
from controller_api.attestation import AttestationRefused, ManufacturerCAs
from controller_api.gen.lispmesh.v1 import common_pb2, enrollment_pb2
from controller_api.retired_certs import RetiredCertificates
from controller_api.settings import ControllerSettings, Pools, rfc3339
from controller_api.store import (
    Allocation,
    AlreadyEnrolled,
    Conflict,
    Issued,
    NewNode,
    NodeRow,
    PoolExhausted,
    Store,
    TokenRow,
    TokenUnusable,
)
from controller_api.tokens import TokenFormatError, display_id, parse_token, secret_matches
from controller_api.tpm_records import Attestation, TpmNode, TpmRecords
from controller_api.tpm_verifier import TpmVerifier, VerifiedTpm


class EnrollmentError(Exception):
    """Refused. `code` maps to a gRPC status; the message is one line for the node's operator."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # "invalid", "unauthenticated", "denied", "exhausted"


@dataclass(frozen=True)
class Enrolled:
    node: NodeRow
    certificate_pem: bytes


IID_TAG = "iid:"  # a tag "iid:N" puts the node in instance-id N (`token create --instance-id N`)
REQUIRE_TPM_TAG = "tpm:required"  # a token with it enrolls TPM-backed nodes only


def instance_id_of(tags: tuple[str, ...], default: int) -> int:
    """The instance-id (virtual network) a node's tags put it in; `default` if none does."""
    for tag in tags:
        if tag.startswith(IID_TAG) and tag[len(IID_TAG) :].isdigit():
            iid = int(tag[len(IID_TAG) :])
            if iid < 1 << 24:
                return iid
    return default


def clean_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "-", text.strip())
    name = re.sub(r"^[^A-Za-z0-9]+", "", name)[:48]
    return name or "node"


class Enroller:
    def __init__(
        self,
        store: Store,
        ca_pki: pki.ControllerPki,
        settings: ControllerSettings,
        pools: Pools,
        onboarding_cas: list[x509.Certificate] | None = None,
        clock: Callable[[], float] = time.time,
        tpm: TpmVerifier | None = None,
    ) -> None:
        self.store = store
        self.pki = ca_pki
        self.settings = settings
        self.pools = pools
        self.onboarding_cas = onboarding_cas or []
        self.clock = clock
        self.tpm = tpm or TpmVerifier(ManufacturerCAs(()), clock=clock)
        self.tpm_records = TpmRecords(store)
        # The server shares the core's, so a renewal shows in the next desired states at once.
        self.retired = RetiredCertificates(store)
        self.api_port = 0  # set once the server is bound
        # Every replica's API address, this one first (replicas on etcd; else none).
        self.api_addresses: Callable[[], list[str]] = list

    def enroll(self, request: enrollment_pb2.EnrollRequest) -> enrollment_pb2.EnrollResponse:
        try:
            public_key = pki.parse_csr(request.csr_der)
        except IdentityError as exc:
            raise EnrollmentError("invalid", exc.reason) from None
        credential = request.WhichOneof("credential")
        if credential == "join_token":
            enrolled = self._with_token(request, public_key)
        elif credential == "onboarding":
            enrolled = self._with_onboarding(request, public_key)
        else:
            raise EnrollmentError("unauthenticated", "no join token or onboarding certificate")
        return self.response(enrolled)

    def response(self, enrolled: Enrolled) -> enrollment_pb2.EnrollResponse:
        node = enrolled.node
        return enrollment_pb2.EnrollResponse(
            node_id=node.node_id,
            node_name=node.name,
            certificate_pem=enrolled.certificate_pem,
            ca_certificate_pem=self.pki.ca_pem,
            ca_cross_pem=self.pki.cross_pem,
            instance_id=node.instance_id,
            eid_prefixes=[
                common_pb2.EidPrefix(instance_id=node.instance_id, prefix=str(p))
                for p in (node.eid4, node.eid6)
            ],
            tags=list(node.tags),
            api_port=self.api_port,
            api_addresses=self.api_addresses(),
        )

    # ------------------------------------------------------------------ credentials

    def _with_token(
        self, request: enrollment_pb2.EnrollRequest, public_key: ec.EllipticCurvePublicKey
    ) -> Enrolled:
        try:
            token = parse_token(request.join_token)
        except TokenFormatError as exc:
            raise EnrollmentError("invalid", str(exc)) from None
        shown = display_id(token.token_id)
        key_fp = pki.public_key_fingerprint(public_key)
        now = self.clock()
        row = self.store.get_token(token.token_id)
        if row is None or not secret_matches(token.secret, row.secret_sha256):
            raise EnrollmentError("unauthenticated", f"token {shown} is not valid here")
        tpm = self._verified_tpm(request, public_key)
        if tpm is None and REQUIRE_TPM_TAG in row.tags:
            raise EnrollmentError(
                "denied",
                f"token {shown} enrolls TPM-backed nodes only, and this node sent no TPM "
                "evidence (join with --tpm on a machine with a TPM; agents before 0.2 cannot)",
            )
        new = self._new_node(request, request.requested_name, row.tags, key_fp)
        new = NewNode(**{**new.__dict__, "token_id": row.token_id})
        self._require_tpm_for(new.instance_id, tpm, f"token {shown}")
        try:
            # Counts the use atomically; the same key with the same token gets its node back.
            return self._create(new, public_key, now, tpm)
        except TokenUnusable as exc:
            raise _refusal(shown, exc.token, now) from None

    def _with_onboarding(
        self, request: enrollment_pb2.EnrollRequest, public_key: ec.EllipticCurvePublicKey
    ) -> Enrolled:
        if not self.onboarding_cas:
            raise EnrollmentError(
                "unauthenticated", "this controller accepts no onboarding certificates"
            )
        cred = request.onboarding
        try:
            device = pki.verify_onboarding(
                self.onboarding_cas, cred.certificate_der, request.csr_der, cred.csr_signature
            )
        except IdentityError as exc:
            raise EnrollmentError("unauthenticated", exc.reason) from None
        key_fp = pki.public_key_fingerprint(public_key)
        now = self.clock()
        tpm = self._verified_tpm(request, public_key)
        known = self.store.node_by_onboarding(device.fingerprint)
        if known is None:
            wish = request.requested_name or device.common_name
            new = self._new_node(request, wish, self.settings.onboarding_tags, key_fp)
            new = NewNode(**{**new.__dict__, "onboarding_fp": device.fingerprint})
            self._require_tpm_for(new.instance_id, tpm, f"device {device.common_name}")
            try:
                return self._create(new, public_key, now, tpm)
            except AlreadyEnrolled as exc:
                known = exc.node  # a concurrent enrollment of the same device won
        # A device wiped and re-enrolled: same node and EIDs, a certificate for its new key.
        self._require_tpm_for(known.instance_id, tpm, f"device {device.common_name}")
        if not known.revoked:
            cert = self._issue(known.name, public_key, known.eid4, known.eid6, known.instance_id)
            node = self.store.replace_certificate(
                known.node_id, pki.pem(cert).decode(), pki.fingerprint(cert),
                cert.not_valid_after_utc.timestamp(), key_fp,
            )  # fmt: skip
            if node is not None:
                # The wiped device's old key may live on elsewhere: peers refuse it at once.
                self.retired.retire(known.name, known.cert_fp, now, known.cert_not_after, now)
                return Enrolled(node, pki.pem(cert))
            known = self.store.get_node(known.node_id) or known  # revoked meanwhile
        raise EnrollmentError(
            "denied",
            f"node {known.name} (this onboarding certificate) was revoked at "
            f"{rfc3339(known.revoked_at)}",
        )

    # ------------------------------------------------------------------ the node

    def _require_tpm_for(self, iid: int, tpm: VerifiedTpm | None, credential: str) -> None:
        """Refuse a node without verified TPM evidence into an instance-id that requires one."""
        if tpm is None and iid in self.settings.tpm_required_iids:
            raise EnrollmentError(
                "denied",
                f"instance-id {iid} admits TPM-backed nodes only, and this node ({credential}) "
                "sent no TPM evidence (join with --tpm on a machine with a TPM)",
            )

    def _new_node(
        self,
        request: enrollment_pb2.EnrollRequest,
        wish: str,
        tags: tuple[str, ...],
        key_fp: str,
    ) -> NewNode:
        return NewNode(
            node_id=secrets.token_hex(6),
            requested_name=clean_name(wish or request.hostname or "node"),
            instance_id=instance_id_of(tags, self.settings.instance_id),
            tags=tags,
            token_id=None,
            onboarding_fp=None,
            public_key_fp=key_fp,
            site_key=secrets.token_urlsafe(24),
            hostname=request.hostname[:255],
        )

    def _issue(
        self,
        name: str,
        key: ec.EllipticCurvePublicKey,
        eid4: IPv4Network,
        eid6: IPv6Network,
        iid: int,
    ) -> x509.Certificate:
        return self.pki.ca.issue(
            name, key, [(iid, eid4), (iid, eid6)],
            valid_days=self.settings.cert_lifetime / 86400, now=self.clock(),
        )  # fmt: skip

    # ------------------------------------------------------------------ renewal

    def renew(self, node: NodeRow, csr_der: bytes) -> tuple[x509.Certificate, float]:
        """A new certificate for `node` (authenticated by its current or retired certificate)
        and the new key in `csr_der`; the replaced certificate is accepted until the returned
        time. A file-key node's key must be new: a renewal that kept a key would also keep a
        stolen one. A TPM-bound node's must be the same, its TPM-resident mesh key (which cannot
        be stolen): a new one could live anywhere, and would undo the TPM binding."""
        try:
            public_key = pki.parse_csr(csr_der)
        except IdentityError as exc:
            raise EnrollmentError("invalid", exc.reason) from None
        key_fp = pki.public_key_fingerprint(public_key)
        self._check_renewal_key(node, key_fp)
        now = self.clock()
        cert = self._issue(node.name, public_key, node.eid4, node.eid6, node.instance_id)
        grace_until = now + self.settings.cert_grace
        renewed = self.store.replace_certificate(
            node.node_id, pki.pem(cert).decode(), pki.fingerprint(cert),
            cert.not_valid_after_utc.timestamp(), key_fp, retire_until=grace_until,
        )  # fmt: skip
        if renewed is None:
            raise EnrollmentError("denied", f"node {node.name} was revoked")
        # Once the grace period is over, every peer refuses the old certificate too.
        self.retired.retire(node.name, node.cert_fp, grace_until, node.cert_not_after, now)
        return cert, grace_until

    def _check_renewal_key(self, node: NodeRow, key_fp: str) -> None:
        tpm = self.tpm_records.get(node.node_id)
        same = key_fp == node.public_key_fp
        if tpm is None and same:
            raise EnrollmentError(
                "invalid", "a renewal needs a new key (the CSR holds the old one)"
            )
        if tpm is not None and not same:
            raise EnrollmentError(
                "denied",
                f"node {node.name} is TPM-bound: its renewal must keep its TPM mesh key (the "
                "CSR holds another key, which the TPM never certified)",
            )
        if tpm is not None and tpm.quarantined:
            assert tpm.attestation is not None
            raise EnrollmentError(
                "denied",
                f"node {node.name} is quarantined ({tpm.attestation.reason}): it renews after it "
                "attests again",
            )

    def _create(
        self,
        new: NewNode,
        key: ec.EllipticCurvePublicKey,
        now: float,
        tpm: VerifiedTpm | None = None,
    ) -> Enrolled:
        def issue(alloc: Allocation) -> Issued:
            cert = self._issue(alloc.name, key, alloc.eid4, alloc.eid6, alloc.instance_id)
            return Issued(
                pki.pem(cert).decode(), pki.fingerprint(cert), cert.not_valid_after_utc.timestamp()
            )

        binding = None
        if tpm is not None:
            again = self._tpm_bound(new, tpm, key, now)
            if again is not None:
                return again
            binding = self._bind_tpm(new.node_id, tpm, now, replaces=None)
        try:
            node = self.store.create_node(new, self.pools, issue, now)
        except BaseException as exc:
            if binding is not None:
                self.tpm_records.unbind(binding)
            if isinstance(exc, PoolExhausted):
                raise EnrollmentError("exhausted", str(exc)) from None
            raise
        return Enrolled(node, node.cert_pem.encode())

    # ------------------------------------------------------------------ TPM-backed nodes

    def _verified_tpm(
        self, request: enrollment_pb2.EnrollRequest, key: ec.EllipticCurvePublicKey
    ) -> VerifiedTpm | None:
        if not request.HasField("tpm"):
            return None
        try:
            return self.tpm.finish(request.tpm, key)
        except AttestationRefused as exc:
            raise EnrollmentError("denied", f"TPM: {exc}") from None

    def _bind_tpm(
        self, node_id: str, tpm: VerifiedTpm, now: float, replaces: str | None
    ) -> TpmNode:
        clock = (tpm.clock.reset_count, tpm.clock.restart_count, tpm.clock.clock)
        binding = TpmNode(
            node_id, tpm.ek_name, tpm.ek_issuer, tpm.ak_public.hex(), clock, Attestation(now, True),
            ek_subject=tpm.ek_subject,
        )  # fmt: skip
        try:
            self.tpm_records.bind(binding, replaces)
        except Conflict:
            raise EnrollmentError(
                "denied", "this TPM is being enrolled by another request: try again"
            ) from None
        return binding

    def _tpm_bound(
        self, new: NewNode, tpm: VerifiedTpm, key: ec.EllipticCurvePublicKey, now: float
    ) -> Enrolled | None:
        """A TPM enrolled before gets its node back (a new certificate, no token use); a name
        bound to another TPM is refused (Keylime refuses such a re-registration too)."""
        bound = self.tpm_records.node_of_ek(tpm.ek_name)
        known = self.store.get_node(bound) if bound is not None else None
        if known is not None:
            if known.revoked:
                raise EnrollmentError(
                    "denied",
                    f"node {known.name} (this TPM) was revoked at {rfc3339(known.revoked_at)}",
                )
            cert = self._issue(known.name, key, known.eid4, known.eid6, known.instance_id)
            node = self.store.replace_certificate(
                known.node_id, pki.pem(cert).decode(), pki.fingerprint(cert),
                cert.not_valid_after_utc.timestamp(), pki.public_key_fingerprint(key),
            )  # fmt: skip
            if node is None:
                raise EnrollmentError("denied", f"node {known.name} (this TPM) was revoked")
            self.retired.retire(known.name, known.cert_fp, now, known.cert_not_after, now)
            self._bind_tpm(node.node_id, tpm, now, replaces=node.node_id)
            return Enrolled(node, pki.pem(cert))
        if bound is not None:  # a binding whose node was never created (a crash): take it over
            self.tpm_records.unbind(TpmNode(bound, tpm.ek_name, "", ""))
        same_name = self.store.find_node(new.requested_name)
        if same_name is not None and not same_name.revoked:
            other = self.tpm_records.get(same_name.node_id)
            if other is not None and other.ek_name != tpm.ek_name:
                raise EnrollmentError(
                    "denied",
                    f"node {same_name.name} is bound to another TPM (EK {other.ek_name[:16]}…): "
                    f"refusing to enroll that name from this one (EK {tpm.ek_name[:16]}…)",
                )
        return None


def _refusal(shown: str, row: TokenRow | None, now: float) -> EnrollmentError:
    """Why the token `shown` cannot count another use."""
    if row is None:
        return EnrollmentError("unauthenticated", f"token {shown} is not valid here")
    state = row.state(now)
    if state == "revoked":
        return EnrollmentError("denied", f"token {shown} was revoked at {rfc3339(row.revoked_at)}")
    if state == "expired":
        return EnrollmentError("denied", f"token {shown} expired at {rfc3339(row.expires_at)}")
    return EnrollmentError(
        "denied", f"token {shown} is used up ({row.uses} of {row.max_uses} uses)"
    )
