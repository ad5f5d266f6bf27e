"""The `Store` protocol: everything the controller keeps, whatever holds it.

Two implementations pass the same contract tests (tests/unit/test_controller_store.py):
`SqliteStore` (one file, embedded, the default for one controller) and `EtcdStore` (several
controller replicas sharing one etcd cluster). Every method is one atomic step: no caller holds a
transaction open, so a backend may retry an optimistic write internally. Two guarantees hold
across processes sharing a backend: a token never counts more uses than it has, and a slot (so
an EID prefix) or a node name is never given twice.

Leader-only writes carry a `Fence` (the leader key's creating revision): on etcd they commit only
while that term lasts. SQLite serves one controller process, which always leads: it accepts any
fence.

`revision()` is a store-wide counter that grows with every committed change; records of app
specs and placements carry the revision that wrote them, the basis of compare-and-set and of
config streams that resume from a revision.

To add an operation: add it here, in both backends, and a contract test that runs on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from controller_api.store.model import (
    CaMaterial,
    EidPools,
    Fence,
    Issuer,
    NewNode,
    NodeRow,
    ObjectWrite,
    PolicyRow,
    Record,
    Snapshot,
    TokenRow,
)


@runtime_checkable
class Store(Protocol):
    def close(self) -> None: ...

    def revision(self) -> int:
        """The store-wide revision: greater after every committed change."""
        ...

    # ------------------------------------------------------------------ settings fixed at start

    def get_meta(self, key: str) -> str | None: ...

    def set_meta_default(self, key: str, value: str) -> str:
        """The stored value of `key`, storing `value` first if there is none."""
        ...

    # ------------------------------------------------------------------ the CA

    def ca_material(self) -> CaMaterial | None: ...

    def init_ca_material(self, material: CaMaterial) -> CaMaterial:
        """The stored CA, storing `material` first if there is none (the first writer wins)."""
        ...

    def ca_materials(self) -> list[CaMaterial]:
        """Every trusted CA, the issuing one (`ca_material`) first: more than one during a CA
        rotation (controller_api.ca_rotation)."""
        ...

    def replace_ca_materials(
        self, expected: Sequence[CaMaterial], new: Sequence[CaMaterial]
    ) -> None:
        """Store `new` (the issuing CA first) if the stored CAs are `expected`; Conflict if not."""
        ...

    # ------------------------------------------------------------------ tokens

    def add_token(
        self,
        token_id: str,
        secret_sha256: bytes,
        now: float,
        expires_at: float,
        max_uses: int,
        tags: tuple[str, ...],
        description: str,
    ) -> TokenRow: ...

    def get_token(self, token_id: str) -> TokenRow | None: ...

    def list_tokens(self) -> list[TokenRow]:
        """Oldest first."""
        ...

    def revoke_token(self, token_id: str, now: float) -> TokenRow | None: ...

    # ------------------------------------------------------------------ nodes

    def create_node(self, new: NewNode, pools: EidPools, issue: Issuer, now: float) -> NodeRow:
        """Allocate a unique name and the lowest free slot, issue the certificate, store the node
        and, if `new.token_id` is set, count one use of that token: all or nothing.

        With a token, a live node enrolled with the same token and public key is returned as it
        is (an answer lost on the way), without counting a use. Raises `TokenUnusable` if the
        token cannot count a use at `now`, `AlreadyEnrolled` if `new.onboarding_fp` is held by a
        node already, `PoolExhausted` if no slot is free.
        """
        ...

    def get_node(self, node_id: str) -> NodeRow | None: ...

    def find_node(self, name_or_id: str) -> NodeRow | None: ...

    def node_by_cert(self, cert_fp: str) -> NodeRow | None: ...

    def node_by_public_key(self, public_key_fp: str) -> NodeRow | None:
        """A live node with this key."""
        ...

    def node_by_onboarding(self, onboarding_fp: str) -> NodeRow | None: ...

    def list_nodes(self, include_revoked: bool = True) -> list[NodeRow]:
        """Ordered by instance-id, then slot."""
        ...

    def revoke_node(self, node_id: str, now: float) -> NodeRow | None: ...

    def replace_certificate(
        self,
        node_id: str,
        cert_pem: str,
        cert_fp: str,
        not_after: float,
        public_key_fp: str,
        retire_until: float | None = None,
    ) -> NodeRow | None:
        """The node with its new certificate; None if there is no live node `node_id`. With
        `retire_until` (a renewal), the replaced certificate stays known until then
        (`node_by_retired_cert`); without it (a re-enrollment), it is forgotten at once."""
        ...

    def node_by_retired_cert(self, cert_fp: str, now: float) -> NodeRow | None:
        """The node whose certificate `cert_fp` a renewal replaced, if `now` is before the end
        of its grace period."""
        ...

    def set_config_hash(self, node_id: str, config_hash: str) -> int:
        """The node's desired-state version: bumped (and stored) when the document changed."""
        ...

    def record_ack(self, node_id: str, version: int, error: str, now: float) -> None: ...

    def record_status(self, node_id: str, status: dict[str, Any], now: float) -> None: ...

    def record_metrics(self, node_id: str, metrics: dict[str, Any], now: float) -> None: ...

    def touch(self, node_id: str, now: float) -> None: ...

    # ------------------------------------------------------------------ policies

    def current_policy(self) -> PolicyRow | None: ...

    def list_policies(self) -> list[PolicyRow]:
        """Every applied version, oldest first."""
        ...

    def add_policy(
        self, text: str, filename: str, compiled: dict[str, Any], now: float, who: str
    ) -> tuple[int, int]:
        """Store a new applied version and bump the generation; returns (version, generation)."""
        ...

    def policy_generation(self) -> int: ...

    def bump_policy_generation(self) -> int: ...

    # ------------------------------------------------------------------ app specs, placements

    def get_object(self, kind: str, key: str) -> Record | None: ...

    def list_objects(self, kind: str) -> list[Record]:
        """Ordered by key."""
        ...

    def commit_objects(self, writes: Sequence[ObjectWrite], fence: Fence | None = None) -> int:
        """Apply every write or none (`Conflict` if an expectation fails, `Fenced` if `fence`'s
        term is over); the new revision."""
        ...

    def expire_retired_certs(self, now: float, fence: Fence | None = None) -> int:
        """Forget certificates whose grace period ended before `now` (a leader's chore, fenced
        like `commit_objects`); how many."""
        ...

    # ------------------------------------------------------------------ migration

    def snapshot(self) -> Snapshot: ...

    def restore(self, snapshot: Snapshot) -> None:
        """Load `snapshot` into this store, which must hold no tokens, nodes or policies."""
        ...
