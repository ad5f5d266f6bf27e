"""Warm start: export the map-cache for a checkpoint, and restore it after a restart."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from typing import TYPE_CHECKING, Any

from lisp import RlocRecord
from lisp.map_cache import MapCacheEntry
from mesh.rloc_probing import probe

if TYPE_CHECKING:
    from mesh.xtr import Xtr


def export_mappings(xtr: Xtr) -> list[dict[str, Any]]:
    """The positive mappings we hold (prefixes and RLOCs, never keys), for a checkpoint."""
    return [
        {
            "iid": entry.iid,
            "prefix": str(entry.prefix),
            "rlocs": [
                {"address": str(r.address), "priority": r.priority, "weight": r.weight}
                for r in entry.rlocs
            ],
        }
        for entry in xtr.map_cache
        if not entry.negative and not entry.expired(xtr.now)
    ]


def import_mappings(xtr: Xtr, mappings: list[dict[str, Any]]) -> int:
    """Restore checkpointed mappings after a restart and probe their RLOCs with our new
    key: the peers answer directly, so the node is back in the mesh even while the
    map-resolver is unreachable. Returns how many were restored; bad items are skipped."""
    restored = 0
    for item in mappings:
        try:
            prefix = ip_network(item["prefix"])
            rlocs = tuple(
                RlocRecord(ip_address(r["address"]), int(r["priority"]), int(r["weight"]))
                for r in item["rlocs"]
            )
            iid = int(item["iid"])
        except (KeyError, TypeError, ValueError):
            xtr.drops["bad-checkpoint-mapping"] += 1
            continue
        if iid != xtr.iid or not rlocs or xtr.map_cache.exact(iid, prefix) is not None:
            continue
        ttl = xtr.timers.map_request_retry * 10 + 60.0  # until a fresh mapping replaces it
        xtr.map_cache.insert(
            MapCacheEntry(iid, prefix, rlocs, expires_at=xtr.now + ttl, installed_at=xtr.now)
        )
        for rloc in rlocs:
            xtr.prober.track(str(rloc.address), xtr.now)
        restored += 1
    if restored:
        probe(xtr, with_key=True)
    return restored
