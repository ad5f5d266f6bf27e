"""Network policy on the data path: the compiled per-node rule format and its reference engine.

The controller compiles its policy language (groups, tags, tests) into one `NodePolicy` per node:
two ordered rule lists, one for packets leaving the node's workloads (egress, checked at the ITR
before sealing) and one for packets arriving for them (ingress, checked at the ETR after the
packet opened and its source EID was verified). `NodePolicy.to_dict()` is the JSON of the
desired-state document and of the node YAML's `policy:` section:

    {"version": 7,
     "egress":  [{"id": 1, "name": "web-to-db", "action": "allow", "src": ["10.1.1.0/24"],
                  "dst": ["10.1.2.0/24", "fd00:1:2::/64"], "protocol": 6, "ports": [[5432, 5432]]}],
     "ingress": []}

Semantics, shared with the C engine (mesh/_fastpath.c; the unit tests hold the two to identical
verdicts, counters and flow logs):

* A node with a policy denies by default: rules are evaluated in order, the first match wins, no
  match denies. A node with no policy at all (None) allows everything, as nodes did before
  policies existed, until the controller delivers one.
* Stateful: an allowed new flow is recorded. Later packets of the same 5-tuple in the same
  direction, and its return traffic (the reversed 5-tuple in the other direction), pass without
  consulting the rules. So "A may open TCP to B:443" needs no reverse rule, and B still cannot
  open anything towards A.
* The 5-tuple: addresses, protocol, TCP/UDP ports. ICMP/ICMPv6 echo carries its identifier as
  (id, 0) in a request and (0, id) in a reply, so a reply is the reverse of its request while an
  echo request from the other side is a new flow. Fragments after the first and other protocols
  have no ports. IPv6 hop-by-hop, routing, destination-options and fragment headers are walked.
* Rule ports are destination port ranges; they are ignored on ICMP/ICMPv6 rules, and a rule
  with ports and no protocol matches only packets that have ports (TCP, UDP).
* Flows idle out (TCP 300 s, 10 s once a FIN or RST was seen; UDP 60 s; ICMP 30 s; others
  60 s). The table is bounded: when full, expired flows go first, then the least recently seen
  eighth.
* `replace_policy` re-checks every live flow against the new rules of the direction it was
  opened in: flows still allowed survive (an update does not cut established connections), the
  others are removed, so their next packet is judged as a new flow. Counters restart with the
  new policy.

Sans-IO: time is an argument, nothing here reads a clock or a socket.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import Any, Literal, NamedTuple

IpNetwork = IPv4Network | IPv6Network
Direction = Literal["egress", "ingress"]
Action = Literal["allow", "deny"]

EGRESS, INGRESS = 0, 1
DIRECTIONS: tuple[Direction, Direction] = ("egress", "ingress")
TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
PROTOCOL_NAMES = {"tcp": TCP, "udp": UDP, "icmp": ICMP, "icmpv6": ICMPV6}
MAX_RULE_ID = (1 << 31) - 1

TCP_TIMEOUT = 300.0
TCP_CLOSING_TIMEOUT = 10.0  # after a FIN or RST: the connection is going away
UDP_TIMEOUT = 60.0
ICMP_TIMEOUT = 30.0
OTHER_TIMEOUT = 60.0
MAX_FLOWS = 65536
FLOW_LOG_SIZE = 256
EVICT_FRACTION = 8  # a full table drops this fraction at once, so eviction is rare, not per flow

# Verdict reasons; the C engine returns the same strings.
NO_POLICY = "no-policy"
ESTABLISHED = "established"
RETURN = "return"
ALLOWED = "allowed"
DENIED = "denied"
DEFAULT_DENY = "default-deny"
MALFORMED = "malformed"

_TCP_FIN_RST = 0x05
_V6_OPTION_HEADERS = (0, 43, 60)  # hop-by-hop, routing, destination options
_V6_FRAGMENT = 44
_MAX_V6_HEADERS = 8
_RULE_FIELDS = {"id", "name", "action", "src", "dst", "protocol", "ports"}
_POLICY_FIELDS = {"version", "egress", "ingress"}


# ---------------------------------------------------------------------------- the format


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


# ---------------------------------------------------------------------------- packets


class FlowTuple(NamedTuple):
    """What the policy sees of a packet. Addresses are the packed 4 or 16 bytes. (A NamedTuple,
    like Verdict: one is made per packet, and a frozen dataclass costs several times more.)"""

    version: int
    src: bytes
    dst: bytes
    protocol: int
    sport: int = 0
    dport: int = 0
    has_ports: bool = False  # TCP/UDP with its header present (not a later fragment)
    tcp_flags: int = 0


def parse_flow(packet: bytes) -> FlowTuple | None:
    """The 5-tuple of an IPv4/IPv6 packet; None if it is not one."""
    found = _parse(packet)
    return None if found is None else FlowTuple._make(found)


_Parsed = tuple[int, bytes, bytes, int, int, int, bool, int]  # FlowTuple's fields
_V4_PORTS = struct.Struct("!B5xHxB2x4s4sHH")  # version/IHL, fragment, protocol, src, dst, ports
_V6_PORTS = struct.Struct("!B5xBx16s16sHH")  # version, next header, src, dst, ports


def _parse(packet: bytes) -> _Parsed | None:
    """parse_flow as a plain tuple. TCP and UDP without IP options or IPv6 extension headers
    (nearly every packet) take one struct call; the rest the general walk."""
    n = len(packet)
    if n >= 24 and packet[0] == 0x45:
        _, fragment, protocol, src, dst, sport, dport = _V4_PORTS.unpack_from(packet)
        if protocol in (TCP, UDP) and not fragment & 0x1FFF:
            flags = packet[33] if protocol == TCP and n >= 34 else 0
            return (4, src, dst, protocol, sport, dport, True, flags)
    elif n >= 44 and packet[0] >> 4 == 6:
        _, protocol, src, dst, sport, dport = _V6_PORTS.unpack_from(packet)
        if protocol in (TCP, UDP):
            flags = packet[53] if protocol == TCP and n >= 54 else 0
            return (6, src, dst, protocol, sport, dport, True, flags)
    return _parse_walk(packet)


def _parse_walk(packet: bytes) -> _Parsed | None:
    n = len(packet)
    if n < 1:
        return None
    version = packet[0] >> 4
    if version == 4:
        off = (packet[0] & 0x0F) * 4
        if n < 20 or off < 20 or n < off:
            return None
        src, dst, protocol = packet[12:16], packet[16:20], packet[9]
        if packet[6] & 0x1F or packet[7]:  # a fragment after the first: no L4 header
            return (4, src, dst, protocol, 0, 0, False, 0)
    elif version == 6:
        if n < 40:
            return None
        src, dst, protocol, off = packet[8:24], packet[24:40], packet[6], 40
        for _ in range(_MAX_V6_HEADERS):
            if protocol in _V6_OPTION_HEADERS:
                if n < off + 2:
                    break
                protocol, off = packet[off], off + (packet[off + 1] + 1) * 8
            elif protocol == _V6_FRAGMENT:
                if n < off + 8:
                    break
                later = packet[off + 2] or packet[off + 3] & 0xF8  # offset != 0
                protocol, off = packet[off], off + 8
                if later:
                    return (6, src, dst, protocol, 0, 0, False, 0)
            else:
                break
    else:
        return None
    if protocol in (TCP, UDP) and n >= off + 4:
        flags = packet[off + 13] if protocol == TCP and n >= off + 14 else 0
        sport = packet[off] << 8 | packet[off + 1]
        dport = packet[off + 2] << 8 | packet[off + 3]
        return (version, src, dst, protocol, sport, dport, True, flags)
    icmp = (version == 4 and protocol == ICMP) or (version == 6 and protocol == ICMPV6)
    if icmp and n >= off + 8:
        kind = packet[off]
        ident = packet[off + 4] << 8 | packet[off + 5]
        request, reply = (8, 0) if version == 4 else (128, 129)
        if kind == request:
            return (version, src, dst, protocol, ident, 0, False, 0)
        if kind == reply:
            return (version, src, dst, protocol, 0, ident, False, 0)
    return (version, src, dst, protocol, 0, 0, False, 0)


# ---------------------------------------------------------------------------- matching


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A rule in the form matching wants: integer prefixes, port ranges only where they apply."""

    rule: PolicyRule
    allow: bool
    protocol: int | None
    src: tuple[tuple[int, int, int], ...]  # (version, network, mask)
    dst: tuple[tuple[int, int, int], ...]
    ports: tuple[tuple[int, int], ...]  # empty when ports do not restrict the rule
    verdicts: tuple[Verdict, Verdict, Verdict]  # made once: established, return, new flow

    @classmethod
    def of(cls, rule: PolicyRule) -> _Compiled:
        def nets(prefixes: tuple[IpNetwork, ...]) -> tuple[tuple[int, int, int], ...]:
            return tuple((p.version, int(p.network_address), int(p.netmask)) for p in prefixes)

        icmp = rule.protocol in (ICMP, ICMPV6)
        allow = rule.action == "allow"
        return cls(
            rule,
            allow,
            rule.protocol,
            nets(rule.src),
            nets(rule.dst),
            () if icmp else rule.ports,
            (
                Verdict(True, rule.id, ESTABLISHED),
                Verdict(True, rule.id, RETURN),
                Verdict(allow, rule.id, ALLOWED if allow else DENIED),
            ),
        )

    def matches(self, f: FlowTuple, src: int, dst: int) -> bool:
        if self.protocol is not None and self.protocol != f.protocol:
            return False
        if self.src and not _in_any(f.version, src, self.src):
            return False
        if self.dst and not _in_any(f.version, dst, self.dst):
            return False
        if self.ports:
            if not f.has_ports:
                return False
            return any(lo <= f.dport <= hi for lo, hi in self.ports)
        return True


