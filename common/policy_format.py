"""The compiled network policy: the per-node rule format the controller and the nodes share.

The controller compiles its policy language (groups, tags, tests) into one `NodePolicy` per node:
two ordered rule lists, one for packets leaving the node's workloads (egress, checked at the ITR
before sealing) and one for packets arriving for them (ingress, checked at the ETR after the
packet opened and its source EID was verified). `NodePolicy.to_dict()` is the JSON of the
desired-state document and of the node YAML's `policy:` section:

    {"version": 7,
     "egress":  [{"id": 1, "name": "web-to-db", "action": "allow", "src": ["10.1.1.0/24"],
                  "dst": ["10.1.2.0/24", "fd00:1:2::/64"], "protocol": 6, "ports": [[5432, 5432]]}],
     "ingress": []}

This is a contract, low enough that both the controller (`controller_api.policy`) and the node's
engines (`mesh.policy`, mesh/_fastpath.c) use it without importing each other. What the rules
mean when packets meet them is in mesh/policy/engine.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any, Literal

IpNetwork = IPv4Network | IPv6Network
Direction = Literal["egress", "ingress"]
Action = Literal["allow", "deny"]

EGRESS, INGRESS = 0, 1
DIRECTIONS: tuple[Direction, Direction] = ("egress", "ingress")
TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
PROTOCOL_NAMES = {"tcp": TCP, "udp": UDP, "icmp": ICMP, "icmpv6": ICMPV6}
MAX_RULE_ID = (1 << 31) - 1

_RULE_FIELDS = {"id", "name", "action", "src", "dst", "protocol", "ports"}
_POLICY_FIELDS = {"version", "egress", "ingress"}


@dataclass(frozen=True)
class PolicyRule:
    """One compiled rule. Empty `src`/`dst`/`ports` mean any; `protocol` None means any."""

    id: int
    name: str
    action: Action
    src: tuple[IpNetwork, ...] = ()
    dst: tuple[IpNetwork, ...] = ()
    protocol: int | None = None
    ports: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        def bad(message: str) -> ValueError:
            return ValueError(f"rule {self.id!r} ({self.name!r}): {message}")

        if not isinstance(self.id, int) or isinstance(self.id, bool):
            raise bad("id must be an integer")
        if not 0 <= self.id <= MAX_RULE_ID:
            raise bad(f"id must be in 0..{MAX_RULE_ID}")
        if not isinstance(self.name, str) or not self.name:
            raise bad("name must be a non-empty string")
        if self.action not in ("allow", "deny"):
            raise bad(f"action must be 'allow' or 'deny', not {self.action!r}")
        for label, nets in (("src", self.src), ("dst", self.dst)):
            if not all(isinstance(n, IPv4Network | IPv6Network) for n in nets):
                raise bad(f"{label} must hold IP networks")
        if self.protocol is not None and (
            not isinstance(self.protocol, int) or not 0 <= self.protocol <= 255
        ):
            raise bad(f"protocol must be 0..255 or None, not {self.protocol!r}")
        for lo, hi in self.ports:
            if not (0 <= lo <= hi <= 65535):
                raise bad(f"port range {lo}-{hi} is not within 0..65535 (low first)")
        if self.ports and self.protocol not in (None, TCP, UDP, ICMP, ICMPV6):
            raise bad(f"ports need protocol tcp or udp (protocol {self.protocol} has none)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "action": self.action,
            "src": [str(n) for n in self.src],
            "dst": [str(n) for n in self.dst],
            "protocol": self.protocol,
            "ports": [[lo, hi] for lo, hi in self.ports],
        }

    @classmethod
    def from_dict(cls, data: Any) -> PolicyRule:
        """Lenient where it cannot hurt (protocol names, a port as one number or "lo-hi"),
        strict where a typo could open a hole (unknown fields are an error)."""
        if not isinstance(data, dict):
            raise ValueError(f"a rule must be a mapping, not {type(data).__name__}")
        label = f"rule {data.get('id')!r} ({data.get('name')!r})"
        unknown = sorted(set(data) - _RULE_FIELDS)
        if unknown:
            raise ValueError(
                f"{label}: unknown field {unknown[0]!r} (known: {_known(_RULE_FIELDS)})"
            )
        for required in ("id", "name", "action"):
            if required not in data:
                raise ValueError(f"{label}: {required} is required")
        try:
            return cls(
                id=data["id"],
                name=data["name"],
                action=data["action"],
                src=_networks(data.get("src"), "src"),
                dst=_networks(data.get("dst"), "dst"),
                protocol=_protocol(data.get("protocol")),
                ports=_ports(data.get("ports")),
            )
        except ValueError as exc:
            text = str(exc)
            raise ValueError(text if text.startswith("rule ") else f"{label}: {text}") from None


@dataclass(frozen=True)
class NodePolicy:
    """Everything one node enforces: a version (for status and change detection) and two lists."""

    version: int
    egress: tuple[PolicyRule, ...] = ()
    ingress: tuple[PolicyRule, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.version, int) or isinstance(self.version, bool) or self.version < 0:
            raise ValueError(f"version must be a non-negative integer, not {self.version!r}")
        if self.version >= 1 << 63:
            raise ValueError("version must be below 2^63")
        for direction, rules in zip(DIRECTIONS, (self.egress, self.ingress), strict=True):
            seen: dict[int, str] = {}
            for rule in rules:
                if rule.id in seen:
                    raise ValueError(
                        f"{direction}: rule {rule.id} ({rule.name!r}): id already used by "
                        f"{seen[rule.id]!r}"
                    )
                seen[rule.id] = rule.name

    def rules(self, direction: int) -> tuple[PolicyRule, ...]:
        return self.egress if direction == EGRESS else self.ingress

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "egress": [r.to_dict() for r in self.egress],
            "ingress": [r.to_dict() for r in self.ingress],
        }

    @classmethod
    def from_dict(cls, data: Any) -> NodePolicy:
        if not isinstance(data, dict):
            raise ValueError("expected a mapping with version, egress and ingress")
        unknown = sorted(set(data) - _POLICY_FIELDS)
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r} (known: {_known(_POLICY_FIELDS)})")
        if "version" not in data:
            raise ValueError("version is required")
        lists: list[tuple[PolicyRule, ...]] = []
        for direction in DIRECTIONS:
            items = data.get(direction) or []
            if not isinstance(items, list):
                raise ValueError(f"{direction}: expected a list of rules")
            rules = []
            for index, item in enumerate(items):
                try:
                    rules.append(PolicyRule.from_dict(item))
                except ValueError as exc:
                    raise ValueError(f"{direction}[{index}]: {exc}") from None
            lists.append(tuple(rules))
        return cls(version=data["version"], egress=lists[0], ingress=lists[1])


def _known(fields: set[str]) -> str:
    return ", ".join(sorted(fields))


def _networks(value: Any, label: str) -> tuple[IpNetwork, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"{label}: expected a list of prefixes")
    nets = []
    for item in value:
        try:
            nets.append(ip_network(str(item), strict=True))
        except ValueError as exc:
            raise ValueError(f"{label}: {item!r} is not a network prefix ({exc})") from None
    return tuple(nets)


def _protocol(value: Any) -> int | None:
    if value is None or value == "any":
        return None
    if isinstance(value, str):
        if value.lower() not in PROTOCOL_NAMES:
            names = ", ".join([*PROTOCOL_NAMES, "any"])
            raise ValueError(f"protocol: unknown {value!r} (use {names} or a number)")
        return PROTOCOL_NAMES[value.lower()]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ValueError(f"protocol: {value!r} is not a protocol number (0..255)")
    return value


def _ports(value: Any) -> tuple[tuple[int, int], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        value = [value]
    ranges = []
    for item in value:
        if isinstance(item, str) and "-" in item:
            parts: list[Any] = item.split("-", 1)
        elif isinstance(item, list | tuple):
            parts = list(item)
        else:
            parts = [item, item]
        try:
            if len(parts) != 2:
                raise ValueError
            lo, hi = (int(p) for p in parts)
        except (TypeError, ValueError):
            raise ValueError(f"ports: {item!r} is not a port or a [low, high] range") from None
        if not 0 <= lo <= hi <= 65535:
            raise ValueError(f"ports: {item!r} is not within 0..65535 (low first)")
        ranges.append((lo, hi))
    return tuple(ranges)
