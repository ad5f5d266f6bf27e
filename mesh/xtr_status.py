"""The status of an xTR as JSON-ready data: mappings, uplinks, registrations, keys, drops."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from lisp import Action
from mesh.peer_stats import peer_rows, rtt_ms
from mesh.xtr_types import FAST_DROP_REASONS

if TYPE_CHECKING:
    from mesh.xtr import Xtr


def status(xtr: Xtr) -> dict[str, Any]:
    now = xtr.now
    if xtr.fast is not None:
        xtr.fast.read_counters(now)  # exact figures, not the last tick's
    entries = []
    for entry in xtr.map_cache:
        path = xtr.paths.get((entry.iid, entry.prefix))
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
                        "up": xtr.prober.is_up(str(r.address), now),
                        "rtt_ms": rtt_ms(xtr, str(r.address)),
                    }
                    for r in entry.rlocs
                ],
                "in_use": path.remote[0] if path else None,
                "peer": path.encap.peer_name if path else None,
                "key_id": path.encap.key_id if path else None,
            }
        )
    return {
        "eid_prefixes": [str(p) for p in xtr.xcfg.eid_prefixes],
        "eid_addresses": [str(a) for a in xtr.xcfg.eid_addresses],
        "instance_id": xtr.iid,
        "uplinks": [
            {
                "address": str(r.address),
                "interface": r.interface,
                "priority": r.priority,
                "weight": r.weight,
                "up": r.up,
            }
            for r in xtr.locals
        ],
        "map_servers": [
            {
                "address": key,
                "registered": reg.registered,
                "registers_sent": reg.sent_count,
                "notifies": reg.notify_count,
            }
            for key, (_, reg) in xtr.registrations.items()
        ],
        "map_cache": entries,
        "peers": peer_rows(xtr, now),
        "keys": {
            "cipher_suite": xtr.keys.cipher_suite,
            "itr_key_id": xtr.keys.epoch.key_id,
            "rekeys": xtr.keys.rekeys,
            "encap": [
                {"peer": s.peer_name, "key_id": s.key_id, "packets": s.counter}
                for s in xtr.keys.encap.values()
            ],
            "decap": [
                {"rloc": rloc, "key_id": kid, "peer": s.peer_name, "packets": s.packets}
                for (rloc, kid), s in xtr.keys.decap.items()
            ],
        },
        "revoked_peers": sorted(xtr.revoked),
        "drops": all_drops(xtr),
        "policy": xtr._policy_status(),
        "dataplane": "c" if xtr.fast is not None else "python",
        "stats": dict(xtr.stats),
        "errors": list(xtr.errors),
    }


def all_drops(xtr: Xtr) -> dict[str, int]:
    drops = Counter(xtr.drops)
    if xtr.fast is not None:
        stats = xtr.fast.stats()
        for reason in FAST_DROP_REASONS:
            if stats.get(reason):
                drops[reason] += stats[reason]
    return dict(drops)
