"""Edge failure semantics (issue 14 item 3), in memory with the clock in the test's hands:
disconnected is not lost, lost after `lost_after` is replaced, a returning node is reconciled by
the app's policy, refusals back off exponentially, a drain moves replicas gracefully."""

from __future__ import annotations

from dataclasses import replace

from controller_api.apps.spec import (
    AppSpec,
    Constraints,
    DisconnectPolicy,
    Reschedule,
    Resources,
)
from controller_api.placement import Allocation, Node
from controller_api.placement.reconciler import NodeInfo, Reconciler, Step

GI = 1 << 30


def app(name: str = "web", replicas: int = 2, **kw: object) -> AppSpec:
    fields: dict[str, object] = {
        "filename": "app.yml",
        "name": name,
        "labels": (),
        "image": "sha256:" + "0" * 64,
        "kind": "container",
        "replicas": replicas,
        "resources": Resources(GI // 2, 500, GI),
        "constraints": Constraints(distinct_hosts=True),
        "disconnect": DisconnectPolicy(300.0, "keep-original"),
        "reschedule": Reschedule(30.0, 120.0),
    }
    fields.update(kw)
    return AppSpec(**fields)  # type: ignore[arg-type]


class Cluster:
    """Nodes that report when the test says, and plans carried out at once."""

    def __init__(self, *names: str) -> None:
        self.nodes = {n: Node(n, Resources(4 * GI, 4000, 100 * GI)) for n in names}
        self.seen: dict[str, float | None] = dict.fromkeys(names, 0.0)
        self.allocations: list[Allocation] = []
        self.silent: set[str] = set()
        self.rec = Reconciler(heartbeat_timeout=30.0)

    def step(self, now: float, *apps: AppSpec) -> Step:
        for name in self.nodes:
            if name not in self.silent:
                self.seen[name] = now
        infos = [NodeInfo(self.nodes[n], self.seen[n]) for n in sorted(self.nodes)]
        result = self.rec.step(now, infos, self.allocations, apps)
        for plan in result.plans:
            gone = {(s.replica, s.node) for s in plan.stops}
            self.allocations = [
                a
                for a in self.allocations
                if not (a.app == plan.app and (a.replica, a.node) in gone)
            ]
            self.allocations += [
                Allocation(plan.app, p.replica, p.node, p.resources, now) for p in plan.placements
            ]
        return result

    def where(self, name: str = "web") -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for a in sorted(self.allocations, key=lambda a: a.created):
            if a.app == name:
                out.setdefault(a.replica, []).append(a.node)
        return out


def test_disconnected_is_not_lost_then_replaced_after_lost_after_then_reconciled() -> None:
    c = Cluster("a", "b", "c")
    spec = app()
    c.step(0.0, spec)
    placed = c.where()
    victim = placed[0][0]
    c.silent.add(victim)
    # 100 s of silence: disconnected, assumed running, nothing replaced
    result = c.step(100.0, spec)
    assert f"node {victim} is disconnected" in result.events
    assert c.where() == placed
    result = c.step(329.0, spec)
    assert result.plans[0].empty
    assert result.wake_at == 30.0 + 300.0  # when it turns lost for this app
    # lost: replaced on the third node, the copy on the lost node stays recorded
    result = c.step(330.0, spec)
    (moved,) = result.plans[0].placements
    assert (moved.replica, moved.replaces, moved.reason) == (0, victim, f"node {victim} is lost")
    assert moved.node not in (placed[0][0], placed[1][0])
    assert c.where()[0] == [victim, moved.node]
    # it comes back: keep-original stops the replacement
    c.silent.clear()
    result = c.step(400.0, spec)
    assert f"node {victim} is online" in result.events
    (stop,) = result.plans[0].stops
    assert (stop.replica, stop.node) == (0, moved.node)
    assert c.where() == placed
    assert c.step(401.0, spec).plans[0].empty


def test_keep_replacement_stops_the_original() -> None:
    c = Cluster("a", "b", "c")
    spec = app(disconnect=DisconnectPolicy(60.0, "keep-replacement"))
    c.step(0.0, spec)
    victim = c.where()[0][0]
    c.silent.add(victim)
    c.step(100.0, spec)
    replacement = c.where()[0][1]
    c.silent.clear()
    (stop,) = c.step(200.0, spec).plans[0].stops
    assert stop.node == victim
    assert c.where()[0] == [replacement]


def test_lost_after_is_per_app() -> None:
    c = Cluster("a", "b")
    patient = app("patient", replicas=1, constraints=Constraints())
    eager = app("eager", replicas=1, constraints=Constraints(),
                disconnect=DisconnectPolicy(60.0, "keep-original"))  # fmt: skip
    c.nodes["b"] = replace(c.nodes["b"], draining=True)  # everything starts on a
    c.step(0.0, patient, eager)
    c.nodes["b"] = replace(c.nodes["b"], draining=False)
    c.silent.add("a")
    c.step(100.0, patient, eager)
    assert c.where("eager")[0] == ["a", "b"] and c.where("patient")[0] == ["a"]
    c.step(330.0, patient, eager)
    assert c.where("patient")[0] == ["a", "b"]


def test_refusals_back_off_exponentially_and_score_the_node_down() -> None:
    c = Cluster("a", "b", "c")
    spec = app(replicas=1)
    c.step(0.0, spec)
    first = c.where()[0][0]
    # the node's admission control refuses: the caller removes the allocation and reports it
    c.allocations.clear()
    c.rec.refused(spec, 0, first, 10.0)
    result = c.step(11.0, spec)
    assert result.plans[0].empty and "web: replicas 0 back off" in result.events
    assert result.wake_at == 40.0
    c.step(40.0, spec)
    second = c.where()[0][0]
    assert second != first  # scored down
    c.allocations.clear()
    c.rec.refused(spec, 0, second, 50.0)
    assert c.step(109.0, spec).plans[0].empty  # 60 s now
    c.step(110.0, spec)
    third = c.where()[0][0]
    assert third not in (first, second)
    # once it runs, the next refusal starts again from 30 s
    c.rec.running("web", 0)
    c.allocations.clear()
    c.rec.refused(spec, 0, third, 200.0)
    assert c.step(229.0, spec).plans[0].empty
    assert c.where() == {}
    c.step(230.0, spec)
    assert c.where() != {}


def test_no_room_backs_off_instead_of_retrying_every_step() -> None:
    c = Cluster("a")
    spec = app(replicas=2)  # distinct_hosts: one node holds one
    first = c.step(0.0, spec)
    assert len(first.plans[0].failures) == 1 and first.wake_at is not None
    assert c.step(1.0, spec).plans[0].failures == ()
    c.nodes["b"] = Node("b", Resources(4 * GI, 4000, 100 * GI))
    c.seen["b"] = 1.0
    assert c.step(29.0, spec).plans[0].placements == ()
    assert len(c.step(30.0, spec).plans[0].placements) == 1


def test_drain_moves_replicas_away_gracefully() -> None:
    c = Cluster("a", "b", "c")
    spec = app(replicas=2)
    c.step(0.0, spec)
    placed = c.where()
    drained = placed[0][0]
    c.nodes[drained] = replace(c.nodes[drained], draining=True)
    plan = c.step(10.0, spec).plans[0]
    (moved,) = plan.placements
    assert moved.replaces == drained and plan.stops == ()  # make-before-break
    assert drained in {n for nodes in c.where().values() for n in nodes}
    # The replacement runs (the harness carries plans out at once): the drained copy stops.
    plan = c.step(11.0, spec).plans[0]
    (stop,) = plan.stops
    assert plan.placements == () and stop.node == drained and stop.after_replacement
    assert drained not in {n for nodes in c.where().values() for n in nodes}
    assert c.step(12.0, spec).plans[0].empty
