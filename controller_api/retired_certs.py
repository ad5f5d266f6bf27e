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

from controller_api.store import RETIRED_CERTS, Conflict, Fence, ObjectWrite, Store

CACHE_SECONDS = 60.0  # other replicas' renewals are seen within this (grace periods are longer)


class RetiredCertificates:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._cached: tuple[float, list[str]] | None = None  # (valid until, fingerprints)
        self._next: float | None = None  # the next time the list changes, as last read

    def retire(
        self, node_name: str, fingerprint: str, refuse_from: float, until: float, now: float
    ) -> None:
        """`fingerprint` is refused by every peer from `refuse_from` until `until` (its
        certificate's expiry). Records only come with renewals, so each renewal also drops
        the records whose certificate expired by `now`, in the same transaction: the table
        holds only certificates still valid, on SQLite (no leader chores) as on etcd."""
        doc = {"node": node_name, "refuse_from": refuse_from, "until": until}
        writes = [ObjectWrite(RETIRED_CERTS, fingerprint, json.dumps(doc))]
        writes += [d for d in self._expired(now) if d.key != fingerprint]
        try:
            self.store.commit_objects(writes)
        except Conflict:  # another replica collected (or renewed) meanwhile: just record it
            self.store.commit_objects(writes[:1])
        self._cached = None

    def _expired(self, now: float) -> list[ObjectWrite]:
        """Deletions of the records whose certificate expired by `now`, each compared with the
        revision read, so two replicas collecting at once never delete a fresh record."""
        return [
            ObjectWrite(RETIRED_CERTS, record.key, None, record.revision)
            for record in self.store.list_objects(RETIRED_CERTS)
            if float(json.loads(record.value)["until"]) <= now
        ]

    def collect(self, now: float, fence: Fence | None = None) -> int:
        """Drop the records whose certificate expired by `now` (the leader's chore, fenced);
        how many."""
        expired = self._expired(now)
        if expired:
            self.store.commit_objects(expired, fence)
            self._cached = None
        return len(expired)

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