def _in_any(version: int, address: int, nets: tuple[tuple[int, int, int], ...]) -> bool:
    return any(v == version and address & mask == net for v, net, mask in nets)


def _first_match(rules: tuple[_Compiled, ...], f: FlowTuple) -> int | None:
    src, dst = int.from_bytes(f.src, "big"), int.from_bytes(f.dst, "big")
    for index, rule in enumerate(rules):
        if rule.matches(f, src, dst):
            return index
    return None


# ---------------------------------------------------------------------------- flows

FlowKey = tuple[int, bytes, bytes, int, int, int]  # direction, src, dst, protocol, sport, dport


@dataclass(slots=True)
class Flow:
    direction: int  # the direction it was opened in (its rules decide it)
    rule_index: int  # in that direction's rule list
    protocol: int
    has_ports: bool
    last_seen: float
    seq: int  # creation order: ties in last_seen evict the older flow first
    # Its rule's counters and verdicts, at hand for every packet (re-pointed by an update).
    stats: RuleCounters
    verdicts: tuple[Verdict, Verdict, Verdict]
    idle: float = 0.0  # its idle timeout (set by `close` and at creation)

    def __post_init__(self) -> None:
        self.idle = _idle_timeout(self.protocol)

    def close(self) -> None:
        """A FIN or RST was seen: the connection is going away."""
        if self.protocol == TCP:
            self.idle = TCP_CLOSING_TIMEOUT

    def expired(self, now: float) -> bool:
        return now - self.last_seen > self.idle


