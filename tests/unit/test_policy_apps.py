"""Policies naming apps (issue 13 item 4): `app:NAME`, `label:KEY=VALUE` and groups of apps resolve
to the placed replicas' EIDs, in the instance-id of each hosting node; the hosting node enforces
them (compiled per node, the data path agrees with explain), and the rules follow the replicas
when they move or scale, also through a real controller's desired states."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP

from controller_api.gen.lispmesh.v1 import apps_pb2, status_pb2
from controller_api.policy import (
    Evaluator,
    Inventory,
    InventoryApp,
    InventoryNode,
    InventoryReplica,
    PolicyError,
    compile_node,
    parse_policy,
)
from lispmesh.waiting import wait_until
from mesh.policy import PolicyEngine
from node.state import StateDir
from tests.controller_harness import Running
from tests.unit.test_controller_apps import APP, CAPACITY, apps, desired, report

POLICY = """\
version: 1
groups:
  store: {labels: {app: db}}
rules:
  - {name: web-to-db, from: app:web, to: store, proto: tcp, ports: [5432]}
  - {name: no-db-admin, from: any, to: label:app=db, proto: tcp, ports: [22], action: deny}
  - {name: ops-ssh, from: n3, to: any, proto: tcp, ports: [22]}
tests:
  - {from: app:web, to: app:db, proto: tcp, port: 5432, expect: allow}
  - {from: app:web, to: app:db, proto: tcp, port: 22, expect: deny}
  - {from: n3, to: app:db, proto: tcp, port: 5432, expect: deny}
