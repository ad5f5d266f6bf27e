"""Malformed topology files: each gives its own one-line error naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from lispmesh import cli as lispmesh_cli
from netlab import TopologyError, parse_file

GOOD_NODES = """
  nodes:
    r1: {kind: linux}
    r2: {kind: linux}
"""
NAT_NODES = """
  nodes:
    r1: {kind: linux}
    n:
      kind: nat
"""
NAT_LINK = "  links:\n    - endpoints: [r1:eth1, n:eth1]\n"

# (case id, file text, expected "file:line: field: message" fragment)
CASES = [
    ("yaml-syntax", "name: x\ntopology:\n  nodes: [a, b\n", "bad.clab.yml:4: YAML syntax error"),
    (
        "unknown-kind",
        "name: x\ntopology:\n  nodes:\n    r1: {kind: srlinux}\n",
        "bad.clab.yml:4: nodes.r1.kind: unknown kind 'srlinux' (known: linux",
    ),
    (
        "unknown-node",
        f"name: x\ntopology:{GOOD_NODES}  links:\n    - endpoints: [r1:eth1, r9:eth1]\n",
        "bad.clab.yml:7: links[0].endpoints[1]: link to unknown node 'r9'",
    ),
    (
        "duplicate-endpoint",
        f"name: x\ntopology:{GOOD_NODES}  links:\n    - endpoints: [r1:eth1, r2:eth1]\n"
        "    - endpoints: [r1:eth1, r2:eth2]\n",
        "bad.clab.yml:8: links[1]: endpoint r1:eth1 is already used by the link on line 7",
    ),
    (
        "bad-ifname",
        f"name: x\ntopology:{GOOD_NODES}  links:\n    - endpoints: ['r1:e 1', r2:eth1]\n",
        "links[0].endpoints[0]: interface name 'e 1' contains '/', ':' or whitespace",
    ),
    (
        "bad-link-form",
        f"name: x\ntopology:{GOOD_NODES}  links:\n    - [r1:eth1, r2:eth1]\n",
        "bad.clab.yml:7: links[0]: a link must be a mapping with 'endpoints'",
    ),
    (
        "endpoint-no-colon",
        f"name: x\ntopology:{GOOD_NODES}  links:\n    - endpoints: [r1, r2:eth1]\n",
        "links[0].endpoints[0]: endpoint 'r1' must be written 'node:interface'",
    ),
    (
        "one-endpoint",
        f"name: x\ntopology:{GOOD_NODES}  links:\n    - endpoints: [r1:eth1]\n",
        "bad.clab.yml:7: links[0].endpoints: a link needs exactly two endpoints",
    ),
    (
        "missing-name",
        "topology:\n  nodes:\n    r1: {kind: linux}\n",
        "bad.clab.yml:1: name: missing: every lab needs a name",
    ),
    (
        "unset-env",
        "name: x\ntopology:\n  nodes:\n    r1: {kind: ${NETLAB_TEST_UNSET_KIND}}\n",
        "bad.clab.yml:4: r1: environment variable 'NETLAB_TEST_UNSET_KIND' is not set",
    ),
    (
        "bad-address",
        "name: x\ntopology:\n  nodes:\n    r1:\n      kind: linux\n"
        "      addresses: {eth0: [10.0.0.300/24]}\n",
        "bad.clab.yml:6: nodes.r1.addresses.eth0: '10.0.0.300/24' is not an IP address",
    ),
    (
        "address-no-prefix",
        "name: x\ntopology:\n  nodes:\n    r1:\n      kind: linux\n"
        "      addresses: {eth0: [10.0.0.1]}\n",
        "needs a prefix length (e.g. 10.0.0.1/24)",
    ),
    (
        "address-unknown-if",
        "name: x\ntopology:\n  nodes:\n    r1:\n      kind: linux\n"
        "      addresses: {eth5: [10.0.0.1/24]}\n",
        "bad.clab.yml:6: nodes.r1.addresses.eth5: node 'r1' has no link on interface 'eth5'",
    ),
    (
        "bad-route",
        "name: x\ntopology:\n  nodes:\n    r1:\n      kind: router\n"
        '      routes: ["10.0.0.0/8 through 1.2.3.4"]\n',
        "bad.clab.yml:6: nodes.r1.routes[0]: unknown route word 'through'",
    ),
    (
        "nat-without-outside",
        "name: x\ntopology:\n  nodes:\n    n: {kind: nat}\n",
        "nodes.n.nat.outside: missing: a nat node needs nat: {outside: <interface>}",
    ),
    (
        "nat-unknown-profile",
        f"name: x\ntopology:{NAT_NODES}      nat: {{outside: eth1, profile: cone}}\n{NAT_LINK}",
        "bad.clab.yml:7: nodes.n.nat.profile: unknown NAT profile 'cone' (known: full-cone, "
        "address-restricted, port-restricted, symmetric)",
    ),
    (
        "nat-bad-udp-timeout",
        f"name: x\ntopology:{NAT_NODES}      nat: {{outside: eth1, udp-timeout: 2.5}}\n{NAT_LINK}",
        "bad.clab.yml:7: nodes.n.nat.udp-timeout: must be a whole number of seconds from 1 to "
        "3600, not 2.5",
    ),
    (
        "nat-unknown-field",
        f"name: x\ntopology:{NAT_NODES}      nat: {{outside: eth1, mapping: eim}}\n{NAT_LINK}",
        "bad.clab.yml:7: nodes.n.nat.mapping: unknown field (known: outside, profile, "
        "udp-timeout, block-inbound)",
    ),
    (
        "unknown-group",
        "name: x\ntopology:\n  nodes:\n    r1: {kind: linux, group: core}\n",
        "bad.clab.yml:4: nodes.r1.group: unknown group 'core'",
    ),
    (
        "duplicate-key",
        "name: x\ntopology:\n  nodes:\n    r1: {kind: linux}\n    r1: {kind: linux}\n",
        "bad.clab.yml:5: topology.nodes.r1: duplicate key (first written on line 4)",
    ),
    (
        "eth0-in-link",
        f"name: x\ntopology:{GOOD_NODES}  links:\n    - endpoints: [r1:eth0, r2:eth1]\n",
        "links[0]: eth0 is the management interface of node 'r1'",
    ),
    (
        "bad-mtu",
        f"name: x\ntopology:{GOOD_NODES}  links:\n    - endpoints: [r1:eth1, r2:eth1]\n"
        "      mtu: 20\n",
        "bad.clab.yml:8: links[0].mtu: '20' is not an MTU",
    ),
    (
        "unsupported-link-type",
        f"name: x\ntopology:{GOOD_NODES}  links:\n    - type: vxlan\n",
        "links[0].type: link type 'vxlan' is not supported by netlab",
    ),
    (
        "bad-lab-name",
        "name: 'my lab'\ntopology:\n  nodes:\n    r1: {kind: linux}\n",
        "bad.clab.yml:1: name: 'my lab' is not a valid lab name",
    ),
    ("no-nodes", "name: x\ntopology:\n  links: []\n", "topology.nodes: missing or empty"),
    (
        "mgmt-ip-outside",
        "name: x\ntopology:\n  nodes:\n    r1: {kind: linux, mgmt-ipv4: 10.1.1.1}\n",
        "nodes.r1.mgmt-ipv4: 10.1.1.1 is not a host address of 172.20.20.0/24",
    ),
    ("not-a-mapping", "- a\n- b\n", "bad.clab.yml:1: a topology file must be a mapping"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_topology_gives_its_own_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: str
) -> None:
    monkeypatch.delenv("NETLAB_TEST_UNSET_KIND", raising=False)
    path = tmp_path / "bad.clab.yml"
    path.write_text(text)
    with pytest.raises(TopologyError) as info:
        parse_file(path)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_errors_are_distinct() -> None:
    assert len({c[2] for c in CASES}) == len(CASES) >= 8


def test_cli_prints_one_line_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.clab.yml"
    path.write_text(CASES[1][1])
    code = lispmesh_cli.main(["lab", "deploy", "-t", str(path)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines() == [
        "lispmesh: error: bad.clab.yml:4: nodes.r1.kind: unknown kind 'srlinux' (known: linux, "
        "router, nat, lispmesh-node, lispmesh-controller, bridge, host)"
    ]
    assert "Traceback" not in err


def test_missing_file_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = lispmesh_cli.main(["lab", "graph", "--dot", "-t", "/nonexistent/x.clab.yml"])
    assert code == 1
    assert "cannot read topology file" in capsys.readouterr().err