def _idle_timeout(protocol: int) -> float:
    if protocol == TCP:
        return TCP_TIMEOUT
    if protocol == UDP:
        return UDP_TIMEOUT
    if protocol in (ICMP, ICMPV6):
        return ICMP_TIMEOUT
    return OTHER_TIMEOUT


class FlowTable:
    """Allowed flows by 5-tuple and direction, bounded, with idle expiry on lookup."""

    def __init__(self, max_flows: int = MAX_FLOWS) -> None:
        if max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        self.max_flows = max_flows
        self.flows: dict[FlowKey, Flow] = {}
        self.seq = 0

    def __len__(self) -> int:
        return len(self.flows)

    def find(self, key: FlowKey, now: float) -> Flow | None:
        flow = self.flows.get(key)
        if flow is not None and now - flow.last_seen > flow.idle:
            del self.flows[key]
            return None
        return flow

    def add(self, key: FlowKey, flow: Flow, now: float) -> None:
        if len(self.flows) >= self.max_flows:
            self._make_room(now)
        self.seq += 1
        flow.seq = self.seq
        self.flows[key] = flow

    def _make_room(self, now: float) -> None:
        self.flows = {k: f for k, f in self.flows.items() if not f.expired(now)}
        if len(self.flows) < self.max_flows:
            return
        count = max(1, self.max_flows // EVICT_FRACTION)
        oldest = sorted(self.flows.items(), key=lambda kf: (kf[1].last_seen, kf[1].seq))
        for key, _ in oldest[:count]:
            del self.flows[key]

    def live(self, now: float) -> int:
        return sum(1 for f in self.flows.values() if not f.expired(now))

    def items(self) -> Iterator[tuple[FlowKey, Flow]]:
        return iter(list(self.flows.items()))

    def remove(self, key: FlowKey) -> None:
        del self.flows[key]

    def clear(self) -> None:
        self.flows.clear()


# ---------------------------------------------------------------------------- the engine


class Verdict(NamedTuple):
    allowed: bool
    rule_id: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class FlowLogEntry:
    """One new-flow decision."""

    time: float
    policy_version: int
    direction: Direction
    src: str
    dst: str
    protocol: int
    sport: int
    dport: int
    allowed: bool
    rule_id: int | None
    rule: str  # the rule's name, or "default-deny"

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "age": round(max(0.0, now - self.time), 1),
            "policy_version": self.policy_version,
            "direction": self.direction,
            "src": self.src,
            "dst": self.dst,
            "protocol": self.protocol,
            "sport": self.sport,
            "dport": self.dport,
            "verdict": "allow" if self.allowed else "deny",
            "rule_id": self.rule_id,
            "rule": self.rule,
        }


