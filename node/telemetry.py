"""What the node tells the controller: its state (sent when it changes) and its metrics
(sent periodically), both read from the runtime's status document."""

from __future__ import annotations

import json
import os
import resource
import time
from typing import Any

from controller_api.gen.lispmesh.v1 import common_pb2, status_pb2
from node.enroll import AGENT_VERSION

_PAGE = os.sysconf("SC_PAGE_SIZE")


def status_report(status: dict[str, Any], applied_version: int) -> status_pb2.StatusReport:
    xtr = status.get("xtr") or {}
    in_use: dict[str, str] = {}
    for entry in xtr.get("map_cache", []):
        if entry.get("peer") and entry.get("in_use"):
            in_use.setdefault(entry["peer"], entry["in_use"])
    drops = {k: int(v) for k, v in (xtr.get("drops") or {}).items()}
    drops.update({f"runtime-{k}": int(v) for k, v in status.get("runtime_errors", {}).items()})
    servers = xtr.get("map_servers", [])
    return status_pb2.StatusReport(
        uplinks=[
            common_pb2.Uplink(interface=u.get("interface") or "", address=u["address"], up=u["up"])
            for u in xtr.get("uplinks", [])
        ],
        peers=[_peer(p, in_use.get(p["name"], "")) for p in xtr.get("peers", [])],
        map_cache_size=len(xtr.get("map_cache", [])),
        drops=drops,
        applied_version=applied_version,
        registered=bool(servers) and all(m.get("registered") for m in servers),
        agent_version=AGENT_VERSION,
        policy_json=_policy_json(xtr.get("policy")),
    )


def _policy_json(policy: Any) -> str:
    """The policy section of the xTR's status (version, rule counters, flow log) as JSON."""
    return json.dumps(policy, sort_keys=True) if isinstance(policy, dict) else ""


def _policy_head(policy_json: str) -> str:
    """What of the policy section is state, not traffic: installed and which version."""
    if not policy_json:
        return ""
    policy = json.loads(policy_json)
    return json.dumps({k: policy.get(k) for k in ("installed", "version", "enforced_by")})


def _peer(p: dict[str, Any], in_use: str) -> status_pb2.Peer:
    return status_pb2.Peer(
        name=p["name"],
        eid_prefixes=[_eid_text(e) for e in p.get("eids", [])],
        rloc=p.get("rloc") or in_use,
        path=p.get("path") or "",
        local_rloc=p.get("local_rloc") or "",
        rtt_ms=p.get("rtt_ms") or 0.0,
        encrypted=bool(p.get("encrypted")),
        rlocs=[
            status_pb2.RlocState(
                address=r["address"], up=bool(r.get("up")), rtt_ms=r.get("rtt_ms") or 0.0
            )
            for r in p.get("rlocs", [])
        ],
        packets_sent=p.get("packets_sent") or 0,
        bytes_sent=p.get("bytes_sent") or 0,
        packets_received=p.get("packets_received") or 0,
        bytes_received=p.get("bytes_received") or 0,
        last_key_exchange_ago=p.get("last_key_exchange_ago") or 0.0,
    )


def significant(report: status_pb2.StatusReport) -> status_pb2.StatusReport:
    """The report without what changes all the time (RTTs, traffic counters, ages): a change
    in what remains (an uplink or RLOC up/down, a peer, a path) is reported at once; the
    volatile figures ride along with it, or with the periodic refresh."""
    stable = status_pb2.StatusReport()
    stable.CopyFrom(report)
    for peer in stable.peers:
        measured = peer.rtt_ms > 0
        for name in _VOLATILE_PEER_FIELDS:
            peer.ClearField(name)
        peer.rtt_ms = 1.0 if measured else 0.0  # a first RTT is news; later ones are not
        for rloc in peer.rlocs:
            rloc.rtt_ms = 1.0 if rloc.rtt_ms > 0 else 0.0
    stable.policy_json = _policy_head(stable.policy_json)  # counters and flow log: volatile
    for workload in stable.workloads:
        workload.memory_bytes, workload.cpu_seconds = 0, 0.0
    return stable


def without_ages(report: status_pb2.StatusReport) -> status_pb2.StatusReport:
    """The report without the figures that change by time passing alone (ages): the periodic
    refresh goes out only when something was measured anew (an RTT, a counter), so an idle
    node reports nothing."""
    timeless = status_pb2.StatusReport()
    timeless.CopyFrom(report)
    for peer in timeless.peers:
        peer.ClearField("last_key_exchange_ago")
    return timeless


_VOLATILE_PEER_FIELDS = (
    "rtt_ms", "packets_sent", "bytes_sent", "packets_received", "bytes_received",
    "last_key_exchange_ago",
)  # fmt: skip


def _eid_text(eid: Any) -> str:
    """A peer EID as the runtime shows it: "10.1.0.0/24", or [iid, "10.1.0.0/24"]."""
    if isinstance(eid, list | tuple) and len(eid) == 2:
        return f"[{eid[0]}]{eid[1]}"
    return str(eid)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def metrics(status: dict[str, Any], started: float) -> status_pb2.Metrics:
    xtr = status.get("xtr") or {}
    counters = {f"stats.{k}": int(v) for k, v in (xtr.get("stats") or {}).items()}
    counters.update({f"drops.{k}": int(v) for k, v in (xtr.get("drops") or {}).items()})
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return status_pb2.Metrics(
        counters=counters,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        rss_bytes=_rss_bytes(),
        uptime_seconds=time.monotonic() - started,
    )
