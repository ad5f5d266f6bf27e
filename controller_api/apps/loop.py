"""The controller's app loop: the sans-IO reconciler (placement/reconciler.py) fed from the Store
and what nodes report, its plans committed, run on the leader only.

One round (blocking: the Store; run in a thread):
1. what nodes report: a replica the node runs at its allocation's version is marked running
   (a rolling update goes on); one the node FAILED (admission refused it, or it broke for good)
   is taken off that node and placed elsewhere after a backoff, the node scored down;
2. apps removed: their replicas are stopped, then their EIDs go back to the pool;
3. every app's EIDs are claimed (stable for its life), and the reconciler's plans committed with
   compare-and-set (a Conflict is retried next round on fresh state), fenced by the leader's term.
The nodes whose placements changed are returned, to be told now (their Watch streams wake).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.errors import LispmeshError
from controller_api.apps.eids import AppPool, claim_eids, release_eids
from controller_api.apps.registry import Deployed, list_apps
from controller_api.apps.spec import Resources
from controller_api.apps.workloads import workload_name
from controller_api.placement.commit import commit_plan, mark_running, read_allocations
from controller_api.placement.model import Allocation, Node, Plan, Stop
from controller_api.placement.reconciler import NodeInfo, Reconciler
from controller_api.store import Conflict, Fence, NodeRow, Store, StoreError

log = logging.getLogger("lispmesh.controller.apps")

HEARTBEAT = 45.0  # a node reports metrics every 30 s: unseen for longer is disconnected
EVENTS_KEPT = 30


def node_labels(tags: tuple[str, ...]) -> dict[str, str]:
    """A node's labels are its tags: `site=factory` is label site with value factory; a bare
    tag `edge` is label edge with value "true"."""
    out = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        out[key] = value if sep else "true"
    return out


def placement_node(row: NodeRow) -> Node:
    """What the scheduler knows of an enrolled node: its reported workload capacity (a node that
    reports none, e.g. one run without --workloads-dir, has no runtime and takes nothing)."""
    cap: dict[str, Any] = row.status.get("workload_capacity") or {}
    return Node(
        row.name,
        Resources(
            int(cap.get("memory_bytes", 0)),
            int(cap.get("millicpu", 0)),
            int(cap.get("disk_bytes", 0)),
        ),
        node_labels(row.tags),
        frozenset(cap.get("kinds", ())),
        frozenset(cap.get("hypervisors", ())),
    )


def reported(row: NodeRow) -> dict[str, dict[str, Any]]:
    """The node's managed workloads as it last reported them, by workload name."""
    return {w.get("name", ""): w for w in row.status.get("workloads", []) if w.get("app")}


@dataclass
class Round:
    notify: set[str] = field(default_factory=set)  # node ids whose desired state changed
    plans: dict[str, Plan] = field(default_factory=dict)


class AppLoop:
    def __init__(
        self,
        store: Store,
        pool: AppPool,
        clock: Callable[[], float] = time.time,
        seen_now: Callable[[], set[str]] = set,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self.store = store
        self.pool = pool
        self.clock = clock
        self.seen_now = seen_now  # node ids with an open Watch stream on this replica
        self.reconciler = Reconciler(heartbeat_timeout=heartbeat)
        self.events: dict[str, deque[str]] = {}

    def event(self, app: str, line: str) -> None:
        self.events.setdefault(app, deque(maxlen=EVENTS_KEPT)).append(line)

    def round(self, fence: Fence | None = None) -> Round:
        out = Round()
        now = self.clock()
        apps = {d.spec.name: d for d in list_apps(self.store)}
        rows = [r for r in self.store.list_nodes(include_revoked=False)]
        by_name = {r.name: r for r in rows}
        live = self.seen_now()
        allocations = read_allocations(self.store)
        self._reports(apps, by_name, allocations, now, fence, out)
        self._removed(apps, by_name, read_allocations(self.store), now, fence, out)
        for deployed in apps.values():
            claim_eids(self.store, self.pool, deployed.spec, fence)
        infos = [
            NodeInfo(placement_node(r), now if r.node_id in live else r.last_seen) for r in rows
        ]
        step = self.reconciler.step(
            now, infos, read_allocations(self.store), [d.spec for d in apps.values()]
        )
        for line in step.events:
            app = line.split(":", 1)[0]
            if app in apps:
                self.event(app, line.split(": ", 1)[-1])
        nodes = {i.node.name: i.node for i in infos}
        for plan in step.plans:
            out.plans[plan.app] = plan
            if not (plan.placements or plan.stops):
                continue
            try:
                commit_plan(self.store, plan, nodes, now, fence)
            except (Conflict, LispmeshError) as exc:
                self.event(plan.app, f"plan not committed, planning again: {exc}")
                continue
            log.info("app %s: %s", plan.app, plan.summary())
            for name in {p.node for p in plan.placements} | {s.node for s in plan.stops}:
                if name in by_name:
                    out.notify.add(by_name[name].node_id)
        return out

    def _reports(
        self,
        apps: dict[str, Deployed],
        rows: dict[str, NodeRow],
        allocations: tuple[Allocation, ...],
        now: float,
        fence: Fence | None,
        out: Round,
    ) -> None:
        for a in allocations:
            row = rows.get(a.node)
            if row is None or a.app not in apps:
                continue
            seen = reported(row).get(workload_name(a.app, a.replica))
            if seen is None:
                continue
            state = seen.get("state", "")
            if state == "RUNNING" and not a.running and seen.get("version", "") == a.version:
                try:
                    mark_running(self.store, a.node, a.app, a.replica, fence)
                except Conflict:
                    continue
                self.reconciler.running(a.app, a.replica)
                self.event(a.app, f"replica {a.replica} runs on {a.node}")
            elif state == "FAILED" and seen.get("version", "") == a.version:
                why = seen.get("last_error", "") or "failed"
                plan = Plan(a.app, stops=(Stop(a.replica, a.node, f"failed there: {why}"),))
                try:
                    commit_plan(self.store, plan, {}, now, fence)
                except (Conflict, LispmeshError):
                    continue
                self.reconciler.refused(apps[a.app].spec, a.replica, a.node, now)
                self.event(a.app, f"replica {a.replica} failed on {a.node}: {why}")
                out.notify.add(row.node_id)

    def _removed(
        self,
        apps: dict[str, Deployed],
        rows: dict[str, NodeRow],
        allocations: tuple[Allocation, ...],
        now: float,
        fence: Fence | None,
        out: Round,
    ) -> None:
        gone: dict[str, list[Allocation]] = {}
        for a in allocations:
            if a.app not in apps:
                gone.setdefault(a.app, []).append(a)
        for app, allocs in gone.items():
            plan = Plan(app, stops=tuple(Stop(a.replica, a.node, "app removed") for a in allocs))
            try:
                commit_plan(self.store, plan, {}, now, fence)
            except (Conflict, LispmeshError):
                continue
            out.notify.update(rows[a.node].node_id for a in allocs if a.node in rows)
            self.event(app, f"removed: {len(allocs)} replica(s) stopped")
        held = {a.app for a in allocations} - set(gone)
        try:
            for app in _pool_apps(self.store, self.pool) - set(apps) - held:
                release_eids(self.store, self.pool, app, fence)
        except (Conflict, StoreError):
            pass  # next round


def _pool_apps(store: Store, pool: AppPool) -> set[str]:
    from controller_api.apps.eids import eids_by_replica

    return {app for app, _ in eids_by_replica(store, pool)}