@dataclass
class RuleCounters:
    packets: int = 0
    bytes: int = 0
    flows: int = 0  # new flows this rule decided


@dataclass
class PolicyCounters:
    """Everything an engine counts, per policy (they restart with a new one)."""

    rules: tuple[list[RuleCounters], list[RuleCounters]] = field(default_factory=lambda: ([], []))
    default_deny: tuple[RuleCounters, RuleCounters] = field(
        default_factory=lambda: (RuleCounters(), RuleCounters())
    )
    malformed: int = 0
    revoked: int = 0  # flows a policy update removed


_ALLOW_ALL = Verdict(True, None, NO_POLICY)
_MALFORMED = Verdict(False, None, MALFORMED)
_DEFAULT_DENY = Verdict(False, None, DEFAULT_DENY)


def address_text(packed: bytes) -> str:
    return str(IPv4Address(packed) if len(packed) == 4 else IPv6Address(packed))


class PolicyEngine:
    """The reference enforcement: `check` one packet at a time, in either direction."""

    def __init__(
        self,
        policy: NodePolicy | None = None,
        now: float = 0.0,
        max_flows: int = MAX_FLOWS,
        log_size: int = FLOW_LOG_SIZE,
    ) -> None:
        self.policy: NodePolicy | None = None
        self.flows = FlowTable(max_flows)
        self.log: deque[FlowLogEntry] = deque(maxlen=log_size)
        self.counters = PolicyCounters()
        self._rules: tuple[tuple[_Compiled, ...], tuple[_Compiled, ...]] = ((), ())
        self.replace_policy(policy, now)

    def check(self, packet: bytes, direction: Direction, now: float) -> Verdict:
        if self.policy is None:
            return _ALLOW_ALL
        d = EGRESS if direction == "egress" else INGRESS
        parsed = _parse(packet)
        if parsed is None:
            self.counters.malformed += 1
            return _MALFORMED
        _, src, dst, protocol, sport, dport, _, flags = parsed
        size = len(packet)
        closing = protocol == TCP and flags & _TCP_FIN_RST
        key: FlowKey = (d, src, dst, protocol, sport, dport)
        # FlowTable.find, inlined (it runs for every packet): forward, then reversed.
        table = self.flows.flows
        flow = table.get(key)
        which = 0  # established
        if flow is not None and now - flow.last_seen > flow.idle:
            del table[key]
            flow = None
        if flow is None:
            back: FlowKey = (1 - d, dst, src, protocol, dport, sport)
            flow = table.get(back)
            which = 1  # return
            if flow is not None and now - flow.last_seen > flow.idle:
                del table[back]
                flow = None
        if flow is not None:
            flow.last_seen = now
            if closing:
                flow.close()
            stats = flow.stats
            stats.packets += 1
            stats.bytes += size
            return flow.verdicts[which]
        f = FlowTuple._make(parsed)
        index = _first_match(self._rules[d], f)
        if index is None:
            counters = self.counters.default_deny[d]
            counters.packets += 1
            counters.bytes += size
            self._log(now, d, f, False, None)
            return _DEFAULT_DENY
        compiled = self._rules[d][index]
        counters = self.counters.rules[d][index]
        counters.packets += 1
        counters.bytes += size
        counters.flows += 1
        self._log(now, d, f, compiled.allow, compiled.rule)
        if compiled.allow:
            flow = Flow(d, index, protocol, f.has_ports, now, 0, counters, compiled.verdicts)
            if closing:
                flow.close()
            self.flows.add(key, flow, now)
        return compiled.verdicts[2]

    def replace_policy(self, policy: NodePolicy | None, now: float) -> None:
        """Enforce `policy` from now on (None: no policy, allow everything). Live flows that the
        new rules still allow keep flowing; the others are removed."""
        self.policy = policy
        self.counters = PolicyCounters()
        if policy is None:
            self._rules = ((), ())
            self.flows.clear()
            self.log.clear()
            return
        self._rules = (
            tuple(_Compiled.of(r) for r in policy.egress),
            tuple(_Compiled.of(r) for r in policy.ingress),
        )
        self.counters.rules = (
            [RuleCounters() for _ in policy.egress],
            [RuleCounters() for _ in policy.ingress],
        )
        for key, flow in self.flows.items():
            if flow.expired(now):
                self.flows.remove(key)
                continue
            d, src, dst, protocol, sport, dport = key
            version = 4 if len(src) == 4 else 6
            f = FlowTuple(version, src, dst, protocol, sport, dport, flow.has_ports)
            index = _first_match(self._rules[d], f)
            if index is None or not self._rules[d][index].allow:
                self.flows.remove(key)
                self.counters.revoked += 1
            else:
                flow.rule_index = index
                flow.stats = self.counters.rules[d][index]
                flow.verdicts = self._rules[d][index].verdicts

    def _log(
        self, now: float, d: int, f: FlowTuple, allowed: bool, rule: PolicyRule | None
    ) -> None:
        assert self.policy is not None
        self.log.append(
            FlowLogEntry(
                now,
                self.policy.version,
                DIRECTIONS[d],
                address_text(f.src),
                address_text(f.dst),
                f.protocol,
                f.sport,
                f.dport,
                allowed,
                rule.id if rule is not None else None,
                rule.name if rule is not None else DEFAULT_DENY,
            )
        )

    def status(self, now: float, enforced_by: str = "python") -> dict[str, Any]:
        return policy_status(
            self.policy,
            self.counters,
            self.log,
            self.flows.live(now),
            self.flows.max_flows,
            now,
            enforced_by,
        )