"""


def eid(offset: int) -> tuple[Any, ...]:
    return (ip_network(f"10.251.0.{offset}/32"), ip_network(f"fd00:251::{offset}/128"))


def node(name: str, slot: int, iid: int = 0) -> InventoryNode:
    prefixes = (ip_network(f"10.250.{slot}.0/24"), ip_network(f"fd00:0:0:{slot}::/64"))
    return InventoryNode(name, iid, prefixes)


def inventory(db_on: str = "n2", web_replicas: int = 1) -> Inventory:
    web = InventoryApp(
        "web", (("app", "web"),),
        tuple(InventoryReplica(r, "n1", eid(1 + r)) for r in range(web_replicas)),
    )  # fmt: skip
    db_replica = InventoryReplica(0, db_on, eid(9))
    db = InventoryApp("db", (("app", "db"), ("tier", "data")), (db_replica,))
    nodes = [node("n1", 1), node("n2", 2), node("n3", 3), node("n4", 4), node("x1", 5, iid=7)]
    return Inventory.of(nodes, [web, db])


def evaluator(inv: Inventory, text: str = POLICY) -> Evaluator:
    ev = Evaluator(parse_policy(text, "policy.yml"), inv)
    ev.check()  # the embedded tests pass
    return ev


def syn(src: Any, dst: Any, port: int) -> bytes:
    return bytes(IP(src=str(src.network_address), dst=str(dst.network_address))
                 / TCP(sport=40000, dport=port, flags="S"))  # fmt: skip


def test_app_selectors_resolve_to_the_placed_replicas_and_their_hosts_enforce_them() -> None:
    inv = inventory()
    ev = evaluator(inv)
    db4, web4 = eid(9)[0], eid(1)[0]
    explained = ev.explain("app:web", "app:db", "tcp", 5432).to_dict()
    assert explained["verdict"] == "allow" and explained["rule"] == "web-to-db"
    assert "replica 0 of app web on n1" in explained["reason"]
    assert "(n2)" in explained["dst"]  # the hosting node owns the replica's EID
    assert ev.explain("app:web", "app:db", "tcp", 22).to_dict()["rule"] == "no-db-admin"
    # n3 may ssh anywhere but the db replicas: the deny names the label.
    assert ev.explain("n3", "app:db", "tcp", 22).to_dict()["verdict"] == "deny"
    assert ev.explain("n3", "app:web", "tcp", 22).to_dict()["verdict"] == "allow"

    n1, n2, n4 = (compile_node(ev, inv.by_name[n], 1) for n in ("n1", "n2", "n4"))
    (egress,) = [r for r in n1.egress if r.name == "web-to-db"]
    assert set(egress.src) == set(eid(1)) and set(egress.dst) == set(eid(9))
    (ingress,) = [r for r in n2.ingress if r.name == "web-to-db"]
    assert set(ingress.src) == set(eid(1)) and set(ingress.dst) == set(eid(9))
    assert not [r for r in n4.ingress + n4.egress if r.name == "web-to-db"]  # hosts neither

    # The hosting nodes' data paths agree with explain, at both ends.
    egress_engine, ingress_engine = PolicyEngine(n1), PolicyEngine(n2)
    for port, verdict in ((5432, True), (22, False), (80, False)):
        packet = syn(web4, db4, port)
        assert egress_engine.check(packet, "egress", 0.0).allowed is verdict, port
        assert ingress_engine.check(packet, "ingress", 0.0).allowed is verdict, port
    # A node's own EID is not its replicas': n1 itself is not app web.
    own = inv.by_name["n1"].prefixes[0]
    assert not ingress_engine.check(syn(own, db4, 5432), "ingress", 0.0).allowed
    # The map-server lets the web host learn the db replica (and not n4).
    assert ev.may_exchange(inv.by_name["n1"], 0, db4.network_address)
    assert not ev.may_exchange(inv.by_name["n4"], 0, db4.network_address)


def test_the_rules_follow_a_replica_that_moves_or_scales() -> None:
    moved = inventory(db_on="n4", web_replicas=2)
    ev = evaluator(moved)
    old, new = compile_node(ev, moved.by_name["n2"], 1), compile_node(ev, moved.by_name["n4"], 1)
    assert not [r for r in old.ingress if r.name == "web-to-db"]  # n2 no longer hosts it
    (ingress,) = [r for r in new.ingress if r.name == "web-to-db"]
    assert set(ingress.src) == set(eid(1)) | set(eid(2))  # the second web replica is in
    assert set(ingress.dst) == set(eid(9))


def test_app_selectors_stay_inside_the_instance_id_and_unplaced_apps_warn() -> None:
    db = InventoryApp("db", (("app", "db"),), (InventoryReplica(0, "x1", eid(9)),))
    inv = Inventory.of(inventory().nodes, [db])
    ev = Evaluator(parse_policy(POLICY.split("tests:")[0], "policy.yml"), inv)
    warnings = ev.check()
    assert any("app:web: no app placed matches it" in w for w in warnings), warnings
    # The only db replica is on x1, in instance-id 7: rules in 0 resolve to nothing there...
    assert ev.resolver(0).selector("label:app=db") == ()
    # ...and in 7 the rule from app:web (nothing) compiles to no rule, never to "any".
    x1 = compile_node(ev, inv.by_name["x1"], 1)
    assert not [r for r in x1.ingress if r.name == "web-to-db"]
    assert [r.name for r in x1.ingress] == ["no-db-admin"]
    with pytest.raises(PolicyError, match=r"'app:web': the app has no replica placed"):
        ev.explain("app:web", "n1", "tcp", 80)


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("app:", "app:NAME names an app"),
        ("label:app", "expected label:KEY=VALUE"),
        ("label:App=db", "'App' is not a label key"),
        ("label:app=d b", "'d b' is not a label value"),
    ],
)
def test_a_bad_app_selector_is_one_line_naming_the_field(selector: str, message: str) -> None:
    text = f"version: 1\nrules:\n  - {{from: any, to: '{selector}'}}\n"
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "policy.yml")
    assert str(err.value).startswith("policy.yml:3: rules[0].to") and message in str(err.value)
    with pytest.raises(PolicyError, match=r"policy.yml:3: groups.g.labels: an empty label"):
        parse_policy("version: 1\ngroups:\n  g: {labels: {}}\n", "policy.yml")


# ------------------------------------------------------------------------ through a controller


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[Running]:
    loop = asyncio.new_event_loop()
    running = Running(loop, tmp_path / "ctl", app_interval=0.2)
    yield running
    running.stop()
    loop.close()


def test_a_controller_compiles_app_selectors_and_recompiles_when_the_app_scales(
    ctl: Running, tmp_path: Path
) -> None:
    names = []
    for i in range(3):
        state = StateDir(tmp_path / f"n{i}")
        names.append(ctl.enroll(state, ctl.token(tags=("site=a",))).name)
        report(ctl, state, status_pb2.StatusReport(workload_capacity=CAPACITY))
    core = ctl.controller.core
    assert core is not None
    policy = "version: 1\nrules:\n  - {name: to-echo, from: any, to: label:app=echo, proto: tcp}\n"
    _, version = core.apply_policy(policy, "policy.yml", "test")
    assert version == 1

    def ingress() -> dict[str, set[str]]:
        apps(ctl, "List", apps_pb2.ListAppsRequest())  # runs the controller's loop a while
        out = {}
        for name in names:
            (compiled,) = desired(ctl, name).policies
            out[name] = {d for r in compiled.ingress if r.name == "to-echo" for d in r.dst}
        return out

    assert not any(ingress().values())  # no app yet: the rule selects nothing
    assert apps(ctl, "Deploy", apps_pb2.AppDocument(text=APP, filename="echo.yml")).ok

    def placed() -> dict[str, set[str]]:
        status = apps(ctl, "Status", apps_pb2.AppRequest(name="echo"))
        return {r.node: {f"{e}/32" if "." in e else f"{e}/128" for e in r.eids}
                for r in status.placed}  # fmt: skip

    wait_until(lambda: len(placed()) == 2, 10, "both replicas placed")
    wait_until(lambda: ingress() == {n: placed().get(n, set()) for n in names}, 10,
               "each host to enforce the rule for its replica's EIDs")  # fmt: skip
    scaled = APP.replace("replicas: 2", "replicas: 3")
    assert apps(ctl, "Deploy", apps_pb2.AppDocument(text=scaled, filename="echo.yml")).ok
    wait_until(lambda: len(placed()) == 3, 10, "the third replica placed")
    wait_until(lambda: ingress() == placed(), 10, "the third host to enforce it too")
