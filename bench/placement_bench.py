"""Placement benchmark (issue 14 item 6): 10,000 replicas onto 1,000 simulated nodes, timed for
the scheduler as it runs (a bounded candidate set per replica) and, in the same run on the same
cluster, for a naive scan that scores every feasible node for every replica.

The target: the bounded scheduler plans the 10,000 replicas in under a second. Both rows also
print what the plan is worth, since a fast plan that packs badly is no win: replicas placed,
nodes used, the mean memory fill of the used nodes, and nodes scored per replica.

Two workloads, each timed both ways:
- one app of 10,000 replicas, 256Mi / 250m each, bin-packed;
- 100 apps of 100 replicas, each restricted to nodes of 3 of the 10 sites, spread by zone and
  distinct_hosts, planned one after the other on the state the previous ones left (what the
  controller does when a site comes up with a hundred apps).

The cluster: 1,000 nodes of 8, 16, 32 or 64 GiB and 8..32 CPUs, sites s0..s9 and zones z0..z3,
1% disconnected and 1% draining, seeded.

Usage (from the repository root; no root needed):
    python3 bench/placement_bench.py [--nodes 1000] [--replicas 10000] [--seed 1] [--json]
                                     [--naive-replicas N]  (fewer for the naive rows: quicker)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller_api.apps.spec import (
    AppSpec,
    Constraints,
    LabelMatch,
    Resources,
    Spread,
)
from controller_api.placement import ClusterState, Node, Plan, schedule

GI, MI = 1 << 30, 1 << 20
TARGET_SECONDS = 1.0


def cluster(count: int, seed: int) -> ClusterState:
    rng = random.Random(seed)
    nodes = []
    for i in range(count):
        roll = rng.random()
        nodes.append(
            Node(
                f"n{i:05}",
                Resources(
                    rng.choice((8, 16, 32, 64)) * GI, rng.choice((8, 16, 32)) * 1000, 2000 * GI
                ),
                {"site": f"s{i % 10}", "zone": f"z{rng.randrange(4)}"},
                health="disconnected" if roll < 0.01 else "online",
                draining=0.01 <= roll < 0.02,
            )
        )
    return ClusterState(tuple(nodes))


def app(name: str, replicas: int, **kw: object) -> AppSpec:
    fields: dict[str, object] = {
        "filename": "bench",
        "name": name,
        "labels": (),
        "image": "sha256:" + "0" * 64,
        "kind": "container",
        "replicas": replicas,
        "resources": Resources(256 * MI, 250, GI),
    }
    fields.update(kw)
    return AppSpec(**fields)  # type: ignore[arg-type]


def many_apps(count: int, replicas: int, seed: int) -> list[AppSpec]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        sites = tuple(sorted(rng.sample([f"s{k}" for k in range(10)], 3)))
        constraints = Constraints((LabelMatch("site", sites),), distinct_hosts=True)
        out.append(
            app(f"app{i:03}", replicas, constraints=constraints, spread=(Spread("zone", 50),))
        )
    return out


@dataclass
class Row:
    name: str
    seconds: float  # wall clock
    cpu_seconds: float  # this process's CPU time: steadier on a shared machine
    replicas: int
    placed: int
    failed: int
    nodes_used: int
    mean_fill: float  # memory used / capacity over the nodes used
    scored_per_replica: float

    @property
    def per_second(self) -> float:
        return self.placed / self.seconds if self.seconds else 0.0


def run(name: str, state: ClusterState, apps: list[AppSpec], seed: int, naive: bool) -> Row:
    plans: list[Plan] = []
    start, cpu = time.perf_counter(), time.process_time()
    for spec in apps:
        plan = schedule(state, spec, seed, limit=len(state.nodes) if naive else None)
        state = state.with_plan(plan, now=0.0)
        plans.append(plan)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    placements = [p for plan in plans for p in plan.placements]
    used: dict[str, int] = {}
    for a in state.allocations:
        used[a.node] = used.get(a.node, 0) + a.resources.memory
    capacity = {n.name: n.capacity.memory for n in state.nodes}
    fill = sum(used[n] / capacity[n] for n in used) / len(used) if used else 0.0
    scored = sum(p.score.candidates for p in placements) / len(placements) if placements else 0
    return Row(
        name,
        seconds,
        cpu,
        sum(a.replicas for a in apps),
        len(placements),
        sum(len(plan.failures) for plan in plans),
        len(used),
        fill,
        scored,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=10_000)
    parser.add_argument("--naive-replicas", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    naive_replicas = args.naive_replicas or args.replicas
    state = cluster(args.nodes, args.seed)
    side = max(1, int(args.replicas**0.5))
    apps_big = [app("big", args.replicas)]
    apps_naive = [app("big", naive_replicas)]
    many = many_apps(side, args.replicas // side, args.seed)
    many_naive = [replace(a, replicas=max(1, naive_replicas // side)) for a in many]
    rows = [
        run("one app, bounded", state, apps_big, args.seed, naive=False),
        run("one app, naive scan", state, apps_naive, args.seed, naive=True),
        run(f"{side} apps, bounded", state, many, args.seed, naive=False),
        run(f"{side} apps, naive scan", state, many_naive, args.seed, naive=True),
    ]
    if args.json:
        print(json.dumps([{**vars(r), "per_second": r.per_second} for r in rows], indent=2))
    else:
        print(f"{args.nodes} nodes, seed {args.seed}")
        header = ("row", "seconds", "cpu seconds", "replicas", "placed", "failed", "placed/s",
                  "nodes used", "mean fill", "scored/replica")  # fmt: skip
        print(f"{header[0]:<22}" + "".join(f"{h:>15}" for h in header[1:]))
        for r in rows:
            cells = (r.name, f"{r.seconds:.3f}", f"{r.cpu_seconds:.3f}", r.replicas, r.placed,
                     r.failed, f"{r.per_second:,.0f}", r.nodes_used, f"{r.mean_fill:.1%}",
                     f"{r.scored_per_replica:.1f}")  # fmt: skip
            print(f"{cells[0]:<22}" + "".join(f"{c:>15}" for c in cells[1:]))
        verdict = "met" if rows[0].cpu_seconds < TARGET_SECONDS else "MISSED"
        print(
            f"target: {args.replicas} replicas in under {TARGET_SECONDS:.0f} s of CPU: {verdict} "
            f"({rows[0].cpu_seconds:.3f} s; the naive scan {rows[1].cpu_seconds:.3f} s for "
            f"{rows[1].replicas})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
