"""The desired state of one node: built from its row and the controller's settings, versioned.

The version is bumped exactly when the document changes (its deterministic serialization is
hashed and compared with the stored hash), so it is monotonic per node and survives restarts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Network, IPv6Network

from controller_api.gen.lispmesh.v1 import config_pb2
from controller_api.settings import ControllerSettings, Pools
from controller_api.store import NodeRow, Store


def first_host(prefix: IPv4Network | IPv6Network) -> str:
    return str(prefix.network_address + 1)


def build(
    node: NodeRow,
    settings: ControllerSettings,
    pools: Pools,
    map_server_address: str,
    policy: config_pb2.Policy | None = None,
    revoked_nodes: list[str] | None = None,
    retired_certificates: list[str] | None = None,
    map_servers: Sequence[tuple[str, int]] = (),
    workloads: list[config_pb2.Workload] | None = None,
    app_pools: tuple[IPv4Network, IPv6Network] | None = None,
    delegated: Mapping[str, Sequence[IPv4Network | IPv6Network]] | None = None,
) -> config_pb2.DesiredState:
    """The document without its version. `policy`: the node's compiled network policy (None:
    no policy installed, the node allows everything). `revoked_nodes`: the names of every
    revoked node, whose keys the node's xTR must drop and refuse. `retired_certificates`: the
    fingerprints of certificates renewals replaced (controller_api.retired_certs).
    `map_servers`: every controller replica's map-server (address, port), each of which knows
    every node's site: the node registers with all and resolves through all, so the mapping
    system needs no single replica (and no etcd quorum); empty: `map_server_address` alone."""
    if node.revoked:
        return config_pb2.DesiredState(node_id=node.node_id, node_name=node.name, revoked=True)
    timers = settings.timers
    servers = list(map_servers) or [(map_server_address, settings.map_server_port)]
    prefixes: list[IPv4Network | IPv6Network] = [node.eid4, node.eid6]
    # The app EIDs this node registers are those the map-server allows it (`delegated`): a
    # replica moving here from a draining node is registered only once it runs, while the
    # old copy still serves (one site per prefix; a refused record would refuse the node's
    # whole Map-Register).
    app_eids = sorted({str(p) for p in (delegated or {}).get(node.name, ())})
    routes = [str(pools.pool4), str(pools.pool6), *(str(p) for p in app_pools or ())]
    return config_pb2.DesiredState(
        node_id=node.node_id,
        node_name=node.name,
        instance_id=node.instance_id,
        eid_prefixes=[str(p) for p in prefixes] + app_eids,
        eid_addresses=[first_host(p) for p in prefixes],
        overlay_routes=routes,
        map_servers=[
            config_pb2.MapServer(address=address, port=port, key_id=0, site_key=node.site_key)
            for address, port in servers
        ],
        map_resolvers=list(dict.fromkeys(address for address, _ in servers)),
        security=config_pb2.Security(
            encryption=True,
            cipher_suite=settings.cipher_suite,
            rekey_after_packets=100_000_000,
            rekey_after_seconds=settings.rekey_after_seconds,
        ),
        timers=config_pb2.Timers(
            register_interval=timers.register_interval,
            register_ttl_minutes=timers.register_ttl_minutes,
            probe_interval=timers.probe_interval,
            probe_dead_after=timers.probe_dead_after,
            map_request_retry=timers.map_request_retry,
        ),
        mtu=settings.mtu,
        policies=[policy] if policy is not None else [],
        revoked_nodes=sorted(set(revoked_nodes or ())),
        retired_certificates=sorted(set(retired_certificates or ())),
        rtrs=[config_pb2.Rtr(name=name, address=address) for name, address in settings.rtrs],
        workloads=workloads or [],
        delegated_eids=[
            config_pb2.DelegatedEid(node=name, prefix=str(p))
            for name, prefixes in sorted((delegated or {}).items())
            if name != node.name
            for p in prefixes
        ],
    )


def versioned(store: Store, document: config_pb2.DesiredState) -> config_pb2.DesiredState:
    """`document` with its version (bumped in the store if the content changed)."""
    digest = hashlib.sha256(document.SerializeToString(deterministic=True)).hexdigest()
    out = config_pb2.DesiredState()
    out.CopyFrom(document)
    out.version = store.set_config_hash(document.node_id, digest)
    return out
