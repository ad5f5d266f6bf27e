"""The controller's operations, shared by its gRPC services: desired states, revocation, change
notifications to Watch streams, and the views the Admin API returns."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

from google.protobuf import json_format

from controller_api.apps.eids import AppPool
from controller_api.apps.members import policy_apps
from controller_api.apps.workloads import allowances, node_workloads
from controller_api.change_feed import Changes
from controller_api.desired import build, versioned
from controller_api.embedded_ms import EmbeddedMapServer, site_name
from controller_api.gen.lispmesh.v1 import admin_pb2, common_pb2, config_pb2, status_pb2
from controller_api.pki import ControllerPki
from controller_api.policies import Checked, PolicyManager
from controller_api.retired_certs import RetiredCertificates
from controller_api.settings import ControllerSettings, Pools, rfc3339
from controller_api.store import NodeRow, Store, StoreError, TokenRow
from controller_api.tpm_records import Attestation, TpmNode, TpmRecords

log = logging.getLogger("lispmesh.controller")


class ControllerCore:
    def __init__(
        self,
        store: Store,
        settings: ControllerSettings,
        pools: Pools,
        advertise: str,
        map_server: EmbeddedMapServer | None,
        clock: Callable[[], float] = time.time,
        app_pool: AppPool | None = None,
    ) -> None:
        self.store = store
        self.app_pool = app_pool  # where app replicas' EIDs come from (None: no apps here)
        self.settings = settings
        self.pools = pools
        self.advertise = advertise
        self.map_server = map_server
        self.clock = clock
        self.streams: Counter[str] = Counter()  # node id -> open Watch streams
        self._watches: dict[str, list[asyncio.Event]] = {}  # node id -> "end now", oldest first
        self._changed: dict[str, asyncio.Event] = {}
        self.policies = PolicyManager(store, clock)
        if app_pool is not None:
            self.policies.apps_source = partial(policy_apps, store, app_pool)
        self.retired = RetiredCertificates(store)
        self.tpm_records = TpmRecords(store)
        # What every node's document shares, computed once per change rather than once per
        # node (a fan-out to N nodes must not read N x N rows): the revoked and quarantined.
        self._revoked: list[str] | None = None
        # Set when the store's change feed drives the streams (etcd): no periodic re-reads.
        self.fed = False
        self.built = 0  # desired states built (a figure for tests and benchmarks)
        self.pki: ControllerPki | None = None  # the CAs, set by the server (trust bundle)
        # Every replica's map-server (address, port), sorted so that every replica builds the
        # same document; empty: this controller's own alone (one controller, SQLite).
        self.map_servers: list[tuple[str, int]] = []
        self.replicas_source: Callable[[], list[dict[str, Any]]] | None = None
        # Every live replica's API address, sorted (the same document on every replica), and
        # this replica's own (listed even while its registration lapsed): nodes fail over
        # along the list, so replicas added after a node enrolled reach it.
        self.controller_addresses: list[str] = []
        self.own_api_address = ""
        # Why this replica serves no config streams now (it cannot reach the store), or None.
        self.unavailable: str | None = None
        if map_server is not None:
            map_server.core.policy_check = self.policies.may_learn

    # ------------------------------------------------------------------ desired state

    def desired_state(self, node: NodeRow) -> config_pb2.DesiredState:
        self.built += 1
        policy = self.policies.for_node(node)
        workloads, app_pools, delegated = None, None, None
        if self.app_pool is not None and not node.revoked:
            workloads = node_workloads(self.store, node.name, self.app_pool)
            app_pools = (self.app_pool.pool4, self.app_pool.pool6)
            delegated = allowances(self.store, self.app_pool)  # O(replicas): fine for now
        document = build(
            node, self.settings, self.pools, self.advertise, policy, self.revoked_names(),
            self.retired.refused(self.clock()),
            map_servers=self.map_servers, workloads=workloads, app_pools=app_pools,
            delegated=delegated,
        )  # fmt: skip
        if self.pki is not None and not node.revoked:
            # The trust bundle (two CAs during a rotation) and which CA issues now: a node
            # whose certificate is from another CA renews at once (controller_api.ca_rotation).
            document.ca_bundle_pem = self.pki.ca_pem
            document.ca_cross_pem = self.pki.cross_pem
            document.issuing_ca = self.pki.issuer.fingerprint
        if not node.revoked:
            document.controller_addresses.extend(self.controller_addresses)
        return versioned(self.store, document)

    def revoked_names(self) -> list[str]:
        if self._revoked is None:
            # A quarantined node's keys are refused by the others exactly as a revoked node's.
            quarantined = {t.node_id for t in self.tpm_records.all().values() if t.quarantined}
            self._revoked = sorted(
                n.name for n in self.store.list_nodes() if n.revoked or n.node_id in quarantined
            )
        return self._revoked

    @property
    def stream_cycle(self) -> float | None:
        """How long a Watch stream waits before it reads its state again without being told
        (None: only when told, by the change feed)."""
        if not self.fed:
            return self.settings.config_cycle
        # Fed by store changes; a grace period ending is not one, so wake for it.
        now = self.clock()
        at = self.retired.next_change(now)
        return None if at is None else max(1.0, at - now)

    def feed_changes(self, changes: Changes) -> None:
        """Store changes another replica (or this one) made, from the change feed."""
        if changes.policy:
            self.policies.reload()
        elif changes.inventory:
            self.policies.forget_inventory()
        if changes.everyone or changes.inventory or changes.quarantine:
            self._revoked = None
        if changes.retired:
            self.retired.forget()
        if changes.ca and self.pki is not None:
            self.pki.refresh()  # another replica rotated the CA (or finished the rotation)
        if changes.sites:
            self.sync_map_server()
        if changes.replicas:
            self.reload_replicas()
        if changes.everyone or changes.policy:
            self.notify_all()
        else:
            for node_id in changes.nodes:
                self.notify(node_id)

    def resync(self) -> None:
        """The change feed lost track (etcd compacted past it): reload everything it feeds."""
        self.policies.reload()
        self._revoked = None
        self.retired.forget()
        if self.pki is not None:
            self.pki.refresh()
        self.sync_map_server()
        self.reload_replicas()
        self.notify_all()

    def reload_replicas(self) -> None:
        """Read the live replicas' map-servers again; every node's document lists them all."""
        if self.replicas_source is None:
            return
        try:
            docs = self.replicas_source()
        except StoreError as exc:
            log.warning("replicas not read: %s", exc)
            return
        servers: set[tuple[str, int]] = set()
        apis = {self.own_api_address} - {""}
        for doc in docs:
            host, _, port = str(doc.get("map_server", "")).rpartition(":")
            if host and port.isdigit():
                servers.add((host.strip("[]"), int(port)))
            apis |= {str(doc.get("api_address", ""))} - {""}
        own = self.own_map_server()
        if own is not None:
            servers.add(own)
        changed = False
        if sorted(servers) != self.map_servers:
            self.map_servers, changed = sorted(servers), True
            log.info("map-servers of the replicas: %s",
                     ", ".join(f"{a}:{p}" for a, p in self.map_servers))  # fmt: skip
        if sorted(apis) != self.controller_addresses:
            self.controller_addresses, changed = sorted(apis), True
            log.info("controller replicas: %s", ", ".join(self.controller_addresses))
        if changed:
            self.notify_all()

    def own_map_server(self) -> tuple[str, int] | None:
        if self.map_server is None:
            return None
        return self.advertise, self.map_server.bound_port

    def set_unavailable(self, why: str | None) -> None:
        """This replica lost (or regained) the store: while it has, its config streams end and
        every RPC but controller status is refused at once (controller_api/store_errors.py),
        so its nodes move to a replica that can serve them."""
        if why == self.unavailable:
            return
        self.unavailable = why
        if why is not None:
            log.warning("refusing everything but controller status: %s", why)
            for watches in self._watches.values():
                for ended in watches:
                    ended.set()
        else:
            log.info("etcd answers again: serving every request")

    def open_watch(self, node_id: str) -> asyncio.Event:
        """Count a new Watch stream of `node_id`; returns the event that tells it to end, set
        for the oldest streams beyond settings.max_watch_streams."""
        ended = asyncio.Event()
        watches = self._watches.setdefault(node_id, [])
        watches.append(ended)
        while len(watches) > max(1, self.settings.max_watch_streams):
            watches.pop(0).set()
        self.streams[node_id] += 1
        return ended

    def close_watch(self, node_id: str, ended: asyncio.Event) -> None:
        watches = self._watches.get(node_id, [])
        if ended in watches:
            watches.remove(ended)
        if not watches:
            self._watches.pop(node_id, None)
        self.streams[node_id] -= 1
        if self.streams[node_id] <= 0:
            del self.streams[node_id]

    async def wait_change(
        self, node_id: str, timeout: float | None, ended: asyncio.Event | None = None
    ) -> None:
        """Until `node_id`'s state may have changed, `ended` is set, or `timeout` passed."""
        event = self._changed.setdefault(node_id, asyncio.Event())
        waits = [asyncio.ensure_future(event.wait())]
        if ended is not None:
            waits.append(asyncio.ensure_future(ended.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if event.is_set() and self._changed.get(node_id) is event:
            del self._changed[node_id]

    def notify(self, node_id: str) -> None:
        # Set even when no stream waits yet: a change made while a stream was between two
        # reads is seen at its next wait, not a config cycle later.
        self._changed.setdefault(node_id, asyncio.Event()).set()

    def notify_all(self) -> None:
        # Only streams read desired states: a node that connects later reads the current one.
        for node_id in list(self._watches):
            self.notify(node_id)

    def apply_policy(self, text: str, filename: str, who: str) -> tuple[Checked, int]:
        """Check and install a policy (PolicyError if refused); every node gets its part now."""
        applied = self.policies.apply(text, filename, who)
        self.notify_all()
        return applied

    def _inventory_changed(self) -> None:
        if self.policies.inventory_changed():
            self.notify_all()  # a node joined or left: everyone's compiled rules may change

    def sync_map_server(self) -> int:
        if self.map_server is None:
            return 0
        extra = allowances(self.store, self.app_pool) if self.app_pool is not None else None
        return self.map_server.set_nodes(self.store.list_nodes(), extra)

    def node_enrolled(self, node: NodeRow) -> None:
        self.sync_map_server()
        self._inventory_changed()

    def revoke(self, node: NodeRow) -> NodeRow:
        revoked = self.store.revoke_node(node.node_id, self.clock())
        assert revoked is not None
        self._revoked = None
        self.sync_map_server()  # its site goes, and with it its registrations
        self.notify(node.node_id)
        self.notify_all()  # every node's revocation list changes: they drop its keys now
        self._inventory_changed()
        return revoked

    # ------------------------------------------------------------------ attestation

    def quarantine(self, node: NodeRow) -> str | None:
        """Why `node` is quarantined (its last attestation failed), or None."""
        tpm = self.tpm_records.get(node.node_id)
        if tpm is None or not tpm.quarantined or tpm.attestation is None:
            return None
        return (
            f"node {node.name} is quarantined: attestation failed at "
            f"{rfc3339(tpm.attestation.at)}: {tpm.attestation.reason}"
        )

    def record_attestation(
        self,
        node: NodeRow,
        result: Attestation,
        clock: tuple[int, int, int] | None,
        was_quarantined: bool,
    ) -> None:
        self.tpm_records.record_attestation(node.node_id, result, clock)
        if was_quarantined != (not result.ok):
            self._revoked = None
            # In or out of quarantine: every node's revocation list changes, and its own
            # Watch stream ends (or may start again).
            self.notify(node.node_id)
            self.notify_all()

    # ------------------------------------------------------------------ views

    def node_state(self, node: NodeRow, tpm: TpmNode | None = None) -> str:
        if node.revoked:
            return "revoked"
        if tpm is not None and tpm.quarantined:
            return "quarantined"
        if self.streams[node.node_id] > 0:
            return "online"
        return "enrolled" if node.last_seen is None else "offline"

    def node_info(self, node: NodeRow) -> admin_pb2.NodeInfo:
        uplinks = [
            common_pb2.Uplink(
                interface=u.get("interface", ""),
                address=u.get("address", ""),
                up=bool(u.get("up")),
            )
            for u in node.status.get("uplinks", [])
        ]
        tpm = self.tpm_records.get(node.node_id)
        attestation = tpm.attestation if tpm is not None else None
        return admin_pb2.NodeInfo(
            node_id=node.node_id,
            name=node.name,
            instance_id=node.instance_id,
            eid_prefixes=[str(node.eid4), str(node.eid6)],
            tags=list(node.tags),
            state=self.node_state(node, tpm),
            enrolled_at=rfc3339(node.enrolled_at),
            revoked_at=rfc3339(node.revoked_at),
            last_seen=rfc3339(node.last_seen),
            config_version=node.config_version,
            applied_version=node.applied_version,
            uplinks=uplinks,
            token_id=node.token_id or "",
            cert_not_after=rfc3339(node.cert_not_after),
            identity="tpm" if tpm is not None else "file",
            attestation=_attestation_text(attestation),
            attested_at=rfc3339(attestation.at) if attestation is not None else "",
            ek_subject=tpm.ek_issuer if tpm is not None else "",
            ek_certificate_subject=tpm.ek_subject if tpm is not None else "",
        )

    def node_detail(self, node: NodeRow) -> admin_pb2.NodeDetail:
        return admin_pb2.NodeDetail(
            node=self.node_info(node),
            certificate_fingerprint=node.cert_fp,
            certificate_not_after=rfc3339(node.cert_not_after),
            status_json=json.dumps(node.status, sort_keys=True),
            metrics_json=json.dumps(node.metrics, sort_keys=True),
            apply_error=node.apply_error,
        )

    def token_info(self, token: TokenRow) -> admin_pb2.TokenInfo:
        return admin_pb2.TokenInfo(
            token_id=token.token_id,
            created_at=rfc3339(token.created_at),
            expires_at=rfc3339(token.expires_at),
            max_uses=token.max_uses,
            uses=token.uses,
            tags=list(token.tags),
            description=token.description,
            revoked_at=rfc3339(token.revoked_at),
            state=token.state(self.clock()),
        )

    def topology(self) -> admin_pb2.Topology:
        registrations = self.map_server.registrations() if self.map_server else {}
        nodes = []
        for node in self.store.list_nodes():
            regs = [
                admin_pb2.Registration(
                    eid=common_pb2.EidPrefix(instance_id=r["iid"], prefix=r["eid_prefix"]),
                    rlocs=[rloc["address"] for rloc in r["rlocs"]],
                    expires_in=r["expires_in"],
                )
                for r in registrations.get(site_name(node), [])
            ]
            peers = sorted({p.get("name", "") for p in node.status.get("peers", [])} - {""})
            nodes.append(
                admin_pb2.TopologyNode(
                    node=self.node_info(node),
                    registrations=regs,
                    peers=peers,
                    peer_paths=_peer_paths(node),
                )
            )
        port = self.settings.map_server_port
        return admin_pb2.Topology(
            controller_address=f"{self.advertise}:{self.settings.listen_port}",
            map_servers=[f"{self.advertise}:{port}"] if self.map_server else [],
            eid_pools=[str(self.pools.pool4), str(self.pools.pool6)],
            nodes=nodes,
            generated_at=rfc3339(self.clock()),
        )


def _attestation_text(attestation: Attestation | None) -> str:
    if attestation is None:
        return ""
    return "ok" if attestation.ok else f"failed: {attestation.reason}"


def _peer_paths(node: NodeRow) -> list[status_pb2.Peer]:
    """The node's paths to its peers, as its last status report gave them."""
    paths = []
    for peer in node.status.get("peers", []):
        with contextlib.suppress(json_format.ParseError, TypeError):
            paths.append(json_format.ParseDict(peer, status_pb2.Peer(), ignore_unknown_fields=True))
    return paths
