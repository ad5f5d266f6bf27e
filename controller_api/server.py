"""The reference controller process: store, CA, embedded map-server and the gRPC services.

    controller = Controller(ControllerSettings(state_dir=...))
    await controller.start()      # `controller.port`, `controller.address` once started
    ...
    await controller.stop()

`lispmesh controller serve` runs `serve()` until SIGTERM/SIGINT. The address nodes and the CLI
use, and the CA pin, are written to `<state-dir>/controller.json` for the admin commands.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

import grpc

from certs.format import IdentityError
from common.errors import LispmeshError
from common.prometheus import Exporter, LoopCollector, MetricsError, serve
from controller_api import pki as pki_mod
from controller_api.apps.eids import AppPool
from controller_api.apps.loop import AppLoop
from controller_api.apps_grpc import AppRunner, AppService
from controller_api.attestation import AttestationPolicy, ManufacturerCAs
from controller_api.attestation_policies import AttestationPolicies, PolicyInForce
from controller_api.auth import Authenticator
from controller_api.change_feed import ChangeFeed
from controller_api.core import ControllerCore
from controller_api.embedded_ms import EmbeddedMapServer
from controller_api.enrollment import Enroller
from controller_api.gen.lispmesh.v1 import (
    admin_pb2_grpc,
    apps_pb2_grpc,
    attestation_pb2_grpc,
    config_pb2_grpc,
    enrollment_pb2_grpc,
    policy_pb2_grpc,
    status_pb2_grpc,
)
from controller_api.leader import Election, ReplicaInfo
from controller_api.metrics import controller_families
from controller_api.netinfo import default_advertise
from controller_api.pki import CA_DIR, shared_ca
from controller_api.policy_grpc import PolicyService
from controller_api.replicas import LeaderLoop, controller_status
from controller_api.services import (
    AdminService,
    AttestationService,
    EnrollmentService,
    NodeConfigService,
    StatusService,
)
from controller_api.settings import (
    DEFAULT_APP_POOL4,
    DEFAULT_POOL4,
    ControllerSettings,
    Pools,
    random_ula,
    rfc3339,
)
from controller_api.store import EtcdStore, Store, StoreError
from controller_api.store_backend import open_store
from controller_api.store_errors import StoreErrors
from controller_api.tokens import ca_pin
from controller_api.tpm_verifier import DEFAULT_POLICY, TpmVerifier

log = logging.getLogger("lispmesh.controller")

INFO_FILE = "controller.json"


class ControllerError(LispmeshError):
    """The controller cannot start (one line)."""


def _fixed(store: Store, key: str, wanted: str | None, default: str) -> str:
    """A setting fixed at first start: later starts may repeat it but not change it."""
    value = store.set_meta_default(key, wanted or default)
    if wanted is not None and wanted != value:
        raise ControllerError(
            f"{key} is {value} since this controller's first start; it cannot change to {wanted}"
        )
    return value


def _add_servicer(add: Any, servicer: object, server: grpc.aio.Server) -> None:
    add(servicer, server)  # the generated adders are untyped


def _bind(server: grpc.aio.Server, address: str, creds: grpc.ServerCredentials) -> int:
    try:
        return int(server.add_secure_port(address, creds))
    except RuntimeError:
        return 0


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _tpm_verifier(s: ControllerSettings, store: Store) -> TpmVerifier:
    """The TPM manufacturer CAs, uncertified EKs allowed and attestation policy configured."""
    cas = ManufacturerCAs(())
    if s.tpm_ca is not None:
        try:
            cas = ManufacturerCAs.from_pem([s.tpm_ca.read_bytes()])
        except OSError as exc:
            raise ControllerError(f"--tpm-ca {s.tpm_ca}: {exc.strerror}") from None
        except ValueError as exc:
            raise ControllerError(f"--tpm-ca {s.tpm_ca}: {exc}") from None
    initial = PolicyInForce(DEFAULT_POLICY, "default")
    if s.attestation_policy is not None:
        try:
            text = s.attestation_policy.read_text()
        except OSError as exc:
            raise ControllerError(
                f"--attestation-policy {s.attestation_policy}: {exc.strerror}"
            ) from None
        try:
            policy = AttestationPolicy.from_json(text, str(s.attestation_policy))
        except ValueError as exc:
            raise ControllerError(str(exc)) from None
        initial = PolicyInForce(policy, "file", filename=str(s.attestation_policy))
    policies = AttestationPolicies(store, initial)
    try:
        in_force = policies.current()
    except (ValueError, KeyError) as exc:
        raise ControllerError(f"the stored attestation policy is unreadable: {exc}") from None
    if in_force.source == "set" and s.attestation_policy is not None:
        log.warning(
            "--attestation-policy %s ignored: the policy set at %s by %s is in force",
            s.attestation_policy, rfc3339(in_force.set_at), in_force.set_by,
        )  # fmt: skip
    try:
        allowed = [bytes.fromhex(name) for name in s.tpm_allow_uncertified]
    except ValueError:
        raise ControllerError("--tpm-allow-ek: an EK name is hex (0x000b + SHA-256)") from None
    return TpmVerifier(cas, allowed, interval=s.attestation_interval, policies=policies)


class Controller:
    def __init__(
        self, settings: ControllerSettings, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.clock = clock  # wall-clock seconds: tests move it (certificate lifetimes)
        self.store: Store | None = None
        self.map_server: EmbeddedMapServer | None = None
        self.exporter: Exporter | None = None
        self.server: grpc.aio.Server | None = None
        self.core: ControllerCore | None = None
        self.port = 0
        self.api_port = 0
        self.address = ""
        self.api_address = ""
        self.pin = ""
        self.pools: Pools | None = None
        self.leader: LeaderLoop | None = None
        self.feed: ChangeFeed | None = None
        self.apps: AppRunner | None = None

    async def start(self) -> None:
        s = self.settings
        state_dir = s.state_dir
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(state_dir, 0o700)
            self.store = store = open_store(s.store, state_dir)
            log.info("state in %s", s.store.where(state_dir))
            shared_ca(store, state_dir / CA_DIR)
            pools = Pools(
                IPv4Network(_fixed(store, "pool4", _text(s.pool4), str(DEFAULT_POOL4))),
                int(_fixed(store, "prefix_len4", _text(s.prefix_len4), "24")),
                IPv6Network(_fixed(store, "pool6", _text(s.pool6), str(random_ula()))),
                int(_fixed(store, "prefix_len6", _text(s.prefix_len6), "64")),
            )
            _fixed(store, "instance_id", str(s.instance_id), "0")
            app_pool = AppPool(
                "apps",
                IPv4Network(_fixed(store, "app_pool4", _text(s.app_pool4), str(DEFAULT_APP_POOL4))),
                IPv6Network(
                    _fixed(store, "app_pool6", _text(s.app_pool6), str(_ula64(random_ula())))
                ),
            )
        except StoreError as exc:
            raise ControllerError(str(exc)) from None
        if not (
            pools.pool4.prefixlen <= pools.len4 <= 30 and pools.pool6.prefixlen <= pools.len6 <= 126
        ):
            raise ControllerError(f"EID pools {pools}: prefix lengths out of range")
        self.pools = pools
        wildcard = s.listen_host in ("", "0.0.0.0", "::")
        advertise = s.advertise or (default_advertise() if wildcard else s.listen_host)
        try:
            ca_pki = pki_mod.ControllerPki.load_or_create(state_dir, [advertise], store)
            cas = pki_mod.load_onboarding_cas(s.onboarding_ca) if s.onboarding_ca else []
        except IdentityError as exc:
            raise ControllerError(exc.reason) from None
        verifier = _tpm_verifier(s, store)
        self.pin = ca_pin(ca_pki.tls_ca.certificate)
        self.map_server = EmbeddedMapServer(
            s.listen_host if not wildcard else "0.0.0.0",
            s.map_server_port,
            s.instance_id,
            (pools.pool4, pools.pool6, app_pool.pool4, app_pool.pool6),
            node_more_specifics=s.node_more_specifics,
        )
        try:
            await self.map_server.start()
        except Exception as exc:
            raise ControllerError(f"embedded map-server: {exc}") from None
        try:
            # Read before the core loads its state: the feed then misses no change after it.
            watched_from = store.revision() if isinstance(store, EtcdStore) else 0
        except StoreError as exc:
            await self.map_server.stop()
            raise ControllerError(str(exc)) from None
        self.core = core = ControllerCore(
            store, s, pools, advertise, self.map_server, clock=self.clock, app_pool=app_pool
        )
        core.sync_map_server()
        if isinstance(store, EtcdStore):
            self.feed = ChangeFeed(
                store.etcd, store.prefix, watched_from, asyncio.get_running_loop(),
                core.feed_changes, core.resync,
            )  # fmt: skip
            self.feed.start()
            core.fed = True
        core.pki = ca_pki
        auth = Authenticator(store, lambda: ca_pki.trusted, self.clock)
        enroller = Enroller(store, ca_pki, s, pools, cas, clock=self.clock, tpm=verifier)
        enroller.retired = core.retired
        self.store_errors = StoreErrors(
            lambda: s.replica_name or self.api_address, lambda: core.unavailable
        )
        server = grpc.aio.server(
            interceptors=[self.store_errors],
            options=[("grpc.keepalive_permit_without_calls", 1)],
        )
        admin = AdminService(core, auth, lambda: ca_pin(ca_pki.tls_ca.certificate), verifier)
        app_loop = AppLoop(
            store, app_pool, clock=self.clock, seen_now=lambda: set(core.streams),
            heartbeat=s.node_timeout,
        )  # fmt: skip
        self.apps = apps = AppRunner(core, app_loop, None, s.app_interval)
        for add, servicer in (
            (
                enrollment_pb2_grpc.add_EnrollmentServicer_to_server,
                EnrollmentService(core, enroller),
            ),
            (
                config_pb2_grpc.add_NodeConfigServicer_to_server,
                NodeConfigService(core, auth, enroller),
            ),
            (status_pb2_grpc.add_StatusServicer_to_server, StatusService(core, auth)),
            (
                admin_pb2_grpc.add_AdminServicer_to_server,
                admin,
            ),
            (policy_pb2_grpc.add_PolicyAdminServicer_to_server, PolicyService(core, auth)),
            (apps_pb2_grpc.add_AppAdminServicer_to_server, AppService(core, auth, apps)),
            (
                attestation_pb2_grpc.add_AttestationServicer_to_server,
                AttestationService(core, auth, verifier),
            ),
        ):
            _add_servicer(add, servicer, server)
        bind = f"[{s.listen_host}]" if ":" in s.listen_host else s.listen_host or "0.0.0.0"
        # gRPC servers either require client certificates on a port or never ask for them:
        # the join port (TLS) serves enrollment, the API port (mutual TLS) everything else.
        # Both follow the CA set (a rotation changes the client roots, its finish the server
        # certificate) without a restart.
        join = ca_pki.server_credentials(mutual=False)
        mutual = ca_pki.server_credentials(mutual=True)
        api_port = (
            s.api_port if s.api_port is not None else (s.listen_port + 1 if s.listen_port else 0)
        )
        self.port = _bind(server, f"{bind}:{s.listen_port}", join)
        self.api_port = _bind(server, f"{bind}:{api_port}", mutual) if self.port else 0
        if not self.port or not self.api_port:
            if self.feed is not None:
                await asyncio.to_thread(self.feed.stop)
                self.feed = None
            await self.map_server.stop()
            raise ControllerError(
                f"cannot listen on {bind}:{s.listen_port} and :{api_port} (address in use?)"
            )
        enroller.api_port = self.api_port
        await server.start()
        self.server = server
        self.address = f"{advertise}:{self.port}"
        self.api_address = f"{advertise}:{self.api_port}"
        info = {
            "address": self.address,
            "api_address": self.api_address,
            "ca_pin": self.pin,
            "pid": os.getpid(),
        }
        (state_dir / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        if isinstance(store, EtcdStore):
            own_ms = core.own_map_server()
            me = ReplicaInfo(
                s.replica_name or self.api_address, self.api_address,
                f"{own_ms[0]}:{own_ms[1]}" if own_ms is not None else "",
            )  # fmt: skip
            election = Election(store.etcd, store.prefix, me, s.leader_ttl)
            self.leader = LeaderLoop(store, election, clock=self.clock)
            self.leader.on_health = core.set_unavailable
            core.replicas_source = election.replicas
            core.own_api_address = self.api_address
            core.reload_replicas()
            self.leader.start()
            enroller.api_addresses = lambda: _replica_addresses(election)
            apps.leader = self.leader
        apps.start()
        where, election_or_none = s.store.where(state_dir), getattr(self.leader, "election", None)
        admin.controller_status = lambda: controller_status(
            store, where, s.replica_name or self.api_address, election_or_none
        )
        if s.metrics_listen:
            ms = self.map_server
            collector = LoopCollector(
                "lispmesh_controller", asyncio.get_running_loop(),
                lambda: controller_families(core, ms),
            )  # fmt: skip
            try:
                self.exporter = serve(s.metrics_listen, collector)
            except MetricsError as exc:
                await self.stop()
                raise ControllerError(str(exc)) from None
        log.info(
            "controller: join port %s:%d, API port %d (advertised %s), EID pools %s, CA pin %s",
            bind, self.port, self.api_port, self.address, pools, self.pin,
        )  # fmt: skip

    async def stop(self) -> None:
        if self.feed is not None:
            await asyncio.to_thread(self.feed.stop)
            self.feed = None
        if self.apps is not None:
            await self.apps.stop()
            self.apps = None
        if self.leader is not None:
            await self.leader.stop()
            self.leader = None
        if self.exporter is not None:
            self.exporter.close()
            self.exporter = None
        if self.server is not None:
            await self.server.stop(grace=0.5)
            self.server = None
        if self.map_server is not None:
            await self.map_server.stop()
            self.map_server = None
        if self.store is not None:
            self.store.close()
            self.store = None

    async def serve(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
        log.info("controller stopped")


def _ula64(net: IPv6Network) -> IPv6Network:
    return IPv6Network((net.network_address, 64))


def _replica_addresses(election: Election) -> list[str]:
    """This replica's API address, then every other live replica's (for a node to fail over)."""
    own = election.me.api_address
    try:
        others = [r.get("api_address", "") for r in election.replicas()]
    except StoreError:
        others = []
    return [own, *sorted({a for a in others if a and a != own})]


def read_info(state_dir: Path) -> dict[str, str]:
    try:
        data = json.loads((state_dir / INFO_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
