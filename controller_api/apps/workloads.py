"""What the desired-state fan-out gives a node for its app replicas: the `Workload` messages of
the allocations committed to it, and the EIDs the map-server lets it register for them.

A node's workloads come from its own placement record (one read), the specs of the apps on it
and the app pool's record: building one node's state never reads every other node's rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network, ip_network

from controller_api.apps.eids import ANYCAST, AppEid, AppPool, eids_by_replica
from controller_api.apps.registry import Deployed, get_app
from controller_api.gen.lispmesh.v1 import config_pb2
from controller_api.placement.commit import read_allocations, read_node_allocations
from controller_api.placement.model import Allocation
from controller_api.store import Store

NAME_MAX = 40  # the node's workload names (node/workloads/supervisor.py NAME)


def workload_name(app: str, replica: int) -> str:
    """`<app>-<replica>`, shortened with a digest of the app name when that is too long."""
    name = f"{app}-{replica}"
    if len(name) <= NAME_MAX:
        return name
    digest = hashlib.sha256(app.encode()).hexdigest()[:6]
    keep = NAME_MAX - len(f"-{digest}-{replica}")
    return f"{app[:keep].rstrip('-')}-{digest}-{replica}"


def eid_of(table: dict[tuple[str, int], AppEid], app: str, replica: int) -> AppEid | None:
    return table.get((app, replica)) or table.get((app, ANYCAST))


def eid_prefixes(eid: AppEid) -> list[IPv4Network | IPv6Network]:
    return [ip_network(f"{eid.ipv4}/32"), ip_network(f"{eid.ipv6}/128")]


def workload(a: Allocation, deployed: Deployed, eid: AppEid | None) -> config_pb2.Workload:
    spec = deployed.spec_of(a.version)
    digest = spec.image.rpartition("@")[2]
    r = spec.resources
    return config_pb2.Workload(
        name=workload_name(a.app, a.replica),
        app=a.app,
        replica=a.replica,
        image=spec.image,
        image_digest=digest,
        image_source=f"file://{spec.source}" if spec.source else "",
        kind=spec.kind,
        resources=config_pb2.WorkloadResources(
            memory_bytes=r.memory, millicpu=r.millicpu, disk_bytes=r.disk
        ),
        ports=[str(p) for p in spec.ports],
        env=dict(spec.env),
        labels=dict(spec.labels),
        eids=[str(p) for p in eid_prefixes(eid)] if eid else [],
        version=spec.version,
    )


def node_workloads(store: Store, node: str, pool: AppPool) -> list[config_pb2.Workload]:
    """The workloads of every replica committed to `node`, by name."""
    allocations = read_node_allocations(store, node)
    if not allocations:
        return []
    table = eids_by_replica(store, pool)
    apps: dict[str, Deployed | None] = {}
    out = []
    for a in allocations:
        if a.app not in apps:
            apps[a.app] = get_app(store, a.app)
        deployed = apps[a.app]
        if deployed is None:
            continue  # removed: the controller's loop stops it next round
        out.append(workload(a, deployed, eid_of(table, a.app, a.replica)))
    return sorted(out, key=lambda w: w.name)


def allowances(
    store: Store, pool: AppPool, allocations: Iterable[Allocation] | None = None
) -> dict[str, list[IPv4Network | IPv6Network]]:
    """node name -> the app EIDs it may register (its replicas'). An anycast EID is allowed to
    one node only for now: the map-server takes one site per prefix. A replica with two copies
    is registered from the newest one that runs, else from the newest: a replacement for a copy
    on a lost node at once (commit_plan marks that copy not running), one for a copy on a
    draining node once it runs (make-before-break: the old copy serves until then)."""
    table = eids_by_replica(store, pool)
    out: dict[str, list[IPv4Network | IPv6Network]] = {}
    given: set[AppEid] = set()
    found = allocations if allocations is not None else read_allocations(store)
    for a in sorted(found, key=lambda a: (not a.running, -a.created, a.node, a.app, a.replica)):
        eid = eid_of(table, a.app, a.replica)
        if eid is None or eid in given:
            continue
        given.add(eid)
        out.setdefault(a.node, []).extend(eid_prefixes(eid))
    return out
