"""Edge failure semantics, sans-IO: the controller's loop that turns what nodes report (when each
was last seen, refusals, drains) into plans, with the time passed in.

- A node unseen for `heartbeat_timeout` is `disconnected`: its workloads are assumed to keep
  running (at the edge they do), nothing new is sent to it, nothing is replaced.
- Only once it has been disconnected for an app's `disconnect.lost_after` is it `lost` for that
  app, and that app's replicas there are replaced elsewhere (the view is per app: each app says
  how long it can wait).
- When it comes back, both copies are live and the scheduler stops one by the app's reconcile
  policy (keep-original by default, as KubeEdge users ask).
- A replica whose placement was refused by the node's admission control, or that failed there,
  is placed again elsewhere (the node is scored down) after an exponential backoff
  (`reschedule.delay` doubling up to `max_delay`, Nomad's service defaults), reset once it runs.
- Draining is the node's flag in the input; the scheduler moves replicas away gracefully.

`step(now, ...)` returns the plans to commit, the events worth showing and when to call again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from controller_api.apps.spec import AppSpec
from controller_api.placement.model import Allocation, ClusterState, Node, Plan
from controller_api.placement.scheduler import schedule

HEARTBEAT_TIMEOUT = 30.0


@dataclass(frozen=True)
class NodeInfo:
    """A node as the store knows it: what it offers, and when it last reported (None: never)."""

    node: Node  # its health field is ignored: the reconciler derives it from last_seen
    last_seen: float | None


@dataclass
class _Backoff:
    attempts: int = 0
    not_before: float = 0.0


@dataclass(frozen=True)
class Step:
    plans: tuple[Plan, ...]
    events: tuple[str, ...]
    wake_at: float | None  # call step again by then (a node may turn lost, a backoff ends)


@dataclass
class Reconciler:
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT
    seed: int = 0
    refusals: dict[tuple[str, str], int] = field(default_factory=dict)
    _backoff: dict[tuple[str, int], _Backoff] = field(default_factory=dict)
    _health: dict[str, str] = field(default_factory=dict)  # last seen health, for events

    # ------------------------------------------------------------------ what nodes report

    def refused(self, app: AppSpec, replica: int, node: str, now: float) -> None:
        """The node refused the placement (admission control) or the replica failed there; the
        caller removes that allocation. The next try waits and scores this node down."""
        self.refusals[(app.name, node)] = self.refusals.get((app.name, node), 0) + 1
        b = self._backoff.setdefault((app.name, replica), _Backoff())
        delay = min(app.reschedule.delay * 2**b.attempts, app.reschedule.max_delay)
        b.attempts += 1
        b.not_before = now + delay

    def running(self, app: str, replica: int) -> None:
        """The replica runs: its backoff starts again from the first delay."""
        self._backoff.pop((app, replica), None)

    # ------------------------------------------------------------------ the loop

    def step(
        self,
        now: float,
        nodes: Sequence[NodeInfo],
        allocations: Iterable[Allocation],
        apps: Sequence[AppSpec],
    ) -> Step:
        events: list[str] = []
        wake: list[float] = []
        since: dict[str, float] = {}  # node -> disconnected since
        for info in nodes:
            name, seen = info.node.name, info.last_seen
            if seen is not None and now - seen < self.heartbeat_timeout:
                health = "online"
                wake.append(seen + self.heartbeat_timeout)
            else:
                health = "disconnected"
                since[name] = float("-inf") if seen is None else seen + self.heartbeat_timeout
            if self._health.get(name, "online" if seen is not None else health) != health:
                events.append(f"node {name} is {health}")
            self._health[name] = health
        current = tuple(allocations)
        plans: list[Plan] = []
        for app in sorted(apps, key=lambda a: a.name):
            view = ClusterState(
                tuple(self._view(info, since, app, now, wake) for info in nodes),
                current,
                self.refusals,
            )
            plan = self._hold_back(schedule(view, app, self.seed), app, now, wake, events)
            plans.append(plan)
            events += [f"{app.name}: {line}" for line in plan.lines()[1:]]
            current = view.with_plan(plan, now).allocations  # the next app sees this one's room
        return Step(tuple(plans), tuple(events), min(wake) if wake else None)

    def _view(
        self, info: NodeInfo, since: dict[str, float], app: AppSpec, now: float, wake: list[float]
    ) -> Node:
        if info.node.name not in since:
            return replace(info.node, health="online")
        lost_at = since[info.node.name] + app.disconnect.lost_after
        if now >= lost_at:
            return replace(info.node, health="lost")
        wake.append(lost_at)
        return replace(info.node, health="disconnected")

    def _hold_back(
        self, plan: Plan, app: AppSpec, now: float, wake: list[float], events: list[str]
    ) -> Plan:
        """Drop placements (and their graceful stops) and failures of replicas still backing
        off; a failure to place starts a backoff like a refusal."""
        waiting = set()
        for replica in {p.replica for p in plan.placements} | {f.replica for f in plan.failures}:
            b = self._backoff.get((app.name, replica))
            if b is not None and now < b.not_before:
                waiting.add(replica)
                wake.append(b.not_before)
        for f in plan.failures:
            if f.replica not in waiting:
                b = self._backoff.setdefault((app.name, f.replica), _Backoff())
                delay = min(app.reschedule.delay * 2**b.attempts, app.reschedule.max_delay)
                b.attempts += 1
                b.not_before = now + delay
                wake.append(b.not_before)
        if waiting:
            events.append(f"{app.name}: replicas {', '.join(map(str, sorted(waiting)))} back off")
        return replace(
            plan,
            placements=tuple(p for p in plan.placements if p.replica not in waiting),
            stops=tuple(
                s for s in plan.stops if not (s.after_replacement and s.replica in waiting)
            ),
            failures=tuple(f for f in plan.failures if f.replica not in waiting),
        )
