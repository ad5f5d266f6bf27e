"""The node configuration file (YAML): what a `lispmesh node run --config FILE` process does.

A bad file gives one `ConfigError` line naming the file and the field, e.g.
`node.yaml: xtr.rlocs[1].address: '10.0.0.300' is not an IP address`.

```yaml
name: edge-1                     # required
state_dir: /var/lib/lispmesh     # default; the control socket lives in run_dir
dataplane: auto                  # c (compiled fast path), python (reference), auto: c if built
identity:                        # required unless security.authenticate_key_exchange is false
  key: keys/edge-1.key           # PEM private key (0600), relative paths are to the file
  cert: keys/edge-1.crt          # node certificate issued by the mesh CA
  ca: keys/ca.crt                # the mesh CA every peer must chain to
security:
  encryption: true               # default; false is an explicit, logged downgrade
  cipher_suite: aes128-gcm       # or chacha20-poly1305
  authenticate_key_exchange: true  # false = plain RFC 8061 (interop only; logged)
  rekey_after_packets: 100000000
  rekey_after_seconds: 600
  revoked_peers: [edge-7]        # node names whose keys are dropped and key exchanges refused
  retired_certificates: []       # SHA-256 (hex) of certificates a renewal replaced: refused
  plaintext_fallback: false      # true: plaintext with peers that answer without a key (logged)
  lispers_peers: [192.0.2.7/32]  # RLOCs of lispers.net xTRs: its RFC 8061 profile (unauthenticated)
xtr:                             # the ITR+ETR role (optional)
  tun: lm0
  instance_id: 0
  eid_prefixes: [10.1.0.0/24, fd00:1::/64]   # registered with the map-servers
  eid_addresses: [10.1.0.1, fd00:1::1]       # put on the TUN device
  overlay_routes: [10.0.0.0/8, fd00::/16]    # routed into the TUN
  rlocs:
    - {address: 192.168.10.2, interface: eth1, priority: 1, weight: 100}
  map_servers: [{address: 192.168.10.1, key: s3cret, key_id: 0}]
  map_resolvers: [192.168.10.1]
  mtu_probes: true               # padded RLOC-probes find path MTU black holes (ICMP filtered)
  mss_clamp: false               # true: lower the MSS of TCP SYNs to what the path carries
map_server:                      # the map-server + map-resolver role (optional)
  listen: [0.0.0.0]
  sites:
    - {name: site-a, keys: {0: s3cret}, allowed: ["[0]10.1.0.0/16"]}   # max_registrations: 10000
  # accept_unauthenticated_info: false   # true answers lispers.net's unsigned Info-Requests
metrics: {listen: 127.0.0.1:9464}  # Prometheus /metrics (optional; loopback unless told)
policy:                          # network policy (common.policy_format), compiled by the controller
  version: 3                     # absent: no policy, everything passes (as before policies);
  egress:                        # present: deny unless a rule allows (return traffic of an
    - {id: 1, name: web, action: allow, dst: [10.1.2.0/24], protocol: tcp, ports: [443]}
  ingress: []                    # allowed flow passes without a reverse rule)
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from common.errors import LispmeshError
from common.policy_format import NodePolicy
from common.prometheus import MetricsError, parse_listen
from common.timers import Timers
from lisp.crypto_suites import CIPHER_SUITE_NAMES
from lisp.map_server.site import MAX_REGISTRATIONS

IpAddress = IPv4Address | IPv6Address
IpNetwork = IPv4Network | IPv6Network


class ConfigError(LispmeshError, ValueError):
    """One line: file, field path, problem."""


@dataclass(frozen=True)
class Rloc:
    address: IpAddress
    interface: str | None = None
    priority: int = 1
    weight: int = 100


@dataclass(frozen=True)
class MapServerRef:
    address: IpAddress
    key: bytes = field(repr=False)
    key_id: int = 0
    port: int = 4342


@dataclass(frozen=True)
class RtrRef:
    """An RTR of the mesh (mesh.rtr): its certificate name and its public RLOC."""

    name: str
    address: IpAddress


@dataclass(frozen=True)
class RtrRole:
    """This node relays for nodes behind NATs (mesh.rtr)."""

    stale_after: float = 30.0  # a binding no keepalive refreshed for this long is dropped


@dataclass(frozen=True)
class XtrConfig:
    tun: str
    instance_id: int
    eid_prefixes: tuple[IpNetwork, ...]
    eid_addresses: tuple[IpAddress, ...]
    overlay_routes: tuple[IpNetwork, ...]
    rlocs: tuple[Rloc, ...]
    map_servers: tuple[MapServerRef, ...]
    map_resolvers: tuple[IpAddress, ...]
    mtu: int = 1400
    timers: Timers = field(default_factory=Timers)
    # Path MTU (mesh.pmtu): padded RLOC-probes find black holes where ICMP is filtered;
    # mss_clamp lowers the MSS of TCP SYNs to what the path carries.
    mtu_probes: bool = True
    mss_clamp: bool = False
    # RTRs this node uses when one of its uplinks is behind a NAT, and recognises as relays in
    # peers' RLOC sets; their names are checked against the certificates they answer with.
    rtrs: tuple[RtrRef, ...] = ()
    rtr_keepalive: float = 10.0  # seconds between binding refreshes (below the NAT's timeout)
    rtr: RtrRole | None = None  # run the RTR role too


@dataclass(frozen=True)
class SiteConfig:
    name: str
    keys: dict[int, bytes] = field(repr=False)
    allowed: tuple[tuple[int, IpNetwork], ...]
    accept_more_specifics: bool = True
    proxy_reply: bool = False
    max_registrations: int = MAX_REGISTRATIONS


@dataclass(frozen=True)
class MapServerConfig:
    listen: tuple[IpAddress, ...]
    sites: tuple[SiteConfig, ...]
    port: int = 4342
    # Answer unauthenticated Info-Requests (lispers.net sends them so): off by default.
    accept_unauthenticated_info: bool = False


@dataclass(frozen=True)
class Security:
    encryption: bool = True
    cipher_suite: int = 5
    authenticate_key_exchange: bool = True
    rekey_after_packets: int = 100_000_000
    rekey_after_seconds: float = 600.0
    # Node names (certificate names) this node's xTR refuses: their keys are dropped and any
    # later key exchange from them is refused (the controller delivers its revocation list).
    revoked_peers: frozenset[str] = frozenset()
    # SHA-256 fingerprints (hex, of the DER) of node certificates a renewal replaced, once their
    # grace period is over: a key exchange offering one is refused although the CA signed it
    # and it has not expired (its key may have been left behind on an old disk).
    retired_certificates: frozenset[str] = frozenset()
    # A peer that answers without a key (no crypto, or none of our cipher suite): with this
    # explicit, logged opt-in, traffic with it goes plaintext (RFC 8061 §5); otherwise it has no
    # path (drop peer-without-encryption).
    plaintext_fallback: bool = False
    # RLOC prefixes of lispers.net xTRs: their RFC 8061 profile (mesh.lispers_peer), opt-in.
    lispers_peers: tuple[IpNetwork, ...] = ()
    # EIDs the controller assigned to a node beyond its certificate's (the app replicas placed
    # on it, which move): (node name, prefix). A key exchange from that node may claim them and
    # its packets may come from them, exactly as for the EIDs its certificate names.
    delegated_eids: tuple[tuple[str, IpNetwork], ...] = ()


@dataclass(frozen=True)
class Identity:
    key: Path
    cert: Path
    ca: Path
    # The node key as an object instead of the `key` file: a TPM-resident key whose sign() runs
    # in the TPM (the node agent passes it; a config file cannot).
    private_key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False)


@dataclass(frozen=True)
class NodeConfig:
    name: str
    source: Path
    state_dir: Path
    run_dir: Path
    security: Security
    identity: Identity | None
    xtr: XtrConfig | None
    map_server: MapServerConfig | None
    log_level: str = "info"
    dataplane: str = "auto"  # "c" (mesh._fastpath), "python" (the reference), "auto": c if built
    # None (no `policy:` section): allow everything until the controller delivers a policy, so
    # a node without one behaves as before policies existed; with one, deny by default.
    policy: NodePolicy | None = None
    # Where /metrics (Prometheus) is served, HOST:PORT; None: not served (opt-in).
    metrics_listen: str | None = None

    @property
    def control_socket(self) -> Path:
        return self.run_dir / f"{self.name}.sock"


class _Fields:
    """Reads one mapping, tracking the dotted path so errors name the field."""

    def __init__(self, data: Any, path: str, where: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: {path or 'top level'}: expected a mapping")
        self.data = data
        self.path = path
        self.where = where
        self.used: set[str] = set()

    def fail(self, key: str, message: str) -> ConfigError:
        name = f"{self.path}.{key}" if self.path else key
        return ConfigError(f"{self.where}: {name}: {message}")

    def get(self, key: str, default: Any = None, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.fail(key, "is required")
            return default
        return self.data[key]

    def sub(self, key: str, required: bool = False) -> _Fields | None:
        value = self.get(key, required=required)
        if value is None:
            return None
        return _Fields(value, f"{self.path}.{key}" if self.path else key, self.where)

    def items(self, key: str) -> list[tuple[str, Any]]:
        value = self.get(key, [])
        if not isinstance(value, list):
            raise self.fail(key, "expected a list")
        return [(f"{key}[{i}]", item) for i, item in enumerate(value)]

    def string(self, key: str, default: str | None = None, required: bool = False) -> str:
        value = self.get(key, default, required)
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {value!r}")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise self.fail(key, f"expected an integer in {low}..{high}, got {value!r}")
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.get(key, default)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not low <= value <= high:
            raise self.fail(key, f"expected a number in {low}..{high}, got {value!r}")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {value!r}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.fail(unknown[0], "unknown field (check the spelling)")


def _address(fields: _Fields, key: str, value: Any) -> IpAddress:
    try:
        return ip_address(str(value))
    except ValueError:
        raise fields.fail(key, f"{value!r} is not an IP address") from None


def _network(fields: _Fields, key: str, value: Any) -> IpNetwork:
    try:
        return ip_network(str(value), strict=True)
    except ValueError as exc:
        raise fields.fail(key, f"{value!r} is not a network prefix ({exc})") from None


def _key(fields: _Fields, key: str, value: Any) -> bytes:
    if not isinstance(value, str) or len(value) < 8:
        raise fields.fail(key, "expected a shared key string of at least 8 characters")
    return value.encode()


def _path(fields: _Fields, key: str, base: Path) -> Path:
    path = Path(fields.string(key, required=True))
    return path if path.is_absolute() else base / path


def _timers(fields: _Fields | None) -> Timers:
    if fields is None:
        return Timers()
    defaults = Timers()
    timers = Timers(
        register_interval=fields.number("register_interval", defaults.register_interval, 1, 3600),
        register_ttl_minutes=fields.integer(
            "register_ttl_minutes", defaults.register_ttl_minutes, 1, 1440
        ),
        probe_interval=fields.number("probe_interval", defaults.probe_interval, 0.05, 60),
        probe_dead_after=fields.number("probe_dead_after", defaults.probe_dead_after, 0.1, 600),
        probe_idle_interval=fields.number(
            "probe_idle_interval", defaults.probe_idle_interval, 1, 86400
        ),
        map_request_retry=fields.number("map_request_retry", defaults.map_request_retry, 0.05, 60),
        queue_limit=fields.integer("queue_limit", defaults.queue_limit, 0, 1024),
    )
    fields.finish()
    return timers


def _rtrs(fields: _Fields) -> tuple[RtrRef, ...]:
    rtrs = []
    for key, item in fields.items("rtrs"):
        sub = _Fields(item, f"{fields.path}.{key}", fields.where)
        rtrs.append(
            RtrRef(
                name=sub.string("name", required=True),
                address=_address(sub, "address", sub.get("address", required=True)),
            )
        )
        sub.finish()
    return tuple(rtrs)


def _rtr_role(fields: _Fields | None) -> RtrRole | None:
    if fields is None:
        return None
    role = RtrRole(stale_after=fields.number("stale_after", 30.0, 1, 3600))
    fields.finish()
    return role


def _xtr(fields: _Fields) -> XtrConfig:
    rlocs = []
    for key, item in fields.items("rlocs"):
        sub = _Fields(item, f"{fields.path}.{key}", fields.where)
        rlocs.append(
            Rloc(
                address=_address(sub, "address", sub.get("address", required=True)),
                interface=sub.get("interface"),
                priority=sub.integer("priority", 1, 0, 255),
                weight=sub.integer("weight", 100, 0, 255),
            )
        )
        sub.finish()
    if not rlocs:
        raise fields.fail("rlocs", "at least one RLOC (uplink address) is required")
    map_servers = []
    for key, item in fields.items("map_servers"):
        sub = _Fields(item, f"{fields.path}.{key}", fields.where)
        map_servers.append(
            MapServerRef(
                address=_address(sub, "address", sub.get("address", required=True)),
                key=_key(sub, "key", sub.get("key", required=True)),
                key_id=sub.integer("key_id", 0, 0, 255),
                port=sub.integer("port", 4342, 1, 65535),
            )
        )
        sub.finish()
    eid_prefixes = tuple(_network(fields, k, v) for k, v in fields.items("eid_prefixes"))
    if not eid_prefixes:
        raise fields.fail("eid_prefixes", "at least one EID prefix is required")
    eid_addresses = tuple(_address(fields, k, v) for k, v in fields.items("eid_addresses"))
    for address in eid_addresses:
        if not any(address in prefix for prefix in eid_prefixes):
            raise fields.fail("eid_addresses", f"{address} is not inside any eid_prefixes")
    resolvers = tuple(_address(fields, k, v) for k, v in fields.items("map_resolvers"))
    config = XtrConfig(
        tun=fields.string("tun", "lm0"),
        instance_id=fields.integer("instance_id", 0, 0, (1 << 24) - 1),
        eid_prefixes=eid_prefixes,
        eid_addresses=eid_addresses,
        overlay_routes=tuple(_network(fields, k, v) for k, v in fields.items("overlay_routes")),
        rlocs=tuple(rlocs),
        map_servers=tuple(map_servers),
        map_resolvers=resolvers or tuple(ms.address for ms in map_servers),
        mtu=fields.integer("mtu", 1400, 1280, 9000),
        timers=_timers(fields.sub("timers")),
        mtu_probes=fields.boolean("mtu_probes", True),
        mss_clamp=fields.boolean("mss_clamp", False),
        rtrs=_rtrs(fields),
        rtr_keepalive=fields.number("rtr_keepalive", 10.0, 0.5, 600),
        rtr=_rtr_role(fields.sub("rtr")),
    )
    if len(config.tun) > 15:
        raise fields.fail("tun", f"{config.tun!r} is longer than 15 characters")
    fields.finish()
    return config


def _allowed(fields: _Fields, key: str, value: Any) -> tuple[int, IpNetwork]:
    """An allowed EID prefix: "10.1.0.0/16" (instance-id 0) or "[1000]10.1.0.0/16"."""
    text = str(value).strip()
    if text.startswith("["):
        iid_text, _, prefix_text = text[1:].partition("]")
        if not iid_text.isdigit() or int(iid_text) >= 1 << 24:
            raise fields.fail(key, f"{text!r}: instance-id must be an integer below 2^24")
        return int(iid_text), _network(fields, key, prefix_text)
    return 0, _network(fields, key, text)


def _map_server(fields: _Fields) -> MapServerConfig:
    sites = []
    for key, item in fields.items("sites"):
        sub = _Fields(item, f"{fields.path}.{key}", fields.where)
        keys_field = sub.get("keys", required=True)
        if not isinstance(keys_field, dict) or not keys_field:
            raise sub.fail("keys", "expected a mapping of key-id to shared key")
        keys = {}
        for key_id, secret in keys_field.items():
            if not isinstance(key_id, int) or not 0 <= key_id <= 255:
                raise sub.fail("keys", f"key-id {key_id!r} is not an integer in 0..255")
            keys[key_id] = _key(sub, f"keys.{key_id}", secret)
        allowed = tuple(_allowed(sub, k, v) for k, v in sub.items("allowed"))
        if not allowed:
            raise sub.fail("allowed", "at least one allowed EID prefix is required")
        sites.append(
            SiteConfig(
                name=sub.string("name", required=True),
                keys=keys,
                allowed=allowed,
                accept_more_specifics=sub.boolean("accept_more_specifics", True),
                proxy_reply=sub.boolean("proxy_reply", False),
                max_registrations=sub.integer("max_registrations", MAX_REGISTRATIONS, 1, 1 << 31),
            )
        )
        sub.finish()
    listen = tuple(_address(fields, k, v) for k, v in fields.items("listen"))
    config = MapServerConfig(
        listen=listen or (IPv4Address("0.0.0.0"),),
        sites=tuple(sites),
        port=fields.integer("port", 4342, 1, 65535),
        accept_unauthenticated_info=fields.boolean("accept_unauthenticated_info", False),
    )
    fields.finish()
    return config


def _security(fields: _Fields | None) -> Security:
    if fields is None:
        return Security()
    suite_name = fields.string("cipher_suite", "aes128-gcm")
    suites = {name: number for number, name in CIPHER_SUITE_NAMES.items()}
    if suite_name not in suites:
        raise fields.fail("cipher_suite", f"unknown {suite_name!r} (known: {', '.join(suites)})")
    security = Security(
        encryption=fields.boolean("encryption", True),
        cipher_suite=suites[suite_name],
        authenticate_key_exchange=fields.boolean("authenticate_key_exchange", True),
        rekey_after_packets=fields.integer("rekey_after_packets", 100_000_000, 16, 1 << 40),
        rekey_after_seconds=fields.number("rekey_after_seconds", 600.0, 1.0, 86400.0),
        revoked_peers=_revoked_peers(fields),
        retired_certificates=_fingerprints(fields, "retired_certificates"),
        plaintext_fallback=fields.boolean("plaintext_fallback", False),
        lispers_peers=tuple(_network(fields, k, v) for k, v in fields.items("lispers_peers")),
    )
    fields.finish()
    return security


def _revoked_peers(fields: _Fields) -> frozenset[str]:
    names = set()
    for where, item in fields.items("revoked_peers"):
        if not isinstance(item, str) or not item:
            raise fields.fail(where, f"expected a node name, got {item!r}")
        names.add(item)
    return frozenset(names)


def _fingerprints(fields: _Fields, key: str) -> frozenset[str]:
    out = set()
    for where, item in fields.items(key):
        if not isinstance(item, str) or not re.fullmatch(r"[0-9a-f]{64}", item):
            raise fields.fail(
                where, f"expected a SHA-256 fingerprint (64 hex digits), not {item!r}"
            )
        out.add(item)
    return frozenset(out)


def _policy(fields: _Fields) -> NodePolicy | None:
    data = fields.get("policy")
    if data is None:
        return None
    try:
        return NodePolicy.from_dict(data)
    except ValueError as exc:
        raise fields.fail("policy", str(exc)) from None


def parse_config(data: Any, source: Path) -> NodeConfig:
    where = str(source)
    top = _Fields(data, "", where)
    base = source.parent
    name = top.string("name", required=True)
    if not name.replace("-", "").replace("_", "").isalnum():
        raise top.fail("name", f"{name!r}: use letters, digits, '-' and '_' only")
    security = _security(top.sub("security"))
    identity_fields = top.sub("identity")
    identity = None
    if identity_fields is not None:
        identity = Identity(
            key=_path(identity_fields, "key", base),
            cert=_path(identity_fields, "cert", base),
            ca=_path(identity_fields, "ca", base),
        )
        identity_fields.finish()
    xtr_fields = top.sub("xtr")
    ms_fields = top.sub("map_server")
    metrics_fields = top.sub("metrics")
    metrics_listen = None
    if metrics_fields is not None:
        metrics_listen = metrics_fields.string("listen", "127.0.0.1:9464")
        try:
            parse_listen(metrics_listen)
        except MetricsError as exc:
            raise metrics_fields.fail("listen", str(exc)) from None
        metrics_fields.finish()
    config = NodeConfig(
        name=name,
        source=source,
        state_dir=Path(top.string("state_dir", "/var/lib/lispmesh")),
        run_dir=Path(top.string("run_dir", "/run/lispmesh")),
        security=security,
        identity=identity,
        xtr=_xtr(xtr_fields) if xtr_fields else None,
        map_server=_map_server(ms_fields) if ms_fields else None,
        log_level=top.string("log_level", "info"),
        dataplane=top.string("dataplane", "auto"),
        policy=_policy(top),
        metrics_listen=metrics_listen,
    )
    if config.dataplane not in ("auto", "c", "python"):
        raise top.fail("dataplane", f"{config.dataplane!r}: use auto, c or python")
    top.finish()
    if config.xtr is None and config.map_server is None:
        raise ConfigError(f"{where}: give at least one role: 'xtr' or 'map_server'")
    needs_identity = config.xtr is not None and security.encryption
    if needs_identity and security.authenticate_key_exchange and identity is None:
        raise ConfigError(
            f"{where}: identity: is required for the authenticated key exchange "
            "(or set security.authenticate_key_exchange: false for plain RFC 8061 interop)"
        )
    return config


def load_config(path: Path) -> NodeConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{line}: invalid YAML: {problem}") from None
    return parse_config(data, path)
