"""The controller's policy language: parsing, one-line errors with file and line, names against
the inventory, embedded tests, explain, per-node compilation, the map-server's policy hook."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path

import pytest

from controller_api.policy import (
    Evaluator,
    Inventory,
    InventoryNode,
    PolicyError,
    compile_node,
    node_policy_to_proto,
    parse_policy,
    proto_to_node_policy,
)
from controller_api.policy.lang import PolicyDoc
from lisp import MapRegister
from lisp.auth import sign
from lisp.ecm import EncapsulatedControl
from lisp.lcaf import InstanceId
from lisp.map_reply import MapReply
from lisp.map_request import MapRequest, RequestRecord
from lisp.map_server import MapServer, SendTo, Site
from lisp.records import Action, EidRecord, RlocRecord
from mesh.policy import PolicyEngine

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yml"

POLICY = """\
version: 1
groups:
  web: {tags: [web]}
  db: {nodes: [n3]}
hosts:
  backup: 10.1.9.0/24
rules:
  - {name: web-to-db, from: web, to: db, proto: tcp, ports: [5432]}
  - {name: ping-all, from: any, to: any, proto: icmp}
  - {name: no-backup, from: any, to: backup, action: deny}
  - {name: dns, from: tag:web, to: 10.250.1.0/24, proto: udp, ports: "53"}
tests:
  - {from: n1, to: n3, proto: tcp, port: 5432, expect: allow}
  - {from: n3, to: n1, proto: tcp, port: 22, expect: deny}
  - {from: n2, to: n3, proto: icmp, expect: allow}
