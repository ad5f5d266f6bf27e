"""What `lispmesh controller serve` is told (flags), and the few facts fixed at first start."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

from common.timers import Timers
from controller_api.store.model import EidPools

DEFAULT_PORT = 7443
DEFAULT_STATE_DIR = Path("/var/lib/lispmesh-controller")
DEFAULT_POOL4 = IPv4Network("10.250.0.0/16")
DEFAULT_APP_POOL4 = IPv4Network("10.251.0.0/16")  # app EIDs (controller_api/apps/eids.py)

BACKENDS = ("sqlite", "etcd")


@dataclass(frozen=True)
class StoreSettings:
    """Where the controller keeps its state: SQLite in the state dir, or etcd (replicas)."""

    backend: str = "sqlite"
    etcd_endpoints: tuple[str, ...] = ()
    etcd_prefix: str = "/lispmesh/"
    # Client TLS to etcd: the CA of its members, and a client certificate if etcd asks for one.
    etcd_ca: Path | None = None
    etcd_cert: Path | None = None
    etcd_key: Path | None = None

    def where(self, state_dir: Path) -> str:
        if self.backend == "etcd":
            return f"etcd {','.join(self.etcd_endpoints)} {self.etcd_prefix}"
        return str(state_dir / "controller.db")


# Where EID prefixes come from (the store allocates from them).
Pools = EidPools


def controller_timers() -> Timers:
    # Registrations refresh every 10 s (not 60): after a controller restart the embedded
    # map-server has them all back within that time.
    return Timers(register_interval=10.0)


@dataclass(frozen=True)
class ControllerSettings:
    state_dir: Path = DEFAULT_STATE_DIR
    listen_host: str = "0.0.0.0"
    listen_port: int = DEFAULT_PORT  # the join port: TLS, Enrollment only needs no client cert
    api_port: int | None = None  # mutual TLS (nodes, admins); default listen_port + 1
    advertise: str | None = None  # address nodes use for the controller and its map-server
    instance_id: int = 0
    # EID pools, fixed at first start (None: keep what the first start chose; the defaults are
    # DEFAULT_POOL4 and a random ULA /48).
    pool4: IPv4Network | None = None
    prefix_len4: int | None = None
    pool6: IPv6Network | None = None
    prefix_len6: int | None = None
    # The app EID pool "apps" (replicas' EIDs), fixed at first start (None: keep what the first
    # start chose; the defaults are DEFAULT_APP_POOL4 and a random ULA /64).
    app_pool4: IPv4Network | None = None
    app_pool6: IPv6Network | None = None
    # How often the leader reconciles the apps (placements, replacements, what nodes report).
    app_interval: float = 2.0
    # A node whose Watch stream ended (or, streaming to another replica, that reported nothing)
    # this long is `disconnected`; its replicas are replaced once the app's lost_after passed
    # too. Keep it above the nodes' report interval (30 s) when nodes stream to other replicas.
    node_timeout: float = 45.0
    token_ttl: float = 24 * 3600.0
    map_server_port: int = 4342
    # May a node register more-specifics of its EID prefixes at the embedded map-server? Off: a
    # node registers its prefixes whole, and a /64 must not become millions of /128s.
    node_more_specifics: bool = False
    onboarding_ca: Path | None = None
    onboarding_tags: tuple[str, ...] = ("onboarded",)
    # TPM-backed nodes: the manufacturers' CA certificates (PEM, roots and intermediates) their
    # EK certificates must chain to; EKs allowed without a certificate (hex TPM names); the
    # attestation policy (JSON, controller_api/attestation/policy.py; default: the boot PCRs
    # 0-7 quoted and replayed from the event log).
    tpm_ca: Path | None = None
    tpm_allow_uncertified: tuple[str, ...] = ()
    attestation_policy: Path | None = None
    attestation_interval: float = 300.0  # TPM nodes attest again this often (0: on connect only)
    # Instance-ids (virtual networks) only TPM-backed nodes may join, whatever token or
    # onboarding certificate they come with (a token's tag tpm:required asks it per token).
    tpm_required_iids: tuple[int, ...] = ()
    timers: Timers = field(default_factory=controller_timers)
    cipher_suite: str = "aes128-gcm"
    # The mesh's RTRs, (node name, public RLOC): every node is told them (mesh/rtr.py); the
    # nodes named run the RTR role.
    rtrs: tuple[tuple[str, str], ...] = ()
    # Every node rekeys this often: it also bounds how long a peer that rebooted (and lost its
    # keys) stays unreachable from nodes holding its old key.
    rekey_after_seconds: float = 120.0
    mtu: int = 1400
    # Node certificates: their lifetime (nodes renew at 2/3 of it), and how long a certificate
    # replaced by a renewal is still accepted (a node whose renewal answer was lost asks again).
    cert_lifetime: float = 365 * 86400.0
    cert_grace: float = 86400.0
    # A CA rotation waits this long for every live node to take the new CA's bundle; then it
    # is abandoned (the old CA alone, as before), never left half-done.
    ca_distribute_timeout: float = 3600.0
    # How often each Watch stream re-reads its node's row (revocation, config changes made by
    # another controller process): the "config cycle".
    config_cycle: float = 2.0
    # Open Watch streams per node. A node needs one; the second covers a reconnect while the
    # server has not yet noticed the old connection died. A newer stream ends the oldest, so a
    # node (or a thief of its key) cannot pile up streams, and a live node is never locked out.
    max_watch_streams: int = 2
    # Where /metrics (Prometheus) is served, HOST:PORT; None: not served (opt-in).
    metrics_listen: str | None = None
    store: StoreSettings = field(default_factory=StoreSettings)
    # Replicas on etcd: the leader's lease (a paused or cut-off leader is replaced after about
    # this long), and this replica's name in `controller status` (default: its API address).
    leader_ttl: int = 10
    replica_name: str | None = None


def random_ula() -> IPv6Network:
    """A random RFC 4193 unique local /48 (fd00::/8 plus 40 random bits)."""
    global_id = secrets.randbits(40)
    return IPv6Network(((0xFD << 120) | (global_id << 80), 48))


def rfc3339(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")
