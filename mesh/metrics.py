"""A node's Prometheus metrics, built from its status (the same figures `lispmesh status` shows).

Reading the status document rather than the xTR's objects keeps one source of truth for every
number an operator sees, in the CLI and in Prometheus. Names follow Prometheus conventions:
`lispmesh_` prefix, base units (seconds, bytes), `_total` on counters (added by the client).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import Metric

from common.prometheus import counter, gauge


def node_families(status: dict[str, Any]) -> Iterator[Metric]:
    info = gauge("lispmesh_node_info", "the node (value 1)", labels=["node", "dataplane"])
    xtr = status.get("xtr") or {}
    info.add_metric([status.get("name", ""), xtr.get("dataplane", "")], 1)
    yield info
    yield gauge("lispmesh_uptime_seconds", "seconds since the node started", status.get("uptime"))
    errors = counter("lispmesh_runtime_errors", "runtime errors by kind", labels=["kind"])
    for kind, count in sorted((status.get("runtime_errors") or {}).items()):
        errors.add_metric([kind], count)
    yield errors
    if xtr:
        yield from _xtr_families(xtr)
    if status.get("map_server"):
        yield from _map_server_families(status["map_server"])


def _xtr_families(xtr: dict[str, Any]) -> Iterator[Metric]:
    yield gauge("lispmesh_map_cache_entries", "map-cache entries", len(xtr.get("map_cache", [])))
    drops = counter("lispmesh_drops", "packets dropped, by reason", labels=["reason"])
    for reason, count in sorted(xtr.get("drops", {}).items()):
        drops.add_metric([reason], count)
    yield drops
    keys = xtr.get("keys", {})
    yield counter("lispmesh_rekeys", "rekeys of this node's ITR key", keys.get("rekeys", 0))
    uplink = gauge("lispmesh_uplink_up", "1 if the uplink (RLOC) is up", labels=["interface",
                   "address"])  # fmt: skip
    for row in xtr.get("uplinks", []):
        uplink.add_metric([row["interface"] or "", row["address"]], 1 if row["up"] else 0)
    yield uplink
    registered = gauge("lispmesh_registered", "1 if registered with the map-server",
                       labels=["map_server"])  # fmt: skip
    registers = counter("lispmesh_map_registers_sent", "Map-Registers sent",
                        labels=["map_server"])  # fmt: skip
    for row in xtr.get("map_servers", []):
        registered.add_metric([row["address"]], 1 if row["registered"] else 0)
        registers.add_metric([row["address"]], row["registers_sent"])
    yield registered
    yield registers
    yield from _peer_families(xtr.get("peers", []))
    yield from _policy_families(xtr.get("policy", {}))


def _peer_families(peers: list[dict[str, Any]]) -> Iterator[Metric]:
    labels = ["peer"]
    traffic = {
        (direction, unit): counter(
            f"lispmesh_peer_{direction}_{unit}",
            f"{unit} {direction} to/from the peer",
            labels=labels,
        )
        for direction in ("sent", "received")
        for unit in ("packets", "bytes")
    }
    rtt = gauge(
        "lispmesh_peer_rtt_seconds", "RLOC-probe round trip on the path in use", labels=labels
    )
    kx_age = gauge("lispmesh_peer_key_exchange_age_seconds", "seconds since the last key exchange",
                   labels=labels)  # fmt: skip
    rloc_up = gauge("lispmesh_peer_rloc_up", "1 if the peer's RLOC answers probes",
                    labels=["peer", "rloc"])  # fmt: skip
    rloc_rtt = gauge("lispmesh_peer_rloc_rtt_seconds", "probe round trip per RLOC",
                     labels=["peer", "rloc"])  # fmt: skip
    for peer in peers:
        name = peer["name"]
        for (direction, unit), family in traffic.items():
            value = peer.get(f"{unit}_{direction}")
            if value is not None:
                family.add_metric([name], int(value))
        if peer.get("rtt_ms") is not None:
            rtt.add_metric([name], peer["rtt_ms"] / 1000)
        if peer.get("last_key_exchange_ago") is not None:
            kx_age.add_metric([name], peer["last_key_exchange_ago"])
        for rloc in peer.get("rlocs", []):
            rloc_up.add_metric([name, rloc["address"]], 1 if rloc["up"] else 0)
            if rloc.get("rtt_ms") is not None:
                rloc_rtt.add_metric([name, rloc["address"]], rloc["rtt_ms"] / 1000)
    yield from traffic.values()
    yield from (rtt, kx_age, rloc_up, rloc_rtt)


def _policy_families(policy: dict[str, Any]) -> Iterator[Metric]:
    if not policy.get("installed"):
        return
    yield gauge("lispmesh_policy_version", "the enforced policy version", policy["version"])
    yield gauge("lispmesh_policy_flows", "tracked flows", policy["flows"])
    labels = ["direction", "rule", "name", "action"]
    packets = counter("lispmesh_policy_rule_packets", "packets a rule decided", labels=labels)
    octets = counter("lispmesh_policy_rule_bytes", "bytes a rule decided", labels=labels)
    for direction, rules in sorted(policy.get("rules", {}).items()):
        for rule in rules:
            key = [direction, str(rule["id"]), rule["name"] or "", rule["action"]]
            packets.add_metric(key, rule["packets"])
            octets.add_metric(key, rule["bytes"])
    yield packets
    yield octets
    denied = counter("lispmesh_policy_default_deny_packets", "packets no rule allowed",
                     labels=["direction"])  # fmt: skip
    for direction, row in sorted(policy.get("default_deny", {}).items()):
        denied.add_metric([direction], row["packets"])
    yield denied


def _map_server_families(ms: dict[str, Any]) -> Iterator[Metric]:
    yield gauge("lispmesh_map_server_registrations", "live registrations", ms["registration_count"])
    events = counter("lispmesh_map_server_events", "map-server messages and refusals, by kind",
                     labels=["event"])  # fmt: skip
    for name, count in sorted(ms.get("counters", {}).items()):
        events.add_metric([name], count)
    yield events
