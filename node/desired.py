"""A desired state from the controller becomes the `mesh.config.NodeConfig` the runtime runs.

The controller decides identity, EIDs, map-servers, keys, security and timers; this machine
decides its uplinks and where its files are.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from common.policy_format import NodePolicy
from common.timers import Timers
from controller_api.gen.lispmesh.v1 import config_pb2
from controller_api.policy.compile import proto_to_node_policy
from lisp.crypto_suites import CIPHER_SUITE_NAMES
from mesh.config import (
    Identity,
    MapServerRef,
    NodeConfig,
    Rloc,
    RtrRef,
    RtrRole,
    Security,
    XtrConfig,
)


class DesiredStateError(ValueError):
    """The desired state cannot be applied here (one line, sent back in the Ack)."""


@dataclass(frozen=True)
class LocalFacts:
    state_dir: Path
    run_dir: Path
    key: Path
    cert: Path
    ca: Path
    tun: str
    rlocs: tuple[Rloc, ...]
    private_key: ec.EllipticCurvePrivateKey | None = None  # the TPM key, instead of `key`
    metrics_listen: str | None = None  # --metrics-listen: where the runtime serves /metrics


def to_node_config(desired: config_pb2.DesiredState, local: LocalFacts) -> NodeConfig:
    if not local.rlocs:
        raise DesiredStateError("no uplink: no interface here has a global address (--uplink?)")
    suites = {name: number for number, name in CIPHER_SUITE_NAMES.items()}
    sec = desired.security
    if sec.cipher_suite and sec.cipher_suite not in suites:
        raise DesiredStateError(f"unknown cipher suite {sec.cipher_suite!r}")
    defaults = Timers()
    t = desired.timers
    try:
        prefixes = tuple(ip_network(p) for p in desired.eid_prefixes)
        xtr = XtrConfig(
            tun=local.tun,
            instance_id=desired.instance_id,
            eid_prefixes=prefixes,
            eid_addresses=tuple(ip_address(a) for a in desired.eid_addresses),
            overlay_routes=tuple(ip_network(r) for r in desired.overlay_routes),
            rlocs=local.rlocs,
            map_servers=tuple(
                MapServerRef(
                    address=ip_address(ms.address),
                    key=ms.site_key.encode(),
                    key_id=ms.key_id,
                    port=ms.port or 4342,
                )
                for ms in desired.map_servers
            ),
            map_resolvers=tuple(ip_address(a) for a in desired.map_resolvers),
            mtu=desired.mtu or 1400,
            timers=Timers(
                register_interval=t.register_interval or defaults.register_interval,
                register_ttl_minutes=t.register_ttl_minutes or defaults.register_ttl_minutes,
                probe_interval=t.probe_interval or defaults.probe_interval,
                probe_dead_after=t.probe_dead_after or defaults.probe_dead_after,
                map_request_retry=t.map_request_retry or defaults.map_request_retry,
            ),
            rtrs=tuple(RtrRef(r.name, ip_address(r.address)) for r in desired.rtrs),
            # A node the controller names as an RTR relays for the nodes behind NATs.
            rtr=RtrRole() if any(r.name == desired.node_name for r in desired.rtrs) else None,
        )
    except ValueError as exc:
        raise DesiredStateError(f"desired state v{desired.version}: {exc}") from None
    if not prefixes:
        raise DesiredStateError(f"desired state v{desired.version} has no EID prefix")
    policy = node_policy(desired)
    return NodeConfig(
        name=desired.node_name,
        source=local.state_dir / "checkpoint.json",
        state_dir=local.state_dir,
        run_dir=local.run_dir,
        security=Security(
            encryption=True,  # the controller cannot switch encryption off
            cipher_suite=suites.get(sec.cipher_suite, 5),
            authenticate_key_exchange=True,
            rekey_after_packets=sec.rekey_after_packets or 100_000_000,
            rekey_after_seconds=sec.rekey_after_seconds or 600.0,
            revoked_peers=frozenset(desired.revoked_nodes),
            retired_certificates=frozenset(desired.retired_certificates),
            delegated_eids=_delegated(desired),
        ),
        identity=Identity(
            key=local.key, cert=local.cert, ca=local.ca, private_key=local.private_key
        ),
        xtr=xtr,
        map_server=None,
        policy=policy,
        metrics_listen=local.metrics_listen,
    )


def _delegated(desired: config_pb2.DesiredState) -> tuple[tuple[str, Any], ...]:
    try:
        return tuple((d.node, ip_network(d.prefix)) for d in desired.delegated_eids)
    except ValueError as exc:
        raise DesiredStateError(f"desired state v{desired.version}: delegated EID: {exc}") from None


def node_policy(desired: config_pb2.DesiredState) -> NodePolicy | None:
    """The network policy to enforce: the one compiled for this node, or None (no policy
    installed at the controller: allow everything)."""
    if not desired.policies:
        return None
    if len(desired.policies) > 1:
        raise DesiredStateError(
            f"desired state v{desired.version}: {len(desired.policies)} policies (at most one)"
        )
    try:
        return proto_to_node_policy(desired.policies[0])
    except ValueError as exc:
        raise DesiredStateError(f"desired state v{desired.version}: policy: {exc}") from None
