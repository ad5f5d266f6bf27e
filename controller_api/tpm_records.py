"""What the controller keeps about TPM-backed nodes, in the store's object records.

Two kinds: `tpm-nodes` (by node id: the enrolled EK and AK, and the last attestation) and
`tpm-eks` (by EK name: the node it is bound to). Binding an EK is a compare-and-set on its
`tpm-eks` record, so two enrollments with one TPM (or two controller replicas) can never bind it
to two nodes; the node's `tpm-nodes` record is written in the same commit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

from controller_api.store import TPM_EKS, TPM_NODES, Conflict, ObjectWrite, Store


@dataclass(frozen=True)
class Attestation:
    at: float
    ok: bool
    reason: str = ""
    check: str = ""  # AttestationRefused.check of a failure ("policy", "event-log-replay", ...)


@dataclass(frozen=True)
class TpmNode:
    node_id: str
    ek_name: str  # hex TPM name of the EK: the TPM's identity
    ek_issuer: str  # the EK certificate's issuer (RFC 4514); "" for an allowed uncertified EK
    ak_public: str  # hex TPMT_PUBLIC of the activated AK: what every quote must verify with
    # The TPM clock of the last accepted quote (reset, restart, clock): a later quote must be newer.
    clock: tuple[int, int, int] | None = None
    attestation: Attestation | None = None
    ek_subject: str = ""  # the EK certificate's subject and TPM (controller_api/attestation)

    @property
    def quarantined(self) -> bool:
        return self.attestation is not None and not self.attestation.ok

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TpmNode:
        doc = json.loads(text)
        attestation = doc.pop("attestation")
        clock = doc.pop("clock")
        return cls(
            **doc,
            clock=tuple(clock) if clock is not None else None,
            attestation=Attestation(**attestation) if attestation is not None else None,
        )


class TpmRecords:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, node_id: str) -> TpmNode | None:
        record = self.store.get_object(TPM_NODES, node_id)
        return TpmNode.from_json(record.value) if record is not None else None

    def all(self) -> dict[str, TpmNode]:
        return {r.key: TpmNode.from_json(r.value) for r in self.store.list_objects(TPM_NODES)}

    def node_of_ek(self, ek_name: str) -> str | None:
        record = self.store.get_object(TPM_EKS, ek_name)
        return record.value if record is not None else None

    def bind(self, tpm: TpmNode, replaces: str | None) -> None:
        """Bind `tpm.ek_name` to `tpm.node_id`. `replaces` is the node id the EK is bound to now
        (None: unbound); Conflict if that changed meanwhile."""
        current = self.store.get_object(TPM_EKS, tpm.ek_name)
        if (current.value if current is not None else None) != replaces:
            raise Conflict(f"EK {tpm.ek_name[:16]}… was bound meanwhile")
        self.store.commit_objects(
            [
                ObjectWrite(TPM_EKS, tpm.ek_name, tpm.node_id, current.revision if current else 0),
                ObjectWrite(TPM_NODES, tpm.node_id, tpm.to_json()),
            ]
        )

    def unbind(self, tpm: TpmNode) -> None:
        """Undo a bind whose node was never created."""
        self.store.commit_objects(
            [ObjectWrite(TPM_EKS, tpm.ek_name, None), ObjectWrite(TPM_NODES, tpm.node_id, None)]
        )

    def record_attestation(
        self, node_id: str, attestation: Attestation, clock: tuple[int, int, int] | None
    ) -> TpmNode | None:
        """Store the outcome of one attestation round (and the accepted quote's clock)."""
        record = self.store.get_object(TPM_NODES, node_id)
        if record is None:
            return None
        tpm = TpmNode.from_json(record.value)
        updated = replace(tpm, attestation=attestation, clock=clock or tpm.clock)
        self.store.commit_objects(
            [ObjectWrite(TPM_NODES, node_id, updated.to_json(), record.revision)]
        )
        return updated
