"""The resolved lab model: what deploy builds, after parsing, inheritance and validation."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from netlab import naming

# Endpoint pseudo-nodes of containerlab: the host's root namespace and the management network.
HOST = "host"
MGMT_NET = "mgmt-net"

# Kinds whose node is a namespace of its own (bridge is one too, holding a Linux bridge).
NS_KINDS = ("linux", "router", "nat", "lispmesh-node", "lispmesh-controller", "bridge")
KNOWN_KINDS = (*NS_KINDS, "host")
# NAT behaviours of kind nat (RFC 4787 mapping/filtering; the rules are in netlab/kinds/nat.py).
NAT_PROFILES = ("full-cone", "address-restricted", "port-restricted", "symmetric")
DEFAULT_NAT_PROFILE = "port-restricted"  # what plain Linux masquerade does


@dataclass(frozen=True)
class Route:
    dst: str  # "default" or a network in CIDR form
    via: str | None = None
    dev: str | None = None  # interface name as written in the topology
    metric: int | None = None


@dataclass
class Endpoint:
    node: str  # a node name, or HOST / MGMT_NET
    iface: str  # as written in the topology
    ifname: str  # the kernel name (shortened to 15 characters when needed)
    mac: str | None = None


@dataclass
class Link:
    a: Endpoint
    z: Endpoint
    mtu: int | None = None
    line: int = 0
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Node:
    name: str
    kind: str
    ns: str | None  # namespace name; None for kind host (the root namespace)
    group: str = ""
    image: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    exec: list[str] = field(default_factory=list)
    cmd: str | None = None
    startup_config: str | None = None
    mgmt_ipv4: str | None = None  # "172.20.20.2/24" once allocated
    mgmt_ipv6: str | None = None
    network_mode: str | None = None
    sysctls: dict[str, str] = field(default_factory=dict)
    addresses: dict[str, list[str]] = field(default_factory=dict)  # kernel ifname -> CIDRs
    routes: list[Route] = field(default_factory=list)
    nat_outside: str | None = None  # kernel ifname
    nat_block_inbound: bool = True
    nat_profile: str = DEFAULT_NAT_PROFILE
    nat_udp_timeout: int | None = None  # seconds; None: the kernel's conntrack defaults
    line: int = 0

    @property
    def has_mgmt(self) -> bool:
        return self.mgmt_ipv4 is not None or self.mgmt_ipv6 is not None


@dataclass
class Mgmt:
    network: str = "clab"
    bridge: str = "br-mgmt"
    ipv4_subnet: str | None = "172.20.20.0/24"
    ipv6_subnet: str | None = "3fff:172:20:20::/64"

    def gateway(self, family: int) -> str | None:
        subnet = self.ipv4_subnet if family == 4 else self.ipv6_subnet
        if subnet is None:
            return None
        net = ipaddress.ip_network(subnet)
        return f"{net.network_address + 1}/{net.prefixlen}"


@dataclass
class Topology:
    name: str
    prefix: str
    path: Path  # the topology file (absolute)
    mgmt: Mgmt
    nodes: dict[str, Node]
    links: list[Link]
    warnings: list[str] = field(default_factory=list)
    workdir: Path | None = None  # where clab-<name>/ goes; default: beside the topology file

    @property
    def labdir(self) -> Path:
        """`clab-<name>/` next to the topology file, as containerlab does."""
        return (self.workdir or self.path.parent) / f"clab-{self.name}"

    @property
    def mgmt_ns(self) -> str:
        return naming.mgmt_ns_name(self.prefix, self.name)

    @property
    def needs_mgmt_ns(self) -> bool:
        return any(n.has_mgmt for n in self.nodes.values()) or any(
            MGMT_NET in (lk.a.node, lk.z.node) for lk in self.links
        )

    def namespaces(self) -> list[str]:
        """Every namespace deploy creates, mgmt first."""
        out = [self.mgmt_ns] if self.needs_mgmt_ns else []
        out += [n.ns for n in self.nodes.values() if n.ns]
        return out

    def ns_of(self, node: str) -> str | None:
        """Namespace of an endpoint's node (None: the root namespace)."""
        if node == HOST:
            return None
        if node == MGMT_NET:
            return self.mgmt_ns
        return self.nodes[node].ns

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data.pop("warnings")
        data.pop("workdir")
        return data

    def digest(self) -> str:
        """A fingerprint of everything deploy builds: equal digests mean nothing to change."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
