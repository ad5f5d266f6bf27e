"""Certificates renewals replaced, as every node's xTR must refuse them.

A renewal gives a node a new key and certificate; the old certificate is still accepted by the
controller during a grace period (a node whose renewal answer was lost asks again with it), but
it is CA-signed and valid for up to a year more, so without a list peers would accept its key in
a key exchange until it expires: whoever finds the old key on an old disk is that node. Each
renewal stores one `retired-certs` object (fingerprint → node, grace end, expiry); the desired
state lists the fingerprints from the end of the grace period until the certificate expires
(after that the CA validity refuses it anyway).
"""

from __future__ import annotations

import json

from controller_api.store import RETIRED_CERTS, ObjectWrite, Store

CACHE_SECONDS = 60.0  # other replicas' renewals are seen within this (grace periods are longer)


class RetiredCertificates:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._cached: tuple[float, list[str]] | None = None  # (valid until, fingerprints)
        self._next: float | None = None  # the next time the list changes, as last read

    def retire(self, node_name: str, fingerprint: str, refuse_from: float, until: float) -> None:
        """`fingerprint` is refused by every peer from `refuse_from` until `until`."""
        doc = {"node": node_name, "refuse_from": refuse_from, "until": until}
        self.store.commit_objects([ObjectWrite(RETIRED_CERTS, fingerprint, json.dumps(doc))])
        self._cached = None

    def forget(self) -> None:
        """Read the records again on the next use (the change feed saw one change)."""
        self._cached = None

    def refused(self, now: float) -> list[str]:
        """The fingerprints every xTR refuses at `now`, sorted (cached: the desired state of
        every node lists them, and a fan-out must not read them once per node)."""
        if self._cached is not None and now < self._cached[0]:
            return self._cached[1]
        refused: list[str] = []
        boundaries: list[float] = []
        for record in self.store.list_objects(RETIRED_CERTS):
            doc = json.loads(record.value)
            start, end = float(doc["refuse_from"]), float(doc["until"])
            if start <= now < end:
                refused.append(record.key)
            boundaries += [t for t in (start, end) if t > now]
        self._next = min(boundaries, default=None)
        valid_until = min(now + CACHE_SECONDS, self._next or now + CACHE_SECONDS)
        self._cached = (valid_until, sorted(refused))
        return self._cached[1]

    def next_change(self, now: float) -> float | None:
        """When the list changes next (None: never, as far as is known), so that streams fed
        only by store changes still wake when a grace period ends."""
        self.refused(now)
        return self._next
