"""netlab topology parsing, inheritance and lab-directory outputs (no root needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from netlab import graph, labdir, parse_file, parse_text
from netlab.kinds import nat as nat_kind
from netlab.model import HOST

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["two-node", "hub-spoke-nat", "edge-dual-uplink"])
def test_examples_parse_without_warnings(name: str) -> None:
    topo = parse_file(EXAMPLES / f"{name}.clab.yml")
    assert topo.name == name
    assert topo.warnings == []
    assert topo.links
    for n in topo.nodes.values():
        assert n.ns == f"clab-{name}-{n.name}"


def test_inheritance_node_group_kind_defaults(tmp_path: Path) -> None:
    topo = parse_text(
        """
name: inh
topology:
  defaults:
    kind: linux
    env: {A: defaults, B: defaults, C: defaults, D: defaults}
    labels: {tier: defaults}
    exec: ["echo defaults"]
  kinds:
    linux:
      env: {B: kind, C: kind, D: kind}
    router:
      exec: ["echo router-kind"]
  groups:
    g:
      kind: router
      env: {C: group, D: group}
  nodes:
    plain: {}
    grouped: {group: g}
    own: {group: g, env: {D: node}, exec: ["echo node"]}
""",
        tmp_path / "inh.clab.yml",
    )
    plain, grouped, own = (topo.nodes[n] for n in ("plain", "grouped", "own"))
    assert plain.kind == "linux"
    assert plain.env == {"A": "defaults", "B": "kind", "C": "kind", "D": "kind"}
    assert grouped.kind == "router"  # kind from the group; kinds.linux no longer applies
    assert grouped.env == {"A": "defaults", "B": "defaults", "C": "group", "D": "group"}
    assert grouped.exec == ["echo router-kind"]  # lists: the most specific layer wins
    assert own.env["D"] == "node" and own.exec == ["echo node"]
    assert own.labels == {"tier": "defaults"}


def test_env_expansion_with_defaults(tmp_path: Path) -> None:
    text = """
name: ${LAB:-envlab}
topology:
  nodes:
    r1: {kind: linux, addresses: {eth1: ["${NET:=10.9.0}.1/24"]}}
    r2: {kind: linux}
  links: [{endpoints: ["r1:eth1", "r2:${IF}"]}]
"""
    topo = parse_text(text, tmp_path / "e.clab.yml", env={"IF": "eth7"})
    assert topo.name == "envlab"
    assert topo.nodes["r1"].addresses == {"eth1": ["10.9.0.1/24"]}
    assert topo.links[0].z.ifname == "eth7"
    topo = parse_text(text, tmp_path / "e.clab.yml", env={"IF": "eth7", "LAB": "x"})
    assert topo.name == "x"


def test_link_forms_and_prefixes(tmp_path: Path) -> None:
    topo = parse_text(
        """
name: forms
prefix: ""
topology:
  nodes:
    a: {kind: linux}
    b: {kind: linux}
    br: {kind: bridge}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
      mtu: 9000
    - type: veth
      endpoints: [{node: a, interface: eth2, mac: "02:00:00:00:00:01"}, {node: br, interface: p1}]
    - type: host
      endpoint: {node: b, interface: eth2}
      host-interface: veth-forms-b
    - endpoints: [{node: a, interface: eth3}, "b:eth3"]
""",
        tmp_path / "f.clab.yml",
    )
    assert [n.ns for n in topo.nodes.values()] == ["a", "b", "br"]
    assert topo.links[0].mtu == 9000
    assert topo.links[1].a.mac == "02:00:00:00:00:01"
    assert topo.links[2].z.node == HOST and topo.ns_of(HOST) is None
    assert topo.nodes["br"].mgmt_ipv4 is None  # bridges get no mgmt interface
    custom = parse_text(
        "name: l\nprefix: p\ntopology: {nodes: {n: {kind: linux}}}\n", tmp_path / "p.clab.yml"
    )
    assert custom.nodes["n"].ns == "p-l-n" and custom.mgmt_ns == "p-l--mgmt"
    labname = parse_text(
        "name: l\nprefix: __lab-name\ntopology: {nodes: {n: {kind: linux}}}\n",
        tmp_path / "q.clab.yml",
    )
    assert labname.nodes["n"].ns == "l-n"


def test_mgmt_allocation_honours_static(tmp_path: Path) -> None:
    topo = parse_text(
        """
name: m
mgmt: {ipv4-subnet: 10.99.0.0/29, ipv6-subnet: "fd99::/64"}
topology:
  nodes:
    a: {kind: linux}
    b: {kind: linux, mgmt-ipv4: 10.99.0.2}
    c: {kind: linux}
    d: {kind: linux, network-mode: none}
""",
        tmp_path / "m.clab.yml",
    )
    assert topo.nodes["b"].mgmt_ipv4 == "10.99.0.2/29"
    assert topo.nodes["a"].mgmt_ipv4 == "10.99.0.3/29"
    assert topo.nodes["c"].mgmt_ipv4 == "10.99.0.4/29"
    assert topo.nodes["a"].mgmt_ipv6 == "fd99::2/64"  # no static v6: a is first
    assert not topo.nodes["d"].has_mgmt


def test_container_fields_warn_not_fail(tmp_path: Path) -> None:
    topo = parse_text(
        """
