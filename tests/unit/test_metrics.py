"""Prometheus metrics: node families from a node's status, the controller's from a live
controller scraped over HTTP on loopback, listen addresses checked in one line."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from common.prometheus import MetricsError, parse_listen
from mesh.metrics import node_families
from node.state import StateDir
from tests.controller_harness import Running


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


class _Static:
    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status

    def collect(self) -> Any:
        return node_families(self.status)


STATUS: dict[str, Any] = {
    "name": "edge-1", "uptime": 12.5, "runtime_errors": {"tun-read": 2},
    "xtr": {
        "dataplane": "c",
        "map_cache": [{}, {}, {}],
        "drops": {"no-key": 4, "replay": 1},
        "keys": {"rekeys": 3},
        "uplinks": [{"interface": "eth1", "address": "10.0.0.1", "up": True},
                    {"interface": "wwan0", "address": "10.9.0.1", "up": False}],
        "map_servers": [{"address": "10.0.0.254", "registered": True, "registers_sent": 7}],
        "peers": [{"name": "edge-2", "rtt_ms": 1.5, "last_key_exchange_ago": 30.0,
                   "packets_sent": 10, "packets_received": 9, "bytes_sent": 1000,
                   "bytes_received": None,
                   "rlocs": [{"address": "10.0.0.2", "up": True, "rtt_ms": 1.5}]}],
        "policy": {"installed": True, "version": 4, "flows": 2,
                   "rules": {"egress": [{"id": 1, "name": "web", "action": "allow",
                                         "packets": 5, "bytes": 500}], "ingress": []},
                   "default_deny": {"egress": {"packets": 6, "bytes": 60},
                                    "ingress": {"packets": 0, "bytes": 0}}},
    },
    "map_server": {"registration_count": 2, "counters": {"map-register": 11}},
}  # fmt: skip


def test_node_families_follow_the_status() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Static(STATUS))  # type: ignore[arg-type]
    got = samples(generate_latest(registry).decode())
    assert got[("lispmesh_node_info", (("dataplane", "c"), ("node", "edge-1")))] == 1
    assert got[("lispmesh_drops_total", (("reason", "no-key"),))] == 4
    assert got[("lispmesh_map_cache_entries", ())] == 3
    assert got[("lispmesh_uplink_up", (("address", "10.9.0.1"), ("interface", "wwan0")))] == 0
    assert got[("lispmesh_peer_sent_bytes_total", (("peer", "edge-2"),))] == 1000
    assert ("lispmesh_peer_received_bytes_total", (("peer", "edge-2"),)) not in got  # unknown
    assert got[("lispmesh_peer_rtt_seconds", (("peer", "edge-2"),))] == pytest.approx(0.0015)
    rule = (("action", "allow"), ("direction", "egress"), ("name", "web"), ("rule", "1"))
    assert got[("lispmesh_policy_rule_packets_total", rule)] == 5
    assert got[("lispmesh_policy_default_deny_packets_total", (("direction", "egress"),))] == 6
    assert got[("lispmesh_map_server_events_total", (("event", "map-register"),))] == 11
    assert got[("lispmesh_runtime_errors_total", (("kind", "tun-read"),))] == 2


def test_a_bare_status_still_gives_families() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Static({"name": "x"}))  # type: ignore[arg-type]
    assert "lispmesh_node_info" in generate_latest(registry).decode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [(":9100", ("127.0.0.1", 9100)), ("0.0.0.0:9", ("0.0.0.0", 9)), ("[::1]:80", ("::1", 80)),
     ("10.1.2.3", ("10.1.2.3", 9464)), ("", ("127.0.0.1", 9464))],
)  # fmt: skip
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["host:99", "1.2.3.4:-1", "1.2.3.4:70000", "[::1]:x", "a:b:c"])
def test_bad_listen_addresses_are_one_line(text: str) -> None:
    with pytest.raises(MetricsError, match="use HOST:PORT"):
        parse_listen(text)


def test_the_controller_serves_metrics(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    ctl = Running(loop, tmp_path / "ctl", metrics_listen="127.0.0.1:0")
    try:
        exporter = ctl.controller.exporter
        assert exporter is not None
        host, port = exporter.address
        ctl.enroll(StateDir(tmp_path / "n1"), ctl.token())

        def scrape() -> str:
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as reply:
                return str(reply.read().decode())

        # The scrape is served on the loop: run the loop while the HTTP thread waits for it.
        text = loop.run_until_complete(asyncio.to_thread(scrape))
        got = samples(text)
        assert got[("lispmesh_controller_nodes", (("state", "enrolled"),))] == 1
        assert got[("lispmesh_controller_enrollments_total", ())] == 1
        assert got[("lispmesh_controller_watch_streams", ())] == 0
        assert ("lispmesh_map_server_registrations", ()) in got
        assert got[("lispmesh_controller_scrape_timeouts_total", ())] == 0
    finally:
        ctl.stop()
        loop.close()
