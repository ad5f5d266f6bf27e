"""The apps as network policies see them (controller_api.policy.inventory.InventoryApp): each
deployed app's labels and its replicas placed now, with the node hosting each and its EIDs.

Read from the Store (the apps' records, the placements, the EID pool), so every controller
replica resolves `app:NAME` and label selectors alike. A replica with two copies (a replacement
while the original is unreachable) counts at the newest, as the map-server's allowances do.
"""

from __future__ import annotations

from controller_api.apps.eids import AppPool, eids_by_replica
from controller_api.apps.registry import list_apps
from controller_api.apps.workloads import eid_of, eid_prefixes
from controller_api.placement.commit import read_allocations
from controller_api.policy.inventory import InventoryApp, InventoryReplica
from controller_api.store import Store


def policy_apps(store: Store, pool: AppPool) -> tuple[InventoryApp, ...]:
    table = eids_by_replica(store, pool)
    newest: dict[tuple[str, int], tuple[float, str]] = {}
    for a in read_allocations(store):
        seen = newest.get((a.app, a.replica))
        if seen is None or (a.created, a.node) > seen:
            newest[(a.app, a.replica)] = (a.created, a.node)
    placed: dict[str, list[InventoryReplica]] = {}
    for (app, replica), (_, node) in sorted(newest.items()):
        eid = eid_of(table, app, replica)
        if eid is not None:
            placed.setdefault(app, []).append(
                InventoryReplica(replica, node, tuple(eid_prefixes(eid)))
            )
    return tuple(
        InventoryApp(d.spec.name, d.spec.labels, tuple(placed.get(d.spec.name, ())))
        for d in list_apps(store)
    )
