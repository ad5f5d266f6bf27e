"""The reference policy engine: `check` one packet at a time, in either direction.

Semantics, shared with the C engine (mesh/_fastpath.c; the unit tests hold the two to identical
verdicts, counters and flow logs):

* A node with a policy denies by default: rules are evaluated in order, the first match wins, no
  match denies. A node with no policy at all (None) allows everything, as nodes did before
  policies existed, until the controller delivers one.
* Stateful: an allowed new flow is recorded (mesh/policy/flows.py). Later packets of the same
  5-tuple in the same direction, and its return traffic (the reversed 5-tuple in the other
  direction), pass without consulting the rules. So "A may open TCP to B:443" needs no reverse
  rule, and B still cannot open anything towards A.
* The 5-tuple: addresses, protocol, TCP/UDP ports (mesh/policy/parser.py).
* Rule ports are destination port ranges; they are ignored on ICMP/ICMPv6 rules, and a rule
  with ports and no protocol matches only packets that have ports (TCP, UDP).
* `replace_policy` re-checks every live flow against the new rules of the direction it was
  opened in: flows still allowed survive (an update does not cut established connections), the
  others are removed, so their next packet is judged as a new flow. Counters restart with the
  new policy.

Sans-IO: time is an argument, nothing here reads a clock or a socket.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from common.policy_format import (
    DIRECTIONS,
    EGRESS,
    ICMP,
    ICMPV6,
    INGRESS,
    TCP,
    Direction,
    IpNetwork,
    NodePolicy,
    PolicyRule,
)
from mesh.policy.flows import MAX_FLOWS, Flow, FlowKey, FlowTable, RuleCounters, Verdict
from mesh.policy.parser import FlowTuple, parse

FLOW_LOG_SIZE = 256

# Verdict reasons; the C engine returns the same strings.
NO_POLICY = "no-policy"
ESTABLISHED = "established"
RETURN = "return"
ALLOWED = "allowed"
DENIED = "denied"
DEFAULT_DENY = "default-deny"
MALFORMED = "malformed"

_TCP_FIN_RST = 0x05


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
        parsed = parse(packet)
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
