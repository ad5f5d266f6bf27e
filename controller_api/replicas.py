"""The leader loop of a controller replica on etcd: elect, then do the singleton chores, fenced.

Every replica serves joins, config streams, status and admin reads; only the leader does the
chores that must happen once (now: forgetting retired certificates past their grace period and
the records of those expired since, and a record of its round, `controller/leader`, that
`controller status` reads). Each chore is a
fenced write: a leader paused past its lease and replaced is refused by etcd, logs it once and
campaigns again as a follower.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

from controller_api.gen.lispmesh.v1 import admin_pb2
from controller_api.leader import Election
from controller_api.retired_certs import RetiredCertificates
from controller_api.settings import rfc3339
from controller_api.store import CONTROLLER, Fenced, ObjectWrite, Store, StoreError

log = logging.getLogger("lispmesh.controller.leader")


class LeaderLoop:
    def __init__(
        self, store: Store, election: Election, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.election = election
        self.clock = clock
        self.leading = False
        self.rounds = 0
        self.retired = RetiredCertificates(store)
        self._task: asyncio.Task[None] | None = None
        # Told why this replica cannot reach etcd for a lease TTL (None: it can again).
        self.on_health: Callable[[str | None], None] | None = None
        self._last_ok = time.monotonic()

    def round(self) -> bool:
        """One round (blocking: etcd). Whether this replica leads after it."""
        leading = self.election.step()
        if leading != self.leading:
            log.info("this replica %s", "leads" if leading else "follows")
        self.leading = leading
        fence = self.election.fence
        if fence is None:
            return False
        try:
            self.store.expire_retired_certs(self.clock(), fence)
            self.retired.collect(self.clock(), fence)  # certificates expired since renewed
            record = {"replica": self.election.me.replica, "term": fence.revision,
                      "at": self.clock()}  # fmt: skip
            self.store.commit_objects(
                [ObjectWrite(CONTROLLER, "leader", json.dumps(record, sort_keys=True))], fence
            )
        except Fenced as exc:
            log.warning("fenced write refused: %s", exc)
            self.election.lost(str(exc))
            self.leading = False
        self.rounds += 1
        return self.leading

    async def run(self) -> None:
        interval = max(self.election.ttl / 3.0, 0.2)
        while True:
            try:
                await asyncio.to_thread(self.round)
            except StoreError as exc:
                log.warning("leader election: %s", exc)
                if time.monotonic() - self._last_ok >= self.election.ttl and self.on_health:
                    self.on_health(f"controller replica {self.election.me.replica} cannot"
                                   f" reach etcd: {exc}")  # fmt: skip
            else:
                self._last_ok = time.monotonic()
                if self.on_health is not None:
                    self.on_health(None)
            await asyncio.sleep(interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self.election.resign)


def controller_status(
    store: Store, where: str, me: str, election: Election | None
) -> admin_pb2.ControllerStatusInfo:
    """What `lispmesh controller status` shows (blocking: etcd). A store that does not answer
    is reported in `store_health`, never raised: the operator asks exactly when it fails."""
    info = admin_pb2.ControllerStatusInfo(store=where, replica=me)
    if election is None:  # SQLite: one controller, which leads
        info.store_health = "ok (SQLite)"
        info.store_revision = store.revision()
        info.leader = me
        info.replicas.add(name=me, api_address=me, leader=True)
        return info
    try:
        member = election.etcd.status()
        info.store_health = (
            f"ok (etcd {member.version}, raft term {member.raftTerm},"
            f" db {member.dbSize / 1e6:.1f} MB)"
        )
        info.store_revision = int(member.header.revision)
        leading = election.leader()
        if leading is not None:
            info.leader, info.leader_term = str(leading[0].get("replica", "")), leading[1]
        for r in sorted(election.replicas(), key=lambda r: str(r.get("replica"))):
            name = str(r.get("replica", ""))
            info.replicas.add(name=name, api_address=str(r.get("api_address", "")),
                              leader=name == info.leader)  # fmt: skip
        record = store.get_object(CONTROLLER, "leader")
        if record is not None:
            info.leader_last_round = rfc3339(float(json.loads(record.value).get("at", 0)))
    except (StoreError, ValueError) as exc:
        info.store_health = str(exc)
    return info