def policy_status(
    policy: NodePolicy | None,
    counters: PolicyCounters,
    log: Iterable[FlowLogEntry],
    flows: int,
    max_flows: int,
    now: float,
    enforced_by: str,
    log_limit: int = 100,
) -> dict[str, Any]:
    """The `policy` section of a node's status, the same whichever engine enforces it."""
    if policy is None:
        return {"installed": False, "default": "allow", "enforced_by": enforced_by}
    rules: dict[str, list[dict[str, Any]]] = {}
    for d, direction in enumerate(DIRECTIONS):
        rules[direction] = [
            {
                "id": rule.id,
                "name": rule.name,
                "action": rule.action,
                "packets": c.packets,
                "bytes": c.bytes,
                "flows": c.flows,
            }
            for rule, c in zip(policy.rules(d), counters.rules[d], strict=True)
        ]
    entries = list(log)[-log_limit:]
    return {
        "installed": True,
        "version": policy.version,
        "default": "deny",
        "enforced_by": enforced_by,
        "flows": flows,
        "max_flows": max_flows,
        "rules": rules,
        "default_deny": {
            direction: {"packets": c.packets, "bytes": c.bytes}
            for direction, c in zip(DIRECTIONS, counters.default_deny, strict=True)
        },
        "malformed": counters.malformed,
        "revoked_flows": counters.revoked,
        "flow_log": [e.to_dict(now) for e in entries],
    }