name: w
topology:
  defaults:
    image: alpine:latest
  nodes:
    a: {kind: linux, binds: ["/x:/x"], ports: ["80:80"], colour: blue}
""",
        tmp_path / "w.clab.yml",
    )
    text = "\n".join(topo.warnings)
    assert "w.clab.yml:5: warning: topology.defaults.image" in text
    assert "nodes.a.binds: container-only field ignored" in text
    assert "nodes.a.colour: unknown field" in text


def test_digest_is_stable_and_sensitive(tmp_path: Path) -> None:
    p = EXAMPLES / "two-node.clab.yml"
    assert parse_file(p).digest() == parse_file(p).digest()
    assert parse_file(p).digest() != parse_file(p, name="other").digest()
    assert parse_file(p).digest() != parse_file(p, overrides={"n1": {"cmd": "sleep 1"}}).digest()


def test_labdir_files(tmp_path: Path) -> None:
    topo = parse_file(EXAMPLES / "hub-spoke-nat.clab.yml")
    topo.workdir = tmp_path
    labdir.write_all(topo)
    d = tmp_path / "clab-hub-spoke-nat"
    data = json.loads((d / "topology-data.json").read_text())
    assert data["name"] == "hub-spoke-nat" and data["type"] == "clab"
    assert data["nodes"]["hub"]["longname"] == "clab-hub-spoke-nat-hub"
    assert data["nodes"]["hub"]["mgmt-ipv4-address"].startswith("172.20.30.")
    assert data["nodes"]["spoke1"]["labels"]["role"] == "spoke"
    assert {"a", "z"} == set(data["links"][0]["endpoints"])
    inv = yaml.safe_load((d / "ansible-inventory.yml").read_text())
    assert "clab-hub-spoke-nat-wan" in inv["all"]["children"]["router"]["hosts"]
    hosts = (d / "hosts").read_text()
    assert "clab-hub-spoke-nat-ctrl" in hosts and hosts.startswith("###### CLAB-hub-spoke-nat")


def test_graph_outputs() -> None:
    topo = parse_file(EXAMPLES / "edge-dual-uplink.clab.yml")
    dot = graph.to_dot(topo)
    assert dot.startswith('graph "edge-dual-uplink" {')
    assert dot.count(" -- ") == len(topo.links)
    mer = graph.to_mermaid(topo)
    assert mer.startswith("graph LR") and mer.count("---|") == len(topo.links)


def test_nat_profiles_parse_and_select_their_rules(tmp_path: Path) -> None:
    topo = parse_text(
        """
name: n
topology:
  kinds:
    nat: {nat: {outside: eth1}}
  nodes:
    r: {kind: router}
    plain: {kind: nat}
    cone: {kind: nat, nat: {outside: eth1, profile: full-cone, udp-timeout: 7}}
    ar: {kind: nat, nat: {outside: eth1, profile: address-restricted}}
    sym: {kind: nat, nat: {outside: eth1, profile: symmetric, block-inbound: false}}
  links:
    - endpoints: [r:eth1, plain:eth1]
    - endpoints: [r:eth2, cone:eth1]
    - endpoints: [r:eth3, ar:eth1]
    - endpoints: [r:eth4, sym:eth1]
""",
        tmp_path / "n.clab.yml",
    )
    n = topo.nodes
    assert (n["plain"].nat_profile, n["plain"].nat_udp_timeout) == ("port-restricted", None)
    assert (n["cone"].nat_profile, n["cone"].nat_udp_timeout) == ("full-cone", 7)
    assert n["sym"].nat_block_inbound is False

    def rules(name: str) -> str:
        node = n[name]
        assert node.nat_outside
        return nat_kind.ruleset(
            node.nat_outside, node.nat_block_inbound, node.nat_profile, node.nat_udp_timeout
        )

    plain, cone, ar, sym = rules("plain"), rules("cone"), rules("ar"), rules("sym")
    # port-restricted is plain masquerade; symmetric randomises the port of every new flow
    assert "masquerade\n" in plain and "dnat" not in plain and "fully-random" not in plain
    assert "masquerade fully-random" in sym and "dnat" not in sym
    # the cones learn outside port -> inside owner and DNAT to it; only address-restricted
    # checks that the mapping sent to the sender's address first
    for text in (cone, ar):
        assert "update @udp_mapping" in text and "dnat ip to udp dport map @udp_mapping" in text
    assert "udp_peers" in ar and "udp_peers" not in cone
    assert "timeout 7s" in cone and f"timeout {nat_kind.DEFAULT_MAP_TIMEOUT}s" in ar
    # block-inbound lets replies and DNATed (cone) flows in, drops the rest
    assert 'iifname "eth1" counter drop' in cone and "drop" not in sym
    assert nat_kind.conntrack_sysctls(7) == {
        "net.netfilter.nf_conntrack_udp_timeout": "7",
        "net.netfilter.nf_conntrack_udp_timeout_stream": "7",
    }
    assert nat_kind.conntrack_sysctls(None) == {}
    assert "full-cone" in json.dumps(topo.to_dict())  # so the digest sees a profile change
