"""The topology document and its renderers (table, tree, DOT, mermaid, SVG), and the node-side
renderers, from fixture data: no lab, no root."""

from __future__ import annotations

import io
import shutil
import subprocess
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from rich.console import Console

from controller_api.gen.lispmesh.v1 import admin_pb2, common_pb2, status_pb2
from lispmesh.topology_model import ACTIVE, DOWN, document
from lispmesh.views import graph as render_graph
from lispmesh.views import node as render_node
from lispmesh.views import topology as render_topology


def _peer(name: str, local: str, rloc: str, rtt: float, up: bool = True) -> status_pb2.Peer:
    return status_pb2.Peer(
        name=name, eid_prefixes=["10.250.9.0/24"], rloc=rloc, path="direct", local_rloc=local,
        rtt_ms=rtt, encrypted=True, rlocs=[status_pb2.RlocState(address=rloc, up=up, rtt_ms=rtt)],
        packets_sent=3, bytes_sent=300, packets_received=2, bytes_received=200,
    )  # fmt: skip


def _node(name: str, state: str, uplinks: list[tuple[str, str, bool]], peers: list[Any]) -> Any:
    info = admin_pb2.NodeInfo(
        node_id=f"id-{name}", name=name, state=state, eid_prefixes=[f"10.250.{len(name)}.0/24"],
        uplinks=[common_pb2.Uplink(interface=i, address=a, up=u) for i, a, u in uplinks],
    )  # fmt: skip
    return admin_pb2.TopologyNode(node=info, peers=[p.name for p in peers], peer_paths=peers)


@pytest.fixture
def topology() -> dict[str, Any]:
    message = admin_pb2.Topology(
        controller_address="10.77.0.1:7443",
        map_servers=["10.77.0.1:4342"],
        eid_pools=["10.250.0.0/16"],
        generated_at="2026-11-22T10:00:00Z",
        nodes=[
            _node("a", "online", [("eth1", "10.77.0.11", True), ("eth2", "10.78.0.11", False)],
                  [_peer("b", "10.77.0.11", "10.77.0.12", 1.5),
                   _peer("c", "10.77.0.11", "10.77.0.13", 0.0, up=False)]),
            _node("b", "online", [("eth1", "10.77.0.12", True)],
                  [_peer("a", "10.77.0.12", "10.77.0.11", 2.5)]),
            _node("c", "offline", [("eth1", "10.77.0.13", True)], []),
            _node("gone", "revoked", [], [_peer("a", "10.77.0.14", "10.77.0.11", 1.0)]),
        ],
    )  # fmt: skip
    return document(message)


def test_links_combine_both_directions(topology: dict[str, Any]) -> None:
    links = {(link["a"], link["b"]): link for link in topology["links"]}
    assert set(links) == {("a", "b"), ("a", "c")}  # a revoked node's view is not a link
    ab = links[("a", "b")]
    assert ab["state"] == ACTIVE and ab["type"] == "direct" and ab["encrypted"]
    assert ab["rtt_ms"] == 2.0  # the mean of both directions
    assert ab["a_to_b"]["rloc"] == "10.77.0.12" and ab["b_to_a"]["rloc"] == "10.77.0.11"
    ac = links[("a", "c")]
    assert ac["state"] == DOWN and ac["b_to_a"] is None and ac["rtt_ms"] is None


def _text(renderable: Any) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined, no-any-return]


def test_table_and_tree_show_nodes_uplinks_and_paths(topology: dict[str, Any]) -> None:
    table = _text(render_topology.table(topology))
    assert "eth2 10.78.0.11 DOWN" in table and "eth1 10.77.0.11 up" in table
    assert "a ↔ b" in table and "2.00 ms" in table and "active" in table and "down" in table
    tree = _text(render_topology.tree(topology))
    assert "b: direct, encrypted, 10.77.0.11 → 10.77.0.12, RTT 1.50 ms" in tree
    assert "offline" in tree


