"""What the scheduler reads and writes, as plain frozen values: a snapshot of the cluster (nodes
with their capacity, labels and health; the allocations already made) and a plan (placements,
stops, failures) with the explanation of every decision.

Explanations are kept as counts and numbers and worded only when shown (`str()`), so that a plan
of 10,000 placements does not format 10,000 sentences nobody reads.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from controller_api.apps.spec import Resources

HEALTH = ("online", "disconnected", "lost")


@dataclass(frozen=True)
class Node:
    name: str
    capacity: Resources  # what workloads may use (the node's own reserve already taken off)
    labels: dict[str, str] = field(default_factory=dict)
    kinds: frozenset[str] = frozenset({"container"})  # runtimes: container (runc), vm (libvirt)
    hypervisors: frozenset[str] = frozenset()  # kvm, tcg
    health: str = "online"  # online | disconnected (still running, unreachable) | lost
    draining: bool = False


@dataclass(frozen=True)
class Allocation:
    """Replica `replica` of `app` on `node`, charged `resources` (VM overhead included). A
    replica may have copies on several nodes (a replacement while the original is unreachable),
    never two on one node: (app, replica, node) names an allocation."""

    app: str
    replica: int
    node: str
    resources: Resources
    created: float = 0.0  # when it was committed: "original" and "replacement" are by this
    version: str = ""  # AppSpec.version it runs ("": unknown, taken as current)
    running: bool = True  # False from commit until the node reports it running


@dataclass(frozen=True)
class ClusterState:
    nodes: tuple[Node, ...]
    allocations: tuple[Allocation, ...] = ()
    # (app, node) -> how often that node refused or failed that app: scored down, not filtered.
    refusals: dict[tuple[str, str], int] = field(default_factory=dict)

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)

    def with_plan(self, plan: Plan, now: float, running: bool = True) -> ClusterState:
        """The state once `plan` is carried out (stops done, placements made, and `running`)."""
        gone = {(s.replica, s.node) for s in plan.stops}
        kept = [
            a for a in self.allocations if not (a.app == plan.app and (a.replica, a.node) in gone)
        ]
        kept += [
            Allocation(plan.app, p.replica, p.node, p.resources, now, plan.version, running)
            for p in plan.placements
        ]
        return replace(self, allocations=tuple(kept))


@dataclass(frozen=True)
class Score:
    """Why a node won: its final score, the parts averaged into it, how many were compared."""

    total: float
    parts: tuple[tuple[str, float], ...]
    candidates: int  # nodes scored for this replica
    feasible: int  # nodes that passed the static filters

    def __str__(self) -> str:
        parts = ", ".join(f"{name} {value:.2f}" for name, value in self.parts)
        return (
            f"score {self.total:.2f} ({parts}); best of {self.candidates} scored, "
            f"{self.feasible} feasible"
        )


@dataclass(frozen=True)
class Placement:
    replica: int
    node: str
    resources: Resources
    score: Score
    reason: str = "new"  # new | replaces a copy on a lost / draining / missing node
    replaces: str | None = None  # the node the replica moves away from

    def __str__(self) -> str:
        moved = f" (moved from {self.replaces}: {self.reason})" if self.replaces else ""
        return f"replica {self.replica} -> {self.node}{moved}: {self.score}"


@dataclass(frozen=True)
class Stop:
    replica: int
    node: str
    reason: str
    after_replacement: bool = False  # graceful: stop only once the replacement runs (drain)

    def __str__(self) -> str:
        when = " once its replacement runs" if self.after_replacement else ""
        return f"stop replica {self.replica} on {self.node}{when}: {self.reason}"


@dataclass(frozen=True)
class Filtered:
    """How many nodes each filter removed (for one app, or at the moment a replica failed)."""

    total: int
    counts: tuple[tuple[str, int], ...]  # reason -> nodes, in order of first occurrence

    def __str__(self) -> str:
        if not self.counts:
            return f"all {self.total} nodes were considered"
        parts = ", ".join(f"{n} {reason}" for reason, n in self.counts)
        return f"{self.total} nodes: {parts}"

    @staticmethod
    def of(total: int, counts: Counter[str]) -> Filtered:
        return Filtered(total, tuple(counts.items()))


@dataclass(frozen=True)
class Failure:
    replica: int
    filtered: Filtered
    reason: str = "new"

    def __str__(self) -> str:
        return f"replica {self.replica} not placed: no node fits ({self.filtered})"


@dataclass(frozen=True)
class Plan:
    app: str
    placements: tuple[Placement, ...] = ()
    stops: tuple[Stop, ...] = ()
    failures: tuple[Failure, ...] = ()
    kept: int = 0  # replicas already running where they are
    version: str = ""  # the AppSpec.version the placements run
    filtered: Filtered = Filtered(0, ())  # the static filters, for the app

    @property
    def empty(self) -> bool:
        return not (self.placements or self.stops or self.failures)

    def summary(self) -> str:
        out = (
            f"{self.app}: {len(self.placements)} to place, {len(self.stops)} to stop, "
            f"{self.kept} kept, {len(self.failures)} not placed"
        )
        return f"{out}; {self.filtered}"

    def lines(self) -> list[str]:
        """The explanation, one decision a line (failures of identical cause folded)."""
        out = [self.summary()]
        out += [str(p) for p in self.placements]
        out += [str(s) for s in self.stops]
        groups: dict[Filtered, list[int]] = {}
        for failure in self.failures:
            groups.setdefault(failure.filtered, []).append(failure.replica)
        for filtered, replicas in groups.items():
            ids = ", ".join(str(r) for r in replicas[:8]) + (", ..." if len(replicas) > 8 else "")
            plural = "s" if len(replicas) > 1 else ""
            out.append(f"replica{plural} {ids} not placed: no node fits ({filtered})")
        return out