"""


def inventory() -> Inventory:
    def node(name: str, iid: int, slot: int, *tags: str) -> InventoryNode:
        prefixes = (ip_network(f"10.250.{slot}.0/24"), ip_network(f"fd00:0:0:{slot}::/64"))
        return InventoryNode(name, iid, prefixes, tags)

    return Inventory.of(
        [
            node("n1", 0, 0, "web"),
            node("n2", 0, 1),
            node("n3", 0, 2, "db"),
            node("n4", 1, 0, "web"),
            node("n5", 1, 1),
        ]
    )


def evaluator(text: str = POLICY) -> Evaluator:
    ev = Evaluator(parse_policy(text, "policy.yml"), inventory())
    ev.check()
    return ev


# ---------------------------------------------------------------------------------- parsing


def test_parses_the_documented_example() -> None:
    doc = parse_policy(EXAMPLE.read_text(), "policy.yml")
    assert isinstance(doc, PolicyDoc) and doc.rules and doc.tests
    doc = parse_policy(POLICY)
    assert [r.name for r in doc.rules] == ["web-to-db", "ping-all", "no-backup", "dns"]
    web = doc.rules[0]
    assert web.protocols == (6,) and web.ports == ((5432, 5432),) and web.line == 8
    assert doc.rules[1].protocols == (1, 58) and doc.rules[2].action == "deny"
    assert doc.rules[3].ports == ((53, 53),) and doc.rules[3].sources == ("tag:web",)
    assert doc.hosts["backup"] == (ip_network("10.1.9.0/24"),)
    assert doc.groups["db"].nodes == ("n3",) and len(doc.tests) == 3


MALFORMED = [
    ("version: 1\nrules:\n  - {from: a, to: b, proto: tcpp}\n",
     "policy.yml:3: rules[0].proto: unknown protocol 'tcpp' (known: tcp, udp, icmp, icmpv6, any)"),
    ("rules: []\n", "policy.yml:1: version is required (version: 1)"),
    ("version: 2\n", "policy.yml:1: version: unsupported version 2"),
    ("version: 1\nrules:\n  - from: any\n    to: any\n    prot: tcp\n",
     "policy.yml:5: rules[0].prot: unknown field 'prot' (known: action, from, name, ports"),
    ("version: 1\nrules:\n  - {from: any, to: any, proto: icmp, ports: 22}\n",
     "policy.yml:3: rules[0].ports: ports need proto tcp or udp, not icmp"),
    ("version: 1\nrules:\n  - {from: any, to: any, proto: tcp, ports: [70000]}\n",
     "policy.yml:3: rules[0].ports[0]: port 70000 is not in 0..65535"),
    ("version: 1\nrules:\n  - {from: any, to: any, proto: tcp, ports: '90-80'}\n",
     "policy.yml:3: rules[0].ports: port range 90-80 runs backwards"),
    ("version: 1\nrules:\n  - {from: any, to: any, action: maybe}\n",
     "policy.yml:3: rules[0].action: 'maybe' is not allow or deny"),
    ("version: 1\nrules:\n  - {from: any}\n",
     "policy.yml:3: rules[0].to: is required"),
    ("version: 1\nrules:\n  - {from: 10.0.0.300, to: any}\n",
     "policy.yml:3: rules[0].from: '10.0.0.300' is not an address or prefix"),
    ("version: 1\nhosts:\n  backup: not-a-prefix\n",
     "policy.yml:3: hosts.backup: 'not-a-prefix' is not a prefix"),
    ("version: 1\ngroups:\n  web: {tag: [web]}\n",
     "policy.yml:3: groups.web.tag: unknown field 'tag' (known: apps, hosts, labels, nodes, tags)"),
    ("version: 1\nrules:\n  - {name: a, from: any, to: any}\n  - {name: a, from: any, to: any}\n",
     "policy.yml:4: rules[1].name: rule name 'a' is already rules[0]"),
    ("version: 1\nrules: [\n", "policy.yml:3: YAML syntax:"),
    ("version: 1\nversion: 1\n", "policy.yml:2: version: defined twice"),
    ("version: 1\ntests:\n  - {from: n1, to: n2, proto: tcp, expect: allow}\n",
     "policy.yml:3: tests[0].port: is required for tcp"),
    ("", "policy.yml:1: the file is empty"),
    ("version: 1\nrules: {a: 1}\n", "policy.yml:2: rules: expected a list, got a mapping"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), MALFORMED)
def test_malformed_files_give_one_line_naming_file_line_and_field(text: str, expected: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "policy.yml")
    message = str(info.value)
    assert message.startswith(expected), message
    assert "\n" not in message and "Traceback" not in message


def test_unknown_names_are_errors_and_unenrolled_group_members_warnings() -> None:
    typo = POLICY.replace("to: db,", "to: dbb,")
    with pytest.raises(PolicyError) as info:
        Evaluator(parse_policy(typo, "policy.yml"), inventory()).check()
    assert str(info.value) == (
        "policy.yml:8: rules[0].to: unknown name 'dbb' (not a group, host or enrolled node)"
    )
    later = POLICY.replace("nodes: [n3]", "nodes: [n3, n9]")
    warnings = Evaluator(parse_policy(later, "policy.yml"), inventory()).check()
    assert any("node 'n9' is not enrolled (yet)" in w for w in warnings)


# ---------------------------------------------------------------------------------- tests: cases


def test_a_failing_embedded_test_refuses_the_policy_and_names_the_case() -> None:
    text = POLICY.replace(
        "  - {name: ping-all",
        "  - {name: ssh-any, from: any, to: any, proto: tcp, ports: [22]}\n  - {name: ping-all",
    )
    with pytest.raises(PolicyError) as info:
        evaluator(text)
    assert str(info.value) == (
        "policy.yml:15: test 2 (n3 -> n1 tcp/22): expected deny, got allow by rule 'ssh-any' "
        "(policy.yml:9)"
    )


def test_embedded_tests_see_segmentation_and_default_deny() -> None:
    ev = evaluator(POLICY + "  - {from: n4, to: n3, proto: icmp, expect: deny, name: iso}\n")
    assert not ev.failures()
    with pytest.raises(PolicyError, match=r"test 4 'iso' \(n4 -> n3 icmp\): expected allow, got"):
        evaluator(POLICY + "  - {from: n4, to: n3, proto: icmp, expect: allow, name: iso}\n")


# ---------------------------------------------------------------------------------- explain


def test_explain_names_the_deciding_rule_and_why() -> None:
    ev = evaluator()
    e = ev.explain("n1", "n3", "tcp", 5432).to_dict()
    assert e["verdict"] == "allow" and e["rule"] == "web-to-db" and e["line"] == 8
    assert "node n1 has tag web" in e["reason"] and "node n3 is listed in group db" in e["reason"]
    e = ev.explain("n3", "n1", "tcp", 22).to_dict()
    assert e["verdict"] == "deny" and e["rule"] is None
    assert e["reason"] == "default deny: no rule matched"
    assert [s["rule"] for s in e["skipped"]] == ["web-to-db", "ping-all", "no-backup", "dns"]
    assert e["skipped"][0]["why"] == "source 10.250.2.1 is not in web"
    e = ev.explain("n1", "backup", "udp", 53).to_dict()
    assert e["verdict"] == "deny" and e["rule"] == "no-backup"
    e = ev.explain("10.250.0.7", "10.250.1.1", "udp", 53).to_dict()
    assert e["verdict"] == "allow" and e["rule"] == "dns" and e["src"].endswith("(n1)")
    e = ev.explain("n1", "fd00:0:0:2::1", "icmp", None).to_dict()
    assert e["verdict"] == "allow" and e["protocol"] == "icmpv6"
    e = ev.explain("n4", "n2", "icmp", None).to_dict()
    assert e["verdict"] == "deny" and e["reason"].startswith("segmentation:")
    e = ev.explain("[1]10.250.0.1", "[1]10.250.1.1", "icmp", None).to_dict()
    assert e["verdict"] == "allow" and e["instance_id"] == 1  # n4 -> n5, same prefixes as n1/n2
    with pytest.raises(PolicyError, match="'nobody' is not an enrolled node"):
        ev.explain("nobody", "n1", "tcp", 80)
    with pytest.raises(PolicyError, match="unknown protocol"):
        ev.explain("n1", "n2", "tcpp", 80)


# ---------------------------------------------------------------------------------- compiling


def _verdict(engine: PolicyEngine, direction: str, src: str, dst: str, proto: int, port: int) -> (
    bool
):  # fmt: skip
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

    v6 = ":" in src
    ip = IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst)
    layer = {6: TCP(dport=port), 17: UDP(dport=port)}.get(proto)
    if layer is None:
        layer = ICMPv6EchoRequest() if v6 else ICMP()
    return engine.check(bytes(ip / layer), direction, 0.0).allowed  # type: ignore[arg-type]


def test_compiled_per_node_the_data_path_agrees_with_explain() -> None:
    pytest.importorskip("scapy")
    ev = evaluator()
    inv = ev.inventory
    n1 = compile_node(ev, inv.by_name["n1"], 7)
    assert n1.version == 7
    assert [r.name for r in n1.egress] == ["web-to-db", "ping-all", "ping-all", "no-backup", "dns"]
    assert n1.egress[0].src == (ip_network("10.250.0.0/24"), ip_network("fd00:0:0:0::/64"))
    assert n1.egress[0].dst == inv.by_name["n3"].prefixes and n1.egress[0].protocol == 6
    assert [r.name for r in n1.ingress] == ["ping-all", "ping-all"]
    n3 = compile_node(ev, inv.by_name["n3"], 7)
    assert next(r.name for r in n3.ingress) == "web-to-db"
    assert n3.ingress[0].dst == inv.by_name["n3"].prefixes
    # n4 (instance-id 1) has tag web, but group db's n3 is in instance-id 0: no web-to-db.
    n4 = compile_node(ev, inv.by_name["n4"], 7)
    assert "web-to-db" not in [r.name for r in n4.egress]
    # The round trip through the desired state.
    assert proto_to_node_policy(node_policy_to_proto(n1, "policy.yml", 3)) == n1
    # Both ends, through the reference engine, decide as explain does.
    cases = [("n1", "n3", 6, 5432), ("n3", "n1", 6, 22), ("n2", "n3", 1, 0), ("n1", "n3", 6, 22),
             ("n1", "n2", 17, 53), ("n2", "n1", 17, 53)]  # fmt: skip
    for a, b, proto, port in cases:
        proto_name = {6: "tcp", 17: "udp", 1: "icmp"}[proto]
        expected = ev.explain(a, b, proto_name, port or None).decision.allowed
        src = str(inv.by_name[a].address(4))
        dst = str(inv.by_name[b].address(4))
        # Fresh engines per case: they are stateful (a reply would pass as return traffic).
        out = _verdict(PolicyEngine(compile_node(ev, inv.by_name[a], 1)), "egress", src, dst,
                       proto, port)  # fmt: skip
        into = _verdict(PolicyEngine(compile_node(ev, inv.by_name[b], 1)), "ingress", src, dst,
                        proto, port)  # fmt: skip
        assert (out and into) == expected, (a, b, proto, port)


def test_a_group_with_no_member_compiles_to_no_rule_never_to_any() -> None:
    text = "version: 1\ngroups:\n  later: {tags: [nobody]}\nrules:\n  - {from: any, to: later}\n"
    ev = Evaluator(parse_policy(text), inventory())
    ev.check()
    for node in ev.inventory.nodes:
        compiled = compile_node(ev, node, 1)
        assert compiled.egress == () and compiled.ingress == ()


# ---------------------------------------------------------------------------------- map-server


def test_may_exchange_either_direction_within_one_instance_id() -> None:
    ev = evaluator(
        "version: 1\nrules:\n  - {from: n1, to: n3, proto: tcp, ports: [5432]}\n"
        "  - {from: any, to: n2, action: deny}\n  - {from: n2, to: n3, proto: udp}\n"
    )
    n1, n2, n3, n4 = (ev.inventory.by_name[n] for n in ("n1", "n2", "n3", "n4"))
    assert ev.may_exchange(n1, 0, ip_address("10.250.2.1"))
    assert ev.may_exchange(n3, 0, ip_address("10.250.0.1"))  # it must answer n1
    assert not ev.may_exchange(n1, 0, ip_address("10.250.1.1"))  # denied for everything
    assert ev.may_exchange(n2, 0, ip_address("10.250.2.1"))  # udp from n2 may go out
    assert not ev.may_exchange(n4, 0, ip_address("10.250.2.1"))  # another instance-id
    assert not ev.may_exchange(n1, 1, ip_address("10.250.1.1"))


ETR_RLOC = IPv4Address("192.0.2.20")
ITR_RLOC = IPv4Address("192.0.2.10")


def _register(ms: MapServer, site: str, prefix: str, rloc: IPv4Address, key: bytes) -> None:
    net = ip_network(prefix)
    record = EidRecord(InstanceId(0, net.network_address), net.prefixlen, (RlocRecord(rloc),), 3)
    raw = sign(MapRegister(nonce=hash(site) & 0xFFFF or 1, records=(record,)).encode(), key)
    ms.handle(raw, (str(rloc), 4342), 0.0)
    assert ms.lookup(net.network_address + 1, 0, 0.0) is not None


def _ask(ms: MapServer, source_eid: str, itr: IPv4Address, eid: str) -> list[object]:
    request = MapRequest(
        nonce=42, itr_rlocs=(itr,), records=(RequestRecord(InstanceId(0, ip_address(eid)), 32),),
        source_eid=InstanceId(0, ip_address(source_eid)),
    )  # fmt: skip
    ecm = EncapsulatedControl(ip_address(source_eid), ip_address(eid), request.encode(),
                              source_port=4342)  # fmt: skip
    return list(ms.handle(ecm.encode(), (str(itr), 4342), 1.0))


def test_map_server_policy_hook_denies_with_a_negative_reply_and_never_forwards() -> None:
    sites = [
        Site("node-a", {0: b"ka"}, ((0, ip_network("10.1.0.0/24")),)),
        Site("node-b", {0: b"kb"}, ((0, ip_network("10.2.0.0/24")),)),
    ]
    asked: list[tuple[str | None, int, object]] = []

    def check(site: str | None, iid: int, eid: object) -> bool | None:
        asked.append((site, iid, eid))
        return None if site is None else site == "node-a"

    ms = MapServer(sites, policy_check=check, policy_denied_ttl=1)
    _register(ms, "node-a", "10.1.0.0/24", ITR_RLOC, b"ka")
    _register(ms, "node-b", "10.2.0.0/24", ETR_RLOC, b"kb")
    # Allowed: forwarded to the ETR as usual.
    out = _ask(ms, "10.1.0.1", ITR_RLOC, "10.2.0.1")
    assert asked[-1] == ("node-a", 0, ip_address("10.2.0.1"))
    assert [a.address for a in out if isinstance(a, SendTo)] == [(str(ETR_RLOC), 4342)]
    # Denied (node-b asking for a's EID): a negative reply, policy-denied, no locators.
    out = _ask(ms, "10.2.0.1", ETR_RLOC, "10.1.0.1")
    sends = [a for a in out if isinstance(a, SendTo)]
    assert len(sends) == 1 and sends[0].address == (str(ETR_RLOC), 4342)
    reply = MapReply.decode(sends[0].data)
    record = reply.records[0]
    assert record.action == Action.DROP_POLICY_DENIED and record.rlocs == () and record.ttl == 1
    assert record.mask_len == 24 and ms.counters["policy-denied"] == 1
    # A source EID whose RLOC is not the one registered is not identified: ask again.
    out = _ask(ms, "10.1.0.1", IPv4Address("198.51.100.9"), "10.2.0.1")
    assert asked[-1][0] is None
    reply = MapReply.decode(next(a for a in out if isinstance(a, SendTo)).data)
    assert reply.records[0].action == Action.SEND_MAP_REQUEST and reply.records[0].rlocs == ()


# ---------------------------------------------------------------------------------- the controller


def _enroll(store: object, name: str, iid: int, tags: tuple[str, ...]) -> None:
    import time as _time

    from controller_api.store import Allocation, EidPools, Issued, NewNode, Store

    assert isinstance(store, Store)
    new = NewNode(f"id-{name}", name, iid, tags, None, None, f"pk-{name}", "k" * 16, "host")

    def issue(alloc: Allocation) -> Issued:
        return Issued("pem", f"fp-{name}", 0.0)

    pools = EidPools(IPv4Network("10.250.0.0/16"), 24, IPv6Network("fd00:1::/48"), 64)
    store.create_node(new, pools, issue, _time.time())


def test_applied_policy_survives_a_restart_and_reaches_the_node_config(tmp_path: Path) -> None:
    from controller_api.policies import PolicyManager
    from controller_api.store import SqliteStore as Store
    from node.desired import node_policy

    store = Store(tmp_path / "controller.db")
    for name, iid, tags in (("n1", 0, ("web",)), ("n2", 0, ()), ("n3", 0, ("db",)),
                            ("v1", 7, ())):  # fmt: skip
        _enroll(store, name, iid, tags)
    nodes = {n.name: n for n in store.list_nodes()}
    assert nodes["v1"].eid4 == nodes["n1"].eid4  # per instance-id allocation: same prefixes
    manager = PolicyManager(store)
    assert manager.for_node(nodes["n1"]) is None and manager.may_learn(None, 0, IPv4Address(1))
    with pytest.raises(PolicyError, match="expected deny, got allow"):
        manager.apply(POLICY.replace("port: 5432, expect: allow", "port: 5432, expect: deny"),
                      "policy.yml", "admin")  # fmt: skip
    assert not manager.installed  # a refused policy changes nothing
    _, version = manager.apply(POLICY, "policy.yml", "admin")
    first = manager.for_node(nodes["n1"])
    assert version == 1 and first is not None and first.policy_version == 1
    assert manager.may_learn("node-n1", 0, ip_address("10.250.2.1")) is True
    assert manager.may_learn("node-v1", 0, ip_address("10.250.2.1")) is False
    assert manager.may_learn("eid-pools", 0, ip_address("10.250.2.1")) is None
    store.close()
    store = Store(tmp_path / "controller.db")
    again = PolicyManager(store)
    assert again.installed and again.state().version == 1
    assert again.for_node(nodes["n1"]) == first
    from controller_api.gen.lispmesh.v1 import config_pb2

    desired = config_pb2.DesiredState(version=3, policies=[first])
    compiled = node_policy(desired)
    assert compiled is not None and compiled.egress[0].name == "web-to-db"
    assert node_policy(config_pb2.DesiredState()) is None
    # A node joining bumps the generation: every node's compiled version changes.
    assert again.inventory_changed()
    assert again.for_node(nodes["n1"]).version > first.version  # type: ignore[union-attr]
    store.close()
