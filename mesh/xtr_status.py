"""The status of an xTR as JSON-ready data: mappings, uplinks, registrations, keys, drops."""

from __future__ import annotations

from collections import Counter
from typing import Any

from lisp import Action
from mesh.nat_check import NatCheck
from mesh.paths import PathTable
from mesh.peer_stats import PeerTable, rtt_ms
from mesh.registrar import Registrar
from mesh.revocation import Revocation
from mesh.xtr_context import XtrContext


def map_cache_rows(ctx: XtrContext, table: PathTable) -> list[dict[str, Any]]:
    now = ctx.now
    entries = []
    for entry in table.map_cache:
        path = table.paths.get((entry.iid, entry.prefix))
        entries.append(
            {
                "iid": entry.iid,
                "prefix": str(entry.prefix),
                "action": Action(entry.action).name if entry.negative else None,
                "ttl_remaining": round(entry.remaining(now), 1),
                "rlocs": [
                    {
                        "address": str(r.address),
                        "priority": r.priority,
                        "weight": r.weight,
                        "up": ctx.prober.is_up(str(r.address), now),
                        "rtt_ms": rtt_ms(ctx, str(r.address)),
                    }
                    for r in entry.rlocs
                ],
                "in_use": path.remote[0] if path else None,
                "peer": path.encap.peer_name if path else None,
                "key_id": path.encap.key_id if path else None,
            }
        )
    return entries


def status(
    ctx: XtrContext,
    table: PathTable,
    registrar: Registrar,
    peers: PeerTable,
    revocation: Revocation,
    policy: dict[str, Any],
    nat: NatCheck | None = None,
) -> dict[str, Any]:
    now = ctx.now
    keys = ctx.keys
    return {
        "eid_prefixes": [str(p) for p in ctx.xcfg.eid_prefixes],
        "eid_addresses": [str(a) for a in ctx.xcfg.eid_addresses],
        "instance_id": ctx.iid,
        "uplinks": [
            {
                "address": str(r.address),
                "interface": r.interface,
                "priority": r.priority,
                "weight": r.weight,
                "up": r.up,
                **({"nat": nat.uplink_status(r.key)} if nat is not None else {}),
            }
            for r in ctx.locals
        ],
        "map_servers": registrar.status(),
        "map_cache": map_cache_rows(ctx, table),
        "peers": peers.rows(now),
        "keys": {
            "cipher_suite": keys.cipher_suite,
            "itr_key_id": keys.epoch.key_id,
            "rekeys": keys.rekeys,
            "encap": [
                {"peer": s.peer_name, "key_id": s.key_id, "packets": s.counter}
                for s in keys.encap.values()
            ],
            "decap": [
                {"rloc": rloc, "key_id": kid, "peer": s.peer_name, "packets": s.packets}
                for (rloc, kid), s in keys.decap.items()
            ],
        },
        "revoked_peers": sorted(revocation.revoked),
        "drops": all_drops(ctx),
        "policy": policy,
        "dataplane": ctx.datapath.name,
        "stats": dict(ctx.stats),
        "path_mtu": ctx.pmtu.status(ctx.now),
        "datapath_stats": ctx.datapath.stats(),
        "errors": list(ctx.errors),
    }


def all_drops(ctx: XtrContext) -> dict[str, int]:
    drops = Counter(ctx.drops)
    drops.update(ctx.datapath.drop_counts())
    return dict(drops)
