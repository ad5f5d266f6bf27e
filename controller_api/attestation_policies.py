"""The attestation policy in force: the one an operator set at runtime (`lispmesh controller
attestation policy set`), else the --attestation-policy file, else the default.

A policy set at runtime is stored (one `attestation-policy` object record), so it survives a
restart and every controller replica sharing the store appraises with the same golden values; it
wins over the file given at start, which is only the initial policy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from controller_api.attestation import AttestationPolicy
from controller_api.store import ATTESTATION_POLICY, ObjectWrite, Store

KEY = "current"


@dataclass(frozen=True)
class PolicyInForce:
    policy: AttestationPolicy
    source: str  # "set" (by an operator, stored), "file" (--attestation-policy) or "default"
    set_at: float | None = None
    set_by: str = ""
    filename: str = ""


class AttestationPolicies:
    def __init__(self, store: Store, initial: PolicyInForce) -> None:
        self.store = store
        self.initial = initial
        self._cached: tuple[int, PolicyInForce] | None = None  # by record revision

    def current(self) -> PolicyInForce:
        record = self.store.get_object(ATTESTATION_POLICY, KEY)
        if record is None:
            return self.initial
        if self._cached is not None and self._cached[0] == record.revision:
            return self._cached[1]
        doc = json.loads(record.value)
        stored = PolicyInForce(
            AttestationPolicy.from_json(doc["policy"], "stored attestation policy"),
            "set",
            doc["set_at"],
            doc["set_by"],
            doc["filename"],
        )
        self._cached = (record.revision, stored)
        return stored

    def policy(self) -> AttestationPolicy:
        return self.current().policy

    def set(self, text: str, filename: str, who: str, now: float) -> PolicyInForce:
        """Validate and store `text`; ValueError (one line naming `filename`) if it is not a
        policy."""
        policy = AttestationPolicy.from_json(text, filename or "attestation policy")
        doc = {"policy": policy.to_json(), "set_at": now, "set_by": who, "filename": filename}
        self.store.commit_objects([ObjectWrite(ATTESTATION_POLICY, KEY, json.dumps(doc))])
        return self.current()
