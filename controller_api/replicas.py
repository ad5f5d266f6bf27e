"""The leader loop of a controller replica on etcd: elect, then do the singleton chores, fenced.

Every replica serves joins, config streams, status and admin reads; only the leader does the
chores that must happen once (now: forgetting retired certificates past their grace period, and
a record of its round, `controller/leader`, that `controller status` reads). Each chore is a
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

from controller_api.leader import Election
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
        self._task: asyncio.Task[None] | None = None

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
