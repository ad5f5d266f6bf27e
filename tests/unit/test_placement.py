"""The scheduler (issue 14 item 2): a Nomad-style table of cases on an in-memory cluster, and the
properties the issue names, checked by hypothesis against a brute-force oracle."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller_api.apps.spec import (
    Affinity,
    AppSpec,
    Constraints,
    DisconnectPolicy,
    LabelMatch,
    Resources,
    Spread,
)
from controller_api.placement import Allocation, ClusterState, Node, schedule
from controller_api.placement.feasibility import VM_OVERHEAD_MEMORY, charge, static_reason

G = GI = 1 << 30
MI = 1 << 20


def app(name: str = "web", replicas: int = 1, memory: int = 512 * MI, **kw: object) -> AppSpec:
    fields: dict[str, object] = {
        "filename": "app.yml",
        "name": name,
        "labels": (),
        "image": "sha256:" + "0" * 64,
        "kind": "container",
        "replicas": replicas,
        "resources": Resources(memory, 500, GI),
    }
    fields.update(kw)
    return AppSpec(**fields)  # type: ignore[arg-type]


def node(name: str, memory: int = 4 * GI, cpu: int = 4000, **kw: object) -> Node:
    return Node(name, Resources(memory, cpu, 100 * GI), **kw)  # type: ignore[arg-type]


def where(plan_placements: object) -> dict[int, str]:
    return {p.replica: p.node for p in plan_placements}  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------- table of cases

FACTORY = {"site": "factory"}
CASES = [
    # (id, nodes, existing allocations, app, expected replica -> node, expected explanation bits)
    (
        "binpack-picks-the-fullest",
        [node("a"), node("b", memory=1 * GI)],
        [],
        app(),
        {0: "b"},
        ["replica 0 -> b: score"],
    ),
    (
        "spread-picks-the-emptiest",
        [node("a"), node("b", memory=1 * GI)],
        [],
        app(scoring="spread"),
        {0: "a"},
        [],
    ),
    (
        "labels-filter",
        [node("a", labels=FACTORY), node("b"), node("c", labels={"site": "lab"})],
        [],
        app(replicas=1, constraints=Constraints((LabelMatch("site", ("factory",)),))),
        {0: "a"},
        ["3 nodes: 2 filtered by label site=factory"],
    ),
    (
        "distinct-hosts-fails-the-third",
        [node("a"), node("b")],
        [],
        app(replicas=3, constraints=Constraints(distinct_hosts=True)),
        {0: "a", 1: "b"},
        ["replica 2 not placed: no node fits (2 nodes: 2 already run a replica (distinct_hosts))"],
    ),
    (
        "explains-every-filter",
        [
            node("a", labels=FACTORY, memory=256 * MI),
            node("b", labels=FACTORY, draining=True),
            node("c"),
            node("d"),
            node("e", labels=FACTORY, health="disconnected"),
        ],
        [],
        app(constraints=Constraints((LabelMatch("site", ("factory",)),))),
        {},
        [
            "replica 0 not placed: no node fits (5 nodes: 1 draining, 2 filtered by label "
            "site=factory, 1 disconnected, 1 exhausted memory)"
        ],
    ),
    (
        "vm-needs-runtime-hypervisor-and-overhead",
        [
            node("a", memory=1 * GI, kinds=frozenset({"container", "vm"})),
            node(
                "b",
                memory=GI + VM_OVERHEAD_MEMORY + 64 * MI,
                kinds=frozenset({"vm"}),
                hypervisors=frozenset({"kvm"}),
            ),
            node("c", memory=8 * GI, kinds=frozenset({"vm"}), hypervisors=frozenset({"tcg"})),
            node("d", memory=8 * GI),
        ],
        [],
        app(memory=GI, kind="vm", constraints=Constraints(hypervisor="kvm")),
        {0: "b"},
        ["1 without the vm runtime", "2 without hypervisor kvm"],
    ),
    (
        "vm-overhead-exhausts-memory",
        [node("a", memory=GI, kinds=frozenset({"vm"}))],
        [],
        app(memory=GI, kind="vm"),
        {},
        ["1 exhausted memory"],
    ),
    (
        "other-apps-use-capacity",
        [node("a", memory=GI), node("b", memory=GI)],
        [Allocation("db", 0, "a", Resources(768 * MI, 100, GI))],
        app(),
        {0: "b"},
        [],
    ),
    (
        "cpu-exhausted",
        [node("a", cpu=400)],
        [],
        app(),
        {},
        ["1 exhausted cpu"],
    ),
    (
        "affinity-prefers-the-zone",
        [node("a", labels={"zone": "z1"}), node("b", labels={"zone": "z2"})],
        [],
        app(affinities=(Affinity("zone", "z2", 100),), scoring="spread"),
        {0: "b"},
        ["affinity 1.00"],
    ),
    (
        "negative-affinity-avoids",
        [node("a", labels={"zone": "z1"}, memory=GI), node("b", labels={"zone": "z2"})],
        [],
        app(affinities=(Affinity("zone", "z1", -100),)),
        {0: "b"},
        [],
    ),
    (
        "spread-by-site-evens-out",
        [
            node("a1", labels={"site": "s1"}),
            node("a2", labels={"site": "s1"}),
            node("b1", labels={"site": "s2"}),
        ],
        [Allocation("web", 0, "a1", Resources(512 * MI, 500, GI))],
        app(replicas=2, spread=(Spread("site", 100),)),
        {1: "b1"},
        [],
    ),
    (
        "refusal-penalty",
        [node("a", memory=GI), node("b")],
        [],
        app(),
        {0: "b"},  # a is fuller, but refused the app twice
        [],
    ),
    (
        "satisfied-app-is-left-alone",
        [node("a"), node("b")],
        [Allocation("web", 0, "a", Resources(512 * MI, 500, GI))],
        app(),
        {},
        ["0 to place, 0 to stop, 1 kept"],
    ),
    (
        "disconnected-node-keeps-its-replica",
        [node("a", health="disconnected"), node("b")],
        [Allocation("web", 0, "a", Resources(512 * MI, 500, GI))],
        app(),
        {},
        ["1 kept"],
    ),
    (
        "lost-node-is-replaced",
        [node("a", health="lost"), node("b")],
        [Allocation("web", 0, "a", Resources(512 * MI, 500, GI))],
        app(),
        {0: "b"},
        ["replica 0 -> b (moved from a: node a is lost)"],
    ),
    (
        "vanished-node-is-replaced",
        [node("b")],
        [Allocation("web", 0, "a", Resources(512 * MI, 500, GI))],
        app(),
        {0: "b"},
        ["node a is gone"],
    ),
    (
        "drain-moves-first",
        [node("a", draining=True), node("b")],
        [Allocation("web", 0, "a", Resources(512 * MI, 500, GI))],
        app(),
        {0: "b"},
        ["replica 0 -> b (moved from a: node a is draining)"],
    ),
    (
        "drain-waits-for-the-replacement-to-run",
        [node("a", draining=True), node("b")],
        [
            Allocation("web", 0, "a", Resources(512 * MI, 500, GI)),
            Allocation("web", 0, "b", Resources(512 * MI, 500, GI), created=1.0, running=False),
        ],
        app(),
        {},
        ["0 to place, 0 to stop"],
    ),
    (
        "drain-stops-once-the-replacement-runs",
        [node("a", draining=True), node("b")],
        [
            Allocation("web", 0, "a", Resources(512 * MI, 500, GI)),
            Allocation("web", 0, "b", Resources(512 * MI, 500, GI), created=1.0),
        ],
        app(),
        {},
        ["stop replica 0 on a once its replacement runs: node a is draining"],
    ),
    (
        "scale-down-stops-the-highest",
        [node("a")],
        [Allocation("web", i, "a", Resources(512 * MI, 500, GI)) for i in range(3)],
        app(replicas=1),
        {},
        ["stop replica 1 on a: scaled down", "stop replica 2 on a: scaled down"],
    ),
    (
        "reconnect-keeps-the-original",
        [node("a"), node("b")],
        [
            Allocation("web", 0, "a", Resources(512 * MI, 500, GI), created=1.0),
            Allocation("web", 0, "b", Resources(512 * MI, 500, GI), created=2.0),
        ],
        app(),
        {},
        ["stop replica 0 on b: two copies after a reconnect: keep-original"],
    ),
    (
        "reconnect-keeps-the-replacement",
        [node("a"), node("b")],
        [
            Allocation("web", 0, "a", Resources(512 * MI, 500, GI), created=1.0),
            Allocation("web", 0, "b", Resources(512 * MI, 500, GI), created=2.0),
        ],
        app(disconnect=DisconnectPolicy(60.0, "keep-replacement")),
        {},
        ["stop replica 0 on a: two copies after a reconnect: keep-replacement"],
    ),
]


REFUSALS = {"refusal-penalty": {("web", "a"): 2}}


@pytest.mark.parametrize(
    ("case", "nodes", "allocations", "spec", "expected", "explained"),
    CASES,
    ids=[case[0] for case in CASES],
)
def test_table(
    case: str,
    nodes: list[Node],
    allocations: list[Allocation],
    spec: AppSpec,
    expected: dict[int, str],
    explained: list[str],
) -> None:
    state = ClusterState(tuple(nodes), tuple(allocations), REFUSALS.get(case, {}))
    plan = schedule(state, spec, seed=1)
    assert where(plan.placements) == expected
    text = "\n".join(plan.lines())
    for fragment in explained:
        assert fragment in text, text


def test_deterministic_for_a_seed_and_bounded() -> None:
    nodes = tuple(node(f"n{i:03}", memory=GI * (1 + i % 4)) for i in range(200))
    state = ClusterState(nodes)
    spec = app(replicas=50)
    first, again = schedule(state, spec, seed=7), schedule(state, spec, seed=7)
    assert first == again
    assert where(first.placements) != where(schedule(state, spec, seed=8).placements)
    # a bounded candidate set: each replica compared a few nodes, not all 200
    assert {p.score.candidates for p in first.placements} == {8}
    naive = schedule(state, spec, seed=7, limit=len(nodes))
    assert {p.score.candidates for p in naive.placements} == {200}


def test_vm_charge_includes_overhead() -> None:
    spec = app(memory=GI, kind="vm")
    assert charge(spec).memory == GI + VM_OVERHEAD_MEMORY + GI // 40
    assert charge(app(memory=GI)).memory == GI


# ------------------------------------------------------------------------------- properties

SITES = st.sampled_from(["a", "b", None])


@st.composite
def clusters(draw: st.DrawFn, max_nodes: int = 6) -> tuple[ClusterState, AppSpec]:
    count = draw(st.integers(1, max_nodes))
    nodes = []
    for i in range(count):
        site = draw(SITES)
        nodes.append(
            Node(
                f"n{i}",
                Resources(
                    draw(st.integers(1, 8)) * 256 * MI, draw(st.integers(1, 8)) * 500, 8 * GI
                ),
                {"site": site} if site else {},
                health=draw(st.sampled_from(["online"] * 4 + ["disconnected", "lost"])),
                draining=draw(st.booleans()) and draw(st.booleans()),
            )
        )
    replicas = draw(st.integers(0, 7))
    constraints = Constraints(
        (LabelMatch("site", ("a",)),) if draw(st.booleans()) else (),
        distinct_hosts=draw(st.booleans()),
    )
    spec = app(
        replicas=replicas,
        memory=draw(st.integers(1, 4)) * 256 * MI,
        constraints=constraints,
        scoring=draw(st.sampled_from(["binpack", "spread"])),
        spread=(Spread("site", 50),) if draw(st.booleans()) else (),
    )
    # other apps and some of this one's replicas already placed, never overcommitting
    allocations: list[Allocation] = []
    used = {n.name: [0, 0] for n in nodes}
    for k in range(draw(st.integers(0, 6))):
        target = draw(st.sampled_from(nodes))
        mine = draw(st.booleans())
        r = Resources(spec.resources.memory if mine else 256 * MI, 500, GI)
        u = used[target.name]
        name, replica = ("web", draw(st.integers(0, 8))) if mine else ("other", k)
        if any((a.app, a.replica, a.node) == (name, replica, target.name) for a in allocations):
            continue  # (app, replica, node) names one allocation
        if u[0] + r.memory <= target.capacity.memory and u[1] + 500 <= target.capacity.millicpu:
            u[0] += r.memory
            u[1] += 500
            allocations.append(Allocation(name, replica, target.name, r, created=float(k)))
    return ClusterState(tuple(nodes), tuple(allocations)), spec


def _used(state: ClusterState) -> dict[str, list[int]]:
    used = {n.name: [0, 0, 0] for n in state.nodes}
    for a in state.allocations:
        if a.node in used:
            used[a.node][0] += a.resources.memory
            used[a.node][1] += a.resources.millicpu
            used[a.node][2] += a.resources.disk
    return used


def _overcommitted(state: ClusterState) -> list[str]:
    used = _used(state)
    return [
        n.name
        for n in state.nodes
        if used[n.name][0] > n.capacity.memory
        or used[n.name][1] > n.capacity.millicpu
        or used[n.name][2] > n.capacity.disk
    ]


PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(clusters(), st.integers(0, 3))
def test_never_overcommits_and_constraints_hold(
    case: tuple[ClusterState, AppSpec], seed: int
) -> None:
    state, spec = case
    plan = schedule(state, spec, seed)
    after = state.with_plan(plan, now=100.0)
    assert _overcommitted(after) == []
    for p in plan.placements:
        assert static_reason(after.node(p.node), spec) is None  # type: ignore[arg-type]
    if spec.constraints.distinct_hosts:
        new = [p.node for p in plan.placements]
        kept = {a.node for a in after.allocations if a.app == "web"} - set(new)
        before = {a.node for a in state.allocations if a.app == "web"} & kept
        assert len(new) == len(set(new)) and not set(new) & before


@PROPERTY
@given(clusters(), st.integers(0, 3))
def test_a_satisfied_app_gets_an_empty_plan(case: tuple[ClusterState, AppSpec], seed: int) -> None:
    state, spec = case
    plan = schedule(state, spec, seed)
    settled = state.with_plan(plan, now=100.0)
    again = schedule(settled, spec, seed)
    # Make-before-break: drained copies stop in the plan after their replacements run.
    assert all(s.after_replacement for s in again.stops), again.lines()
    if again.stops:
        assert plan.failures or not again.placements, again.lines()
        settled = settled.with_plan(again, now=101.0)
        again = schedule(settled, spec, seed)
    if not plan.failures:
        assert again.empty, again.lines()
    else:  # a drained copy gone may make room; nothing is left to stop
        assert not again.stops, again.lines()


@PROPERTY
@given(clusters(max_nodes=5), st.integers(1, 8), st.integers(0, 3))
def test_adding_a_node_never_reduces_placements(
    case: tuple[ClusterState, AppSpec], size: int, seed: int
) -> None:
    state, spec = case
    bigger = replace(state, nodes=(*state.nodes, node("extra", memory=size * 256 * MI)))
    assert len(schedule(bigger, spec, seed).placements) >= len(
        schedule(state, spec, seed).placements
    )


def _brute_force(state: ClusterState, spec: AppSpec, wanted: int) -> int:
    """The most new replicas any assignment fits (every multiset of feasible nodes tried)."""
    feasible = [n for n in state.nodes if static_reason(n, spec) is None]
    busy = {a.node for a in state.allocations if a.app == "web"}
    need = charge(spec)
    best = 0
    for k in range(1, wanted + 1):
        pick = (
            itertools.combinations
            if spec.constraints.distinct_hosts
            else (itertools.combinations_with_replacement)
        )
        for combo in pick(feasible, k):
            used = _used(state)
            ok = True
            for n in combo:
                u = used[n.name]
                u[0] += need.memory
                u[1] += need.millicpu
                if u[0] > n.capacity.memory or u[1] > n.capacity.millicpu:
                    ok = False
                if spec.constraints.distinct_hosts and n.name in busy:
                    ok = False
            if ok:
                best = k
                break
        if best < k:
            break
    return best


@PROPERTY
@given(clusters(), st.integers(0, 3))
def test_finds_a_plan_whenever_brute_force_does(
    case: tuple[ClusterState, AppSpec], seed: int
) -> None:
    state, spec = case
    state = replace(state, allocations=tuple(a for a in state.allocations if a.app != "web"))
    plan = schedule(state, spec, seed)
    assert len(plan.placements) == _brute_force(state, spec, spec.replicas)
