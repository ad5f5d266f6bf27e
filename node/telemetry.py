"""What the node tells the controller: its state (sent when it changes) and its metrics
(sent periodically), both read from the runtime's status document."""

from __future__ import annotations

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
        peers=[
            status_pb2.Peer(
                name=p["name"],
                eid_prefixes=[_eid_text(e) for e in p.get("eids", [])],
                rloc=in_use.get(p["name"], ""),
            )
            for p in xtr.get("peers", [])
        ],
        map_cache_size=len(xtr.get("map_cache", [])),
        drops=drops,
        applied_version=applied_version,
        registered=bool(servers) and all(m.get("registered") for m in servers),
        agent_version=AGENT_VERSION,
    )


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
