"""What the controller keeps, as plain values shared by every store backend: rows, the request to
create a node, the records of app specs and placements, the CA material, a whole-store snapshot,
and the errors. Times are UNIX seconds (float, UTC)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from common.errors import LispmeshError


class StoreError(LispmeshError):
    """A state problem the operator can act on (one line)."""


class PoolExhausted(StoreError):
    pass


class TokenUnusable(StoreError):
    """The token cannot count another use (missing, revoked, expired or used up) at commit time.

    `token` is the row as the store saw it (None if there is none): the caller words the refusal.
    """

    def __init__(self, token: TokenRow | None) -> None:
        super().__init__("the join token cannot be used")
        self.token = token


class AlreadyEnrolled(StoreError):
    """A node already holds this onboarding certificate (another enrollment won the race)."""

    def __init__(self, node: NodeRow) -> None:
        super().__init__(f"node {node.name} already holds this onboarding certificate")
        self.node = node


class Conflict(StoreError):
    """A compare-and-set lost: the record changed since the caller read it."""


class Fenced(StoreError):
    """A leader's write refused: its term is over (another replica leads, or none does)."""


@dataclass(frozen=True)
class Fence:
    """A leader's term: the leader key and the revision that created it. A fenced write commits
    only while that key is still that incarnation, so a leader that was paused past its lease
    (and replaced) cannot write, whatever it believes."""

    key: str
    revision: int


@dataclass(frozen=True)
class TokenRow:
    token_id: str
    secret_sha256: bytes
    created_at: float
    expires_at: float
    max_uses: int
    uses: int
    tags: tuple[str, ...]
    description: str
    revoked_at: float | None

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if now >= self.expires_at:
            return "expired"
        if self.uses >= self.max_uses:
            return "used-up"
        return "valid"


@dataclass(frozen=True)
class NodeRow:
    node_id: str
    name: str
    slot: int
    instance_id: int
    eid4: IPv4Network
    eid6: IPv6Network
    tags: tuple[str, ...]
    token_id: str | None
    onboarding_fp: str | None
    public_key_fp: str
    cert_pem: str
    cert_fp: str
    cert_not_after: float
    site_key: str
    hostname: str
    enrolled_at: float
    revoked_at: float | None
    config_version: int
    config_hash: str
    applied_version: int
    apply_error: str
    last_seen: float | None
    status: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class NewNode:
    """What enrollment decided, before the row exists (slot and EIDs are allocated by the store)."""

    node_id: str
    requested_name: str
    instance_id: int
    tags: tuple[str, ...]
    token_id: str | None
    onboarding_fp: str | None
    public_key_fp: str
    site_key: str
    hostname: str


@dataclass(frozen=True)
class EidPools:
    """Where EID prefixes come from: slot i is the i-th /len4 of pool4 and /len6 of pool6."""

    pool4: IPv4Network
    len4: int
    pool6: IPv6Network
    len6: int

    def __str__(self) -> str:
        return f"{self.pool4} (/{self.len4} each) and {self.pool6} (/{self.len6} each)"


@dataclass(frozen=True)
class Allocation:
    """The name, slot and EID prefixes a new node gets (what its certificate must name)."""

    name: str
    slot: int
    instance_id: int
    eid4: IPv4Network
    eid6: IPv6Network


@dataclass(frozen=True)
class Issued:
    """The certificate issued for an allocation."""

    cert_pem: str
    cert_fp: str
    not_after: float


# Called by `create_node` once the allocation is known, possibly more than once when a backend
# retries a lost compare-and-set: it must not have side effects beyond signing.
Issuer = Callable[[Allocation], Issued]


@dataclass(frozen=True)
class PolicyRow:
    version: int
    text: str
    filename: str
    compiled: dict[str, Any]  # node name -> NodePolicy dict, as compiled when applied
    applied_at: float
    applied_by: str


APPS = "apps"
PLACEMENTS = "placements"
# TPM-backed nodes (controller_api/tpm_records.py): by node id, and each EK to its node.
TPM_NODES = "tpm-nodes"
TPM_EKS = "tpm-eks"
# Controller bookkeeping: the leader's last round of singleton work (written fenced).
CONTROLLER = "controller"
# The attestation policy an operator set (controller_api/attestation_policies.py): one record.
ATTESTATION_POLICY = "attestation-policy"
# Certificates renewals replaced (controller_api/retired_certs.py), by fingerprint: listed to
# every node from the end of their grace period until they expire.
RETIRED_CERTS = "retired-certs"
OBJECT_KINDS = (
    APPS, PLACEMENTS, TPM_NODES, TPM_EKS, CONTROLLER, ATTESTATION_POLICY, RETIRED_CERTS
)  # fmt: skip


@dataclass(frozen=True)
class Record:
    """One serialized object (an app spec, a placement) and the store revision that wrote it."""

    kind: str
    key: str
    value: str
    revision: int


@dataclass(frozen=True)
class ObjectWrite:
    """One write of `commit_objects`. `value` None deletes; `expect_revision` None writes
    whatever is there, 0 only if the key is absent, N only if its record has revision N."""

    kind: str
    key: str
    value: str | None
    expect_revision: int | None = None


@dataclass(frozen=True)
class CaMaterial:
    """The controller CA: certificate and private key, PEM."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)


@dataclass(frozen=True)
class Snapshot:
    """Everything a store holds, for migration between backends."""

    meta: dict[str, str]
    tokens: list[TokenRow]
    nodes: list[NodeRow]
    policies: list[PolicyRow]
    policy_generation: int
    objects: list[Record]
    ca: CaMaterial | None


def check_object_kind(kind: str, key: str) -> None:
    if kind not in OBJECT_KINDS:
        raise StoreError(f"unknown object kind {kind!r} (one of {', '.join(OBJECT_KINDS)})")
    if not key:
        raise StoreError(f"{kind}: an empty key")
