"""Rolling updates (issue 14 item 1, update strategy): a changed spec replaces at most
max_unavailable replicas at a time, counting replicas not yet running, until all run the new
version; then the plan is empty."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from controller_api.apps.spec import AppSpec, Resources, UpdateStrategy
from controller_api.placement import Allocation, ClusterState, Node, schedule

GI = 1 << 30
NODES = tuple(Node(f"n{i}", Resources(4 * GI, 4000, 100 * GI)) for i in range(4))


def app(image: str = "a", replicas: int = 5, most: int = 2) -> AppSpec:
    return AppSpec("app.yml", "web", (), "sha256:" + image * 64, "container", replicas,
                   Resources(GI // 2, 500, GI), update=UpdateStrategy("rolling", most))  # fmt: skip


def test_the_version_changes_with_what_needs_a_restart_only() -> None:
    old = app()
    assert old.version == app().version
    assert app("b").version != old.version
    assert replace(old, resources=Resources(GI, 500, GI)).version != old.version
    assert replace(old, replicas=9).version == old.version  # scaling is not an update
    assert replace(old, labels=(("tier", "x"),)).version == old.version


def test_a_rolling_update_goes_max_unavailable_at_a_time() -> None:
    old, new = app("a"), app("b")
    state = ClusterState(NODES)
    state = state.with_plan(schedule(state, old), now=0.0)
    assert {a.version for a in state.allocations} == {old.version}
    steps = 0
    while True:
        plan = schedule(state, new)
        if plan.empty:
            break
        updated = [s for s in plan.stops if s.reason.startswith("rolling update")]
        assert len(updated) <= 2 and len(plan.placements) == len(updated)
        assert all(p.reason == "rolling update" for p in plan.placements)
        # the new copies are placed but not running yet: nothing more may go down
        state = state.with_plan(plan, now=float(steps), running=False)
        assert schedule(state, new).empty
        state = replace(
            state, allocations=tuple(replace(a, running=True) for a in state.allocations)
        )
        steps += 1
        assert steps <= 10
    assert steps == 3  # 5 replicas, 2 at a time
    assert {a.version for a in state.allocations} == {new.version}
    assert sorted(a.replica for a in state.allocations) == [0, 1, 2, 3, 4]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b"]), st.booleans()), min_size=1, max_size=6),
    st.integers(1, 3),
)
def test_never_more_than_max_unavailable_down(copies: list[tuple[str, bool]], most: int) -> None:
    new = app("b", replicas=len(copies), most=most)
    allocations = tuple(
        Allocation(
            "web",
            i,
            NODES[i % 4].name,
            Resources(GI // 2, 500, GI),
            version=app(image).version,
            running=running,
        )
        for i, (image, running) in enumerate(copies)
    )
    plan = schedule(ClusterState(NODES, allocations), new)
    down = sum(1 for a in allocations if not a.running)
    updated = [s for s in plan.stops if s.reason.startswith("rolling update")]
    assert len(updated) <= max(0, most - down)
    outdated_running = sum(1 for i, r in copies if i == "a" and r)
    assert len(updated) == min(max(0, most - down), outdated_running)
