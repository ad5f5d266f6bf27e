"""The lispmesh kinds' default commands and wiring errors (no root, nothing started)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from netlab import TopologyError, parse_file, parse_text
from netlab.kinds import KINDS
from netlab.kinds.lispmesh import (
    controller_argv,
    data_address,
    lispmesh_env,
    node_argv,
    plan,
    token_argv,
)
from netlab.model import Topology

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PY = [sys.executable, "-m", "lispmesh"]

LAB = """
name: w
topology:
  nodes:
    sw: {{kind: bridge}}
{nodes}
  links:
{links}
"""


def lab(tmp_path: Path, nodes: str, links: str) -> Topology:
    return parse_text(LAB.format(nodes=nodes, links=links), tmp_path / "w.clab.yml")


def wired(tmp_path: Path) -> Topology:
    return lab(
        tmp_path,
        """\
    c: {kind: lispmesh-controller, addresses: {eth1: [10.9.0.1/24, "fd09::1/64"]}}
    n1: {kind: lispmesh-node, addresses: {eth1: [10.9.0.11/24]}}
    n2: {kind: lispmesh-node, network-mode: none, addresses: {eth0: [10.9.0.12/24]}}
    n3: {kind: lispmesh-node, startup-config: n3.yml}
    n4: {kind: lispmesh-node, cmd: sleep 60}""",
        """\
    - endpoints: ["c:eth1", "sw:c"]
    - endpoints: ["n1:eth1", "sw:n1"]
    - endpoints: ["n2:eth0", "sw:n2"]
    - endpoints: ["n1:eth2", "n3:eth1"]""",
    )


def test_plan_wires_nodes_without_cmd_or_startup_config(tmp_path: Path) -> None:
    topo = wired(tmp_path)
    assert plan(topo).controller == "c"
    assert plan(topo).address == "10.9.0.1"
    assert plan(topo).nodes == ("n1", "n2")  # n3 has a startup-config, n4 a cmd
    assert [n.cmd for n in topo.nodes.values() if n.kind.startswith("lispmesh")] == [
        None,
        None,
        None,
        None,
        "sleep 60",
    ]


def test_controller_command(tmp_path: Path) -> None:
    topo = wired(tmp_path)
    topo.workdir = tmp_path / "work"
    labdir = tmp_path / "work" / "clab-w"
    assert controller_argv(topo, topo.nodes["c"]) == [
        *PY, "controller", "serve", "--state-dir", f"{labdir}/c/state", "--listen",
        "10.9.0.1:7443",
    ]  # fmt: skip
    assert token_argv(topo, topo.nodes["c"], 2) == [
        *PY, "controller", "token", "create", "--offline", "--state-dir", f"{labdir}/c/state",
        "--uses", "2", "--ttl", "24h", "--description", "netlab lab w", "--json",
    ]  # fmt: skip


def test_node_commands(tmp_path: Path) -> None:
    topo = wired(tmp_path)
    labdir = tmp_path / "clab-w"
    argv = node_argv(topo, topo.nodes["n1"], "lmj1.id.secret.pin")
    assert argv == [
        *PY, "node", "run", "--controller", "10.9.0.1:7443", "--name", "n1",
        "--state-dir", f"{labdir}/n1/state", "--run-dir", f"{labdir}/run",
        "--uplink", "eth1", "--uplink", "eth2",
    ]  # fmt: skip
    assert not any("secret" in a for a in argv)  # the token travels in the environment
    # network-mode none: eth0 is a data interface, so it is the uplink
    assert node_argv(topo, topo.nodes["n2"], "t")[-2:] == ["--uplink", "eth0"]
    assert node_argv(topo, topo.nodes["n3"], None) == [
        *PY, "node", "run", "--config", str(tmp_path / "n3.yml"),
    ]  # fmt: skip


def test_ipv6_controller_address_is_bracketed(tmp_path: Path) -> None:
    topo = lab(
        tmp_path,
        """\
    c: {kind: lispmesh-controller, addresses: {eth1: ["fd09::1/64"]}}
    n1: {kind: lispmesh-node}""",
        """\
    - endpoints: ["c:eth1", "sw:c"]
    - endpoints: ["n1:eth1", "sw:n1"]""",
    )
    assert controller_argv(topo, topo.nodes["c"])[-1] == "[fd09::1]:7443"
    assert "[fd09::1]:7443" in node_argv(topo, topo.nodes["n1"], "t")


def test_controller_address_is_the_first_addressed_data_interface(tmp_path: Path) -> None:
    topo = lab(
        tmp_path,
        """\
    c: {kind: lispmesh-controller, addresses: {lo: [10.255.0.1/32], eth2: [10.8.0.1/24]}}""",
        """\
    - endpoints: ["c:eth1", "sw:c1"]
    - endpoints: ["c:eth2", "sw:c2"]""",
    )
    assert data_address(topo, topo.nodes["c"]) == "10.8.0.1"


def test_no_controller_is_a_topology_error(tmp_path: Path) -> None:
    with pytest.raises(TopologyError) as err:
        lab(tmp_path, "    n1: {kind: lispmesh-node}", '    - endpoints: ["n1:eth1", "sw:n1"]')
    msg = str(err.value)
    assert msg.startswith("w.clab.yml:6: nodes.n1: ")
    assert "but the lab has none" in msg and "give 'n1' a cmd or a startup-config" in msg


def test_two_controllers_is_a_topology_error(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match=r"nodes\.n1: .*the lab has 2 \(c1, c2\)"):
        lab(
            tmp_path,
            """\
    c1: {kind: lispmesh-controller, addresses: {eth1: [10.9.0.1/24]}}
    c2: {kind: lispmesh-controller, addresses: {eth1: [10.9.0.2/24]}}
    n1: {kind: lispmesh-node}""",
            """\
    - endpoints: ["c1:eth1", "sw:c1"]
    - endpoints: ["c2:eth1", "sw:c2"]
    - endpoints: ["n1:eth1", "sw:n1"]""",
        )


def test_controller_without_address_is_a_topology_error(tmp_path: Path) -> None:
    with pytest.raises(TopologyError) as err:
        lab(
            tmp_path,
            "    ctl: {kind: lispmesh-controller}\n    n1: {kind: lispmesh-node}",
            '    - endpoints: ["ctl:eth1", "sw:c"]\n    - endpoints: ["n1:eth1", "sw:n1"]',
        )
    assert str(err.value).startswith("w.clab.yml:6: nodes.ctl: ")
    assert "'ctl' has no address to listen on" in str(err.value)


def test_controller_with_its_own_cmd_cannot_be_wired(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="only makes join tokens for a controller it starts"):
        lab(
            tmp_path,
            "    c: {kind: lispmesh-controller, cmd: sleep 60}\n    n1: {kind: lispmesh-node}",
            '    - endpoints: ["c:eth1", "sw:c"]\n    - endpoints: ["n1:eth1", "sw:n1"]',
        )


def test_explicit_cmd_needs_no_wiring(tmp_path: Path) -> None:
    topo = lab(
        tmp_path,
        "    c: {kind: lispmesh-controller, cmd: sleep 60}\n    n1: {kind: lispmesh-node, "
        "cmd: sleep 60}",
        '    - endpoints: ["n1:eth1", "sw:n1"]',
    )
    assert plan(topo).nodes == ()


def test_start_order_controller_first_nodes_last() -> None:
    order = {k: KINDS[k].start_order for k in ("lispmesh-controller", "router", "lispmesh-node")}
    assert order["lispmesh-controller"] < order["router"] < order["lispmesh-node"]


@pytest.mark.parametrize("name", ["two-node", "edge-dual-uplink", "hub-spoke-nat", "demo"])
def test_examples_wire(name: str) -> None:
    env = {"LISPMESH": "lm", "PYTHONPATH_DIR": "/x", "LAB_STATE": "/s", "LISPMESH_TOKEN": "t"}
    topo = parse_file(EXAMPLES / f"{name}.clab.yml", env=env)
    wiring = plan(topo)
    if name == "demo":  # the demo passes its own commands
        assert wiring.nodes == ()
    else:
        assert wiring.controller and wiring.address
        assert set(wiring.nodes) == {
            n.name for n in topo.nodes.values() if n.kind == "lispmesh-node"
        }


def test_lispmesh_env_points_at_an_importable_checkout() -> None:
    env = dict(lispmesh_env())
    assert set(env) <= {"PYTHONPATH"}
