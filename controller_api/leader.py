"""Leader election among controller replicas sharing one etcd, with fenced terms.

Each replica holds one lease (its session): it registers itself under `internal/replicas/<id>`
with it, and campaigns by creating `internal/leader` with it, if absent, in one transaction. The
winner's term is the revision that created the key. The lease is kept alive every `ttl / 3`
seconds; if the replica stalls (paused, cut off) the lease expires, etcd deletes both keys, and
another replica's next campaign wins a new term.

A replica's belief that it leads can be stale (it was paused and has not noticed): that is why
every leader write carries the term as a `Fence` and commits only while the leader key is still
that incarnation (store/etcd.py). Locally, the belief also ends when the last answered
keepalive is a TTL old, so a cut-off leader stops acting on its own.

`step()` does one round and is called from the controller's leader loop (controller_api/
replicas.py); it blocks on etcd, so the loop runs it in a thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller_api.store import Fence, StoreError
from controller_api.store.etcd_client import EtcdClient, compare_create, get, put

log = logging.getLogger("lispmesh.controller.leader")


@dataclass(frozen=True)
class ReplicaInfo:
    replica: str  # a stable name for this replica (its API address unless told)
    api_address: str
    map_server: str = ""  # its embedded map-server, "address:port": every node registers there

    def doc(self) -> bytes:
        return json.dumps({"replica": self.replica, "api_address": self.api_address,
                           "map_server": self.map_server}).encode()  # fmt: skip


class Election:
    def __init__(
        self,
        etcd: EtcdClient,
        prefix: str,
        me: ReplicaInfo,
        ttl: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.etcd = etcd
        self.me = me
        self.ttl = ttl
        self.clock = clock
        self.leader_key = (prefix + "internal/leader").encode()
        self.replica_key = (prefix + f"internal/replicas/{me.replica}").encode()
        self.lease = 0
        self.term = 0  # the revision that created the leader key while this replica holds it
        self._valid_until = 0.0

    @property
    def fence(self) -> Fence | None:
        """This replica's term as a fence, while it believes it leads."""
        if not self.term or self.clock() >= self._valid_until:
            return None
        return Fence(self.leader_key.decode(), self.term)

    def step(self) -> bool:
        """One round: keep the lease alive (or get a new one), then campaign if no one leads.
        Whether this replica leads now. Raises `StoreError` if etcd does not answer."""
        sent = self.clock()
        if self.lease and self.etcd.lease_keepalive(self.lease) <= 0:
            if self.term:
                log.warning("lease expired: term %d is over", self.term)
            self.lease, self.term = 0, 0
        if not self.lease:
            self.lease = self.etcd.lease_grant(self.ttl)
            self.etcd.txn([], [put(self.replica_key, self.me.doc(), self.lease)])
        self._valid_until = sent + self.ttl
        if not self.term:
            self._campaign()
        return self.fence is not None

    def _campaign(self) -> None:
        answer = self.etcd.txn(
            [compare_create(self.leader_key, 0)],
            [put(self.leader_key, self.me.doc(), self.lease)],
            [get(self.leader_key)],
        )
        if answer.succeeded:
            self.term = int(answer.header.revision)
            log.info("leader from now on (term %d)", self.term)

    def lost(self, why: str) -> None:
        """A fenced write was refused: the term is over, whatever the lease said."""
        if self.term:
            log.warning("term %d is over: %s", self.term, why)
        self.term = 0

    def resign(self) -> None:
        if self.lease:
            with contextlib.suppress(StoreError):  # unrevoked, it expires by itself
                self.etcd.lease_revoke(self.lease)
        self.lease, self.term = 0, 0

    def leader(self) -> tuple[dict[str, Any], int] | None:
        """Who leads (the leader's document) and its term, if anyone does."""
        kvs = self.etcd.range(self.leader_key).kvs
        if not kvs:
            return None
        return json.loads(kvs[0].value), int(kvs[0].create_revision)

    def replicas(self) -> list[dict[str, Any]]:
        prefix = self.replica_key[: self.replica_key.rindex(b"/") + 1]
        return [json.loads(kv.value) for kv in self.etcd.range(prefix, prefix=True).kvs]
