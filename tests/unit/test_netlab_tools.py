"""Parsing of tools flags and the CLI wiring (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lispmesh import cli as lispmesh_cli
from netlab import NetlabError, parse_file, tools

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("10mbit", 10_000_000),
        ("500kbit", 500_000),
        ("1gbit", 10**9),
        ("1000", 1_000_000),
        ("2mbps", 16_000_000),
        ("1.5mbit", 1_500_000),
    ],
)
def test_parse_rate(text: str, bits: int) -> None:
    assert tools.parse_rate(text) == bits


@pytest.mark.parametrize("bad", ["fast", "10 furlongs", "-1mbit", ""])
def test_parse_rate_rejects(bad: str) -> None:
    with pytest.raises(NetlabError):
        tools.parse_rate(bad)


def test_find_endpoint_by_written_or_kernel_name() -> None:
    topo = parse_file(EXAMPLES / "edge-dual-uplink.clab.yml")
    ep, peer = tools.find_endpoint(topo, "core:to-wifi-access-point")
    assert ep.ifname != ep.iface and len(ep.ifname) <= 15
    assert peer.node == "wifi-ap"
    assert tools.find_endpoint(topo, f"core:{ep.ifname}")[0] is ep
    with pytest.raises(NetlabError, match="has no link on edge:eth9"):
        tools.find_endpoint(topo, "edge:eth9")


def test_cli_graph_dot_and_mermaid(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        lispmesh_cli.main(["lab", "graph", "--dot", "-t", str(EXAMPLES / "two-node.clab.yml")]) == 0
    )
    assert capsys.readouterr().out.startswith('graph "two-node"')
    assert (
        lispmesh_cli.main(["lab", "graph", "--mermaid", "-t", str(EXAMPLES / "two-node.clab.yml")])
        == 0
    )
    assert "n_n1" in capsys.readouterr().out


def test_cli_help_lists_verbs() -> None:
    parser = lispmesh_cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["lab", "--help"])


def test_inspect_of_undeployed_lab_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    src = (EXAMPLES / "two-node.clab.yml").read_text()
    path = tmp_path / "two.clab.yml"
    path.write_text(src)
    assert lispmesh_cli.main(["lab", "inspect", "-t", str(path), "--format", "json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    row = data["containers"][0]
    assert set(row) >= {
        "lab_name",
        "labPath",
        "name",
        "container_id",
        "image",
        "kind",
        "state",
        "ipv4_address",
        "ipv6_address",
        "owner",
    }
    assert row["state"] == "absent" and row["name"] == "clab-two-node-n1"
