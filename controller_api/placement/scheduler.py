"""The scheduler: a pure function from a cluster snapshot and an app spec to a plan, the same plan
for the same seed.

Like Nomad's: feasibility (feasibility.py) → ranking → the best of a bounded set of candidates.

1. Existing replicas: a copy on an online or disconnected node stays (a disconnected node's
   workloads are assumed to keep running); one on a lost or vanished node is replaced; one on a
   draining node is replaced and stopped once the replacement runs; two live copies of a replica
   (a lost node came back) are settled by the app's reconcile policy; replicas past the count stop.
2. The statically feasible nodes are shuffled with the seed and visited round-robin, each replica
   continuing where the previous one stopped (Nomad's StaticIterator), until `limit` nodes with
   room have been scored; nodes that cannot fit the app any more are dropped for the rest of the
   plan. So a replica costs O(limit), not O(nodes), and the plan still finds room wherever
   there is any: every replica of an app asks the same, so greedy placement is never blocked.
3. Score (each part in -1..1, averaged over the parts that apply, as Nomad normalizes): binpack
   (Nomad's 20 - (10^free_cpu + 10^free_mem), scaled) or its inverse for spread; anti-affinity
   with the app's own replicas on the node; the app's node affinities; spread over a label; a
   penalty of -1 where the node refused or failed the app before.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable

from controller_api.apps.spec import AppSpec, Resources
from controller_api.placement.feasibility import charge, static_reason
from controller_api.placement.model import (
    Allocation,
    ClusterState,
    Failure,
    Filtered,
    Node,
    Placement,
    Plan,
    Score,
    Stop,
)

SCORE_ALL_UP_TO = 16  # small clusters: compare every feasible node
DISTINCT = "already run a replica (distinct_hosts)"


def candidate_limit(app: AppSpec, feasible: int) -> int:
    """How many nodes with room to score per replica (Kubernetes' percentageOfNodesToScore and
    Nomad's limit do the same): all in a small cluster, about log2(n) for a plain app (Nomad's
    power of two choices, a little wider), 5% when affinities or spread make the choice matter."""
    if feasible <= SCORE_ALL_UP_TO:
        return max(feasible, 1)
    if app.affinities or app.spread:
        return max(SCORE_ALL_UP_TO, feasible // 20)
    return max(2, feasible.bit_length())


def schedule(state: ClusterState, app: AppSpec, seed: int = 0, limit: int | None = None) -> Plan:
    """The plan that brings `app` to its spec on `state`. `limit` bounds the nodes scored per
    replica (default `candidate_limit`; `len(state.nodes)` scores all, the naive scan)."""
    return _Planner(state, app, seed, limit).plan()


class _Slot:
    """One node while planning: its capacity and what is used of it, as plain ints (the hot
    loop reads these thousands of times)."""

    __slots__ = ("cc", "cd", "cm", "mine", "name", "node", "refused", "uc", "ud", "um")

    def __init__(self, node: Node, refused: bool) -> None:
        self.node, self.name, self.refused = node, node.name, refused
        self.cm, self.cc, self.cd = node.capacity.memory, node.capacity.millicpu, node.capacity.disk
        self.um = self.uc = self.ud = 0
        self.mine = 0  # this app's live copies here

    def add(self, r: Resources, sign: int = 1) -> None:
        self.um += sign * r.memory
        self.uc += sign * r.millicpu
        self.ud += sign * r.disk


class _Planner:
    def __init__(self, state: ClusterState, app: AppSpec, seed: int, limit: int | None) -> None:
        self.state, self.app = state, app
        self.need = charge(app)
        self.nodes = {n.name: n for n in state.nodes}
        refusals = state.refusals
        self.slots = {n.name: _Slot(n, bool(refusals.get((app.name, n.name)))) for n in state.nodes}
        for a in state.allocations:
            if a.node in self.slots:
                self.slots[a.node].add(a.resources)
        self.static: Counter[str] = Counter()
        self.dynamic: Counter[str] = Counter()
        pool = []
        for node in sorted(state.nodes, key=lambda n: n.name):
            reason = static_reason(node, app)
            if reason is None:
                pool.append(self.slots[node.name])
            else:
                self.static[reason] += 1
        random.Random(f"{seed}/{app.name}").shuffle(pool)
        self.pool = pool
        self.feasible = len(pool)
        self.limit = limit if limit is not None else candidate_limit(app, len(pool))
        self.cursor = 0
        self.spread_values = {
            s.key: {n.node.labels[s.key] for n in pool if s.key in n.node.labels}
            for s in app.spread
        }
        self.spread_counts: dict[str, Counter[str]] = {s.key: Counter() for s in app.spread}
        self.affinity_total = sum(abs(a.weight) for a in app.affinities)
        # Only the plain binpack/spread part applies: the hot loop skips the others.
        self.plain = not (
            app.affinities or app.spread or app.replicas > 1 or any(slot.refused for slot in pool)
        )

    # ------------------------------------------------------------------ existing replicas

    def plan(self) -> Plan:
        app = self.app
        live: dict[int, list[Allocation]] = defaultdict(list)
        draining: dict[int, Allocation] = {}
        gone: dict[int, tuple[Allocation, str]] = {}
        stops: list[Stop] = []
        for a in sorted(self._my_allocations(), key=lambda a: (a.replica, a.created, a.node)):
            node = self.nodes.get(a.node)
            if a.replica >= app.replicas:
                stops.append(Stop(a.replica, a.node, f"scaled down to {app.replicas} replicas"))
            elif node is None:
                gone.setdefault(a.replica, (a, f"node {a.node} is gone"))
            elif node.health == "lost":
                gone.setdefault(a.replica, (a, f"node {a.node} is lost"))
            elif node.draining:
                draining.setdefault(a.replica, a)
            else:
                live[a.replica].append(a)
        kept: dict[int, Allocation] = {}
        for replica, copies in live.items():
            keep = copies[0] if app.disconnect.reconcile == "keep-original" else copies[-1]
            why = f"two copies after a reconnect: {app.disconnect.reconcile}"
            stops += [Stop(replica, c.node, why) for c in copies if c is not keep]
            kept[replica] = keep
        updating = self._rolling(kept, draining, stops)
        for replica, keep in kept.items():
            if replica not in updating:
                self._count(keep)
        # What this plan stops at once no longer takes room (the node stops before it starts,
        # as Nomad's plan applier counts it); a drained copy does until its replacement runs.
        stopping = {(s.replica, s.node) for s in stops}
        for a in self._my_allocations():
            if (a.replica, a.node) in stopping and a.node in self.slots:
                self.slots[a.node].add(a.resources, -1)
        placements: list[Placement] = []
        failures: list[Failure] = []
        for replica in range(app.replicas):
            old = draining.get(replica)
            if replica in live and replica not in updating:
                if old is not None and any(c.running for c in live[replica]):
                    # Make-before-break: the drained copy stops once its replacement runs
                    # (until then it serves, and keeps the EID: apps/workloads.allowances).
                    stops.append(Stop(replica, old.node, f"node {old.node} is draining", True))
                continue
            if replica in updating:
                reason, moved_from = "rolling update", None
            elif old is not None:
                reason, moved_from = f"node {old.node} is draining", old.node
            elif replica in gone:
                lost, reason = gone[replica]
                moved_from = lost.node
            else:
                reason, moved_from = "new", None
            placed = self._place(replica, reason, moved_from)
            if isinstance(placed, Failure):
                failures.append(placed)
                continue
            placements.append(placed)
        return Plan(
            app.name,
            tuple(placements),
            tuple(stops),
            tuple(failures),
            kept=len(live) - len(updating),
            filtered=Filtered.of(len(self.nodes), self.static),
            version=app.version,
        )

    def _rolling(
        self, kept: dict[int, Allocation], draining: dict[int, Allocation], stops: list[Stop]
    ) -> set[int]:
        """The replicas this plan updates to the spec's version: outdated, running on an online
        node, not moving; at most max_unavailable minus the replicas not running yet (an update
        in flight, or a placement the node has not started), lowest first. Each is stopped and
        placed again (anywhere: its old room counts as free), as Nomad's destructive updates."""
        version = self.app.version
        down = sum(1 for a in kept.values() if not a.running)
        budget = self.app.update.max_unavailable - down
        updating: set[int] = set()
        for replica in sorted(kept):
            if len(updating) >= budget:
                break
            a = kept[replica]
            if (
                a.version
                and a.version != version
                and a.running
                and replica not in draining
                and self.nodes[a.node].health == "online"
            ):
                stops.append(Stop(replica, a.node, f"rolling update to version {version}"))
                updating.add(replica)
        return updating

    def _my_allocations(self) -> Iterable[Allocation]:
        return (a for a in self.state.allocations if a.app == self.app.name)

    def _count(self, a: Allocation) -> None:
        self._count_on(self.slots[a.node])

    def _count_on(self, slot: _Slot) -> None:
        slot.mine += 1
        labels = slot.node.labels
        for key, counts in self.spread_counts.items():
            if key in labels:
                counts[labels[key]] += 1

    # ------------------------------------------------------------------ one replica

    def _place(self, replica: int, reason: str, moved_from: str | None) -> Placement | Failure:
        pool, need, limit = self.pool, self.need, self.limit
        nm, nc, nd = need.memory, need.millicpu, need.disk
        distinct = self.app.constraints.distinct_hosts
        binpack = self.app.scoring == "binpack"
        best: _Slot | None = None
        best_total = 0.0
        scored = 0
        i = self.cursor
        while pool and scored < limit and scored < len(pool):
            i %= len(pool)
            slot = pool[i]
            if slot.um + nm > slot.cm:
                why: str | None = "exhausted memory"
            elif slot.uc + nc > slot.cc:
                why = "exhausted cpu"
            elif slot.ud + nd > slot.cd:
                why = "exhausted disk"
            else:
                why = DISTINCT if distinct and slot.mine else None
            if why is not None:
                self.dynamic[why] += 1
                del pool[i]  # never fits this app again within this plan
                continue
            # Nomad's bin-pack fit: 1 when the node is full after placing, 0 when empty.
            fit = (20.0 - (10.0 ** ((slot.cc - slot.uc - nc) / slot.cc)
                           + 10.0 ** ((slot.cm - slot.um - nm) / slot.cm))) / 18.0  # fmt: skip
            first = fit if binpack else 1.0 - fit
            if not self.plain:
                total = self._total(slot, first)
            elif slot.mine and self.app.replicas > 1:  # anti-affinity, averaged in
                total = (first - min(1.0, (slot.mine + 1) / self.app.replicas)) / 2
            else:
                total = first
            if best is None or total > best_total:
                best, best_total = slot, total
            scored += 1
            i += 1
        self.cursor = i
        if best is None:
            counts = self.static + self.dynamic
            return Failure(replica, Filtered.of(len(self.nodes), counts), reason)
        score = Score(round(best_total, 4), self._parts(best), scored, self.feasible)
        best.add(need)
        self._count_on(best)
        return Placement(replica, best.name, need, score, reason, moved_from)

    def _total(self, slot: _Slot, first: float) -> float:
        parts = self._parts(slot, first)
        return sum(v for _, v in parts) / len(parts)

    def _parts(self, slot: _Slot, first: float | None = None) -> tuple[tuple[str, float], ...]:
        """The score's parts for `slot`, before the replica is added to it."""
        app, need = self.app, self.need
        if first is None:
            free_mem = (slot.cm - slot.um - need.memory) / slot.cm
            free_cpu = (slot.cc - slot.uc - need.millicpu) / slot.cc
            fit = (20.0 - (10.0**free_cpu + 10.0**free_mem)) / 18.0
            first = fit if app.scoring == "binpack" else 1.0 - fit
        parts = [(app.scoring, first)]
        if slot.mine and app.replicas > 1:
            parts.append(("anti-affinity", -min(1.0, (slot.mine + 1) / app.replicas)))
        if self.affinity_total:
            labels = slot.node.labels
            got = sum(a.weight for a in app.affinities if labels.get(a.key) == a.value)
            parts.append(("affinity", got / self.affinity_total))
        if app.spread:
            parts.append(("spread-by-label", self._spread(slot.node)))
        if slot.refused:
            parts.append(("refused before", -1.0))
        return tuple(parts)

    def _spread(self, node: Node) -> float:
        """Weighted over the spread labels: 0 for a value with the fewest replicas, down to -1
        for the most (and for a node without the label)."""
        total = weights = 0.0
        for spread in self.app.spread:
            weights += spread.weight
            value = node.labels.get(spread.key)
            if value is None:
                total -= spread.weight
                continue
            counts = self.spread_counts[spread.key]
            values = self.spread_values[spread.key]
            low = min(counts[v] for v in values)
            high = max(counts[v] for v in values)
            if high > low:
                total += spread.weight * (low - counts[value]) / (high - low)
        return total / weights


def feasible_nodes(state: ClusterState, app: AppSpec) -> list[Node]:
    """The nodes that pass the static filters (for brute-force oracles and explanations)."""
    return [n for n in state.nodes if static_reason(n, app) is None]
