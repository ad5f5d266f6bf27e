"""Warm start: export the map-cache for a checkpoint, and restore it after a restart."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from typing import Any

from lisp import RlocRecord
from lisp.map_cache import MapCacheEntry
from mesh.paths import PathTable
from mesh.rloc_probing import Prober
from mesh.xtr_context import XtrContext


class WarmStart:
    def __init__(self, ctx: XtrContext, paths: PathTable, prober: Prober) -> None:
        self.ctx = ctx
        self.paths = paths
        self.prober = prober

    def export_mappings(self) -> list[dict[str, Any]]:
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
            for entry in self.paths.map_cache
            if not entry.negative and not entry.expired(self.ctx.now)
        ]

    def import_mappings(self, mappings: list[dict[str, Any]]) -> int:
        """Restore checkpointed mappings after a restart and probe their RLOCs with our new
        key: the peers answer directly, so the node is back in the mesh even while the
        map-resolver is unreachable. Returns how many were restored; bad items are skipped."""
        ctx, cache = self.ctx, self.paths.map_cache
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
                ctx.drops["bad-checkpoint-mapping"] += 1
                continue
            if iid != ctx.iid or not rlocs or cache.exact(iid, prefix) is not None:
                continue
            ttl = ctx.timers.map_request_retry * 10 + 60.0  # until a fresh mapping replaces it
            cache.insert(
                MapCacheEntry(iid, prefix, rlocs, expires_at=ctx.now + ttl, installed_at=ctx.now)
            )
            for rloc in rlocs:
                ctx.prober.track(str(rloc.address), ctx.now)
            restored += 1
        if restored:
            self.prober.probe(with_key=True)
        return restored