def test_dot_and_mermaid(topology: dict[str, Any]) -> None:
    dot = render_graph.to_dot(topology)
    assert dot.startswith('graph "lispmesh" {') and dot.rstrip().endswith("}")
    assert '"node:a" -- "node:b" [label="direct 2.00 ms", style=solid' in dot
    assert '"node:a" -- "node:c" [label="direct -", style=dashed' in dot
    assert "eth2 10.78.0.11 DOWN" in dot
    mermaid = render_graph.to_mermaid(topology)
    assert mermaid.startswith("graph LR") and 'n_a ===|"direct 2.00 ms"| n_b' in mermaid
    assert 'n_a -.-|"direct - DOWN"| n_c' in mermaid


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz")
def test_dot_renders_and_svg_is_xml(topology: dict[str, Any]) -> None:
    result = subprocess.run(["dot", "-Tsvg"], input=render_graph.to_dot(topology),
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 0, result.stderr
    root = ET.fromstring(render_graph.to_svg(topology))
    assert root.tag.endswith("svg")
    page = render_graph.to_html(topology)
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "<?xml" not in page


def test_node_renderers() -> None:
    peer = {
        "name": "b", "eids": ["10.250.1.0/24"], "path": "direct", "rloc": "10.77.0.12",
        "local_rloc": "10.77.0.11", "last_key_exchange_ago": 3.0, "bytes_sent": 2048,
        "packets_sent": 4, "bytes_received": None, "packets_received": 1, "rtt_ms": 0.5,
    }  # fmt: skip
    status = {
        "name": "a", "roles": ["xtr"], "uptime": 5,
        "agent": {"node_id": "n1", "controller_address": "10.77.0.1:7444",
                  "controller_state": "connected", "controller": "connected since x"},
        "xtr": {"eid_prefixes": ["10.250.0.0/24"], "instance_id": 0,
                "uplinks": [{"interface": "eth1", "address": "10.77.0.11", "up": True,
                             "nat": {"state": "nat", "translated": "203.0.113.7:40342",
                                     "mapping": "endpoint-dependent"}}],
                "map_servers": [{"address": "10.77.0.1", "registered": True}], "peers": [peer]},
    }  # fmt: skip
    console = Console(file=io.StringIO(), width=200, color_system=None)
    render_node.status(status, console)
    render_node.map_cache(
        [{"prefix": "10.250.1.0/24", "peer": "b", "ttl_remaining": 899.0, "in_use": "10.77.0.12",
          "rlocs": [{"address": "10.77.0.12", "priority": 1, "up": True, "rtt_ms": 0.5}]}],
        console,
    )  # fmt: skip
    render_node.ping(
        {"eid": "10.250.1.1", "prefix": "10.250.1.0/24", "peer": "b", "path": "direct",
         "rloc_in_use": "10.77.0.12", "lookup": None,
         "probes": [{"seq": 1, "rloc": "10.77.0.12", "answered_by": "10.77.0.12", "replied": True,
                     "in_use": True, "local_rloc": "10.77.0.11", "path": "direct", "rtt_ms": 0.4}],
         "rlocs": [{"rloc": "10.77.0.12", "sent": 1, "received": 1, "min_ms": 0.4, "avg_ms": 0.4,
                    "max_ms": 0.4}], "replies": 1},
        console,
    )  # fmt: skip
    render_node.trace(
        {"eid": "10.250.1.1", "prefix": "10.250.1.0/24", "peer": "b", "path": "direct",
         "reached": True,
         "hops": [{"hop": 1, "role": "itr", "name": "a", "rloc": "10.77.0.11", "rtt_ms": 0.0},
                  {"hop": 2, "role": "map-resolver", "name": None, "rloc": "10.77.0.1",
                   "rtt_ms": 1.0, "answered_by": "10.77.0.12"},
                  {"hop": 3, "role": "etr", "name": "b", "rloc": "10.77.0.12", "rtt_ms": 0.4,
                   "answered_by": "10.77.0.12"}]},
        console,
    )  # fmt: skip
    render_node.netcheck(
        {"uplinks": [{"interface": "eth1", "address": "10.77.0.11", "up": False},
                     {"interface": "eth2", "address": "10.78.0.11", "up": True, "state": "none"},
                     {"interface": "eth3", "address": "10.79.0.11", "up": True, "state": "nat",
                      "translated": "203.0.113.7:40342", "mapping": "endpoint-independent",
                      "direct": "hole-punching"}],
         "nat": {"detail": "eth2 not behind NAT"},
         "controller": {"address": "10.77.0.1:7444", "reachable": False, "error": "refused",
                        "rtt_ms": None, "state": "unreachable"},
         "map_servers": [], "map_resolvers": ["10.77.0.1"], "problems": ["uplink eth1 is down"]},
        console,
    )  # fmt: skip
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "2.0 KiB (4 pkts)" in out and "- (1 pkts)" in out and "3 s ago" in out
    assert "10.77.0.12 p1 up 0.50 ms" in out
    assert "reply from 10.77.0.12 (in use) via 10.77.0.11: seq=1 path=direct time=0.40 ms" in out
    assert "map-resolver" in out and "(answered by 10.77.0.12)" in out
    assert "eth1 10.77.0.11: DOWN" in out and "problem: uplink eth1 is down" in out
    assert "behind NAT as 203.0.113.7:40342 (endpoint-dependent)" in out  # status, uplinks
    assert "(endpoint-independent, direct: hole-punching)" in out
    assert "eth2 10.78.0.11: up, no NAT" in out and "NAT: eth2 not behind NAT" in out


def test_significant_report_ignores_rtts_and_counters() -> None:
    from node.telemetry import significant

    one = status_pb2.StatusReport(peers=[_peer("b", "10.77.0.11", "10.77.0.12", 1.5)])
    two = status_pb2.StatusReport(peers=[_peer("b", "10.77.0.11", "10.77.0.12", 9.0)])
    two.peers[0].bytes_sent = 999
    assert significant(one) == significant(two) and one != two
    down = status_pb2.StatusReport(peers=[_peer("b", "10.77.0.11", "10.77.0.12", 1.5, up=False)])
    assert significant(one) != significant(down)
