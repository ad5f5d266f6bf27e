"""Deciding flows with a policy, the way the nodes will: `explain` (which rule decides and why),
the embedded `tests:` (a failing case refuses the policy and is named), and the map-server's
question "may this node learn that EID's locators?".

A flow is decided by the first rule (in file order) whose source, destination, protocol and port
all match, inside the instance-id of its endpoints; no match denies. Nodes enforce the same rules
at both ends, compiled per node (`controller_api.policy.compile`), so this is also their verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

from controller_api.policy.inventory import (
    Inventory,
    InventoryNode,
    Member,
    Resolver,
    check_names,
)
from controller_api.policy.lang import PROTOCOLS, PolicyDoc, PolicyError, Rule, TestCase

IpAddress = IPv4Address | IPv6Address
IpNetwork = IPv4Network | IPv6Network
PROTOCOL_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}


@dataclass(frozen=True)
class Endpoint:
    text: str  # as given
    address: IpAddress
    instance_id: int
    node: InventoryNode | None

    def show(self) -> str:
        owner = f" ({self.node.name})" if self.node and self.node.name != self.text else ""
        label = self.text if self.text == str(self.address) else f"{self.text} = {self.address}"
        return f"{label}{owner}"


@dataclass(frozen=True)
class Skipped:
    rule: Rule
    why: str


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: Rule | None
    reason: str
    skipped: tuple[Skipped, ...] = ()

    @property
    def verdict(self) -> str:
        return "allow" if self.allowed else "deny"

    def by(self) -> str:
        return f"rule {self.rule.name!r}" if self.rule else "default deny"


@dataclass(frozen=True)
class Explanation:
    src: Endpoint
    dst: Endpoint
    protocol: int
    port: int | None
    decision: Decision
    filename: str

    def to_dict(self) -> dict[str, Any]:
        rule = self.decision.rule
        return {
            "verdict": self.decision.verdict,
            "rule": rule.name if rule else None,
            "line": rule.line if rule else None,
            "reason": self.decision.reason,
            "src": self.src.show(),
            "dst": self.dst.show(),
            "instance_id": self.src.instance_id,
            "protocol": PROTOCOL_NAMES.get(self.protocol, str(self.protocol)),
            "port": self.port,
            "skipped": [
                {"rule": s.rule.name, "line": s.rule.line, "why": s.why}
                for s in self.decision.skipped
            ],
        }


@dataclass(frozen=True)
class TestFailure:
    case: TestCase
    got: Decision

    def message(self, doc: PolicyDoc) -> str:
        where = f" ({doc.where(self.got.rule.line)})" if self.got.rule else ""
        return (
            f"{doc.where(self.case.line)}: {self.case.label()}: expected {self.case.expect}, "
            f"got {self.got.verdict} by {self.got.by()}{where}"
        )


def _proto_number(text: str, version: int) -> int:
    if text.isdigit():
        return int(text)
    if text == "icmp":
        return 1 if version == 4 else 58
    return PROTOCOLS[text][0]


def _match(members: tuple[Member, ...] | None, address: IpAddress) -> str | None:
    if members is None:
        return "any"
    for m in members:
        if m.prefix.version == address.version and address in m.prefix:
            return f"{m.prefix}, {m.why}" if str(m.prefix) not in m.why else m.why
    return None


def _overlaps(members: tuple[Member, ...] | None, prefixes: tuple[IpNetwork, ...]) -> bool:
    if members is None:
        return True
    return any(
        m.prefix.version == p.version and m.prefix.overlaps(p) for m in members for p in prefixes
    )


def _covers(members: tuple[Member, ...] | None, prefixes: tuple[IpNetwork, ...]) -> bool:
    if members is None:
        return True
    return all(
        any(m.prefix.version == p.version and p.subnet_of(m.prefix) for m in members)  # type: ignore[arg-type]
        for p in prefixes
    )


def _host(prefix: IpNetwork) -> IpAddress:
    return prefix.network_address + (1 if prefix.num_addresses > 2 else 0)


@dataclass
class Evaluator:
    doc: PolicyDoc
    inventory: Inventory
    warnings: list[str] = field(default_factory=list)
    _resolvers: dict[int, Resolver] = field(default_factory=dict)

    def check(self) -> list[str]:
        """Names against the inventory, then the embedded tests: PolicyError on the first
        problem (a failing test names the case); returns warnings."""
        self.warnings = check_names(self.doc, self.inventory)
        failures = self.failures()
        if failures:
            more = f" (and {len(failures) - 1} more failing)" if len(failures) > 1 else ""
            raise PolicyError(failures[0].message(self.doc) + more)
        return self.warnings

    def resolver(self, instance_id: int) -> Resolver:
        resolver = self._resolvers.get(instance_id)
        if resolver is None:
            resolver = self._resolvers[instance_id] = Resolver(
                self.doc, self.inventory, instance_id
            )
        return resolver

    # ------------------------------------------------------------------ endpoints

    def _parse(self, text: str, where: str) -> tuple[int | None, InventoryNode | None, Any]:
        """(explicit iid, node, fixed address or tuple of prefixes)."""
        iid = None
        body = text.strip()
        if body.startswith("["):
            close = body.find("]")
            if close < 0 or not body[1:close].isdigit():
                raise PolicyError(f"{where}: {text!r}: expected [INSTANCE-ID]ADDRESS")
            iid, body = int(body[1:close]), body[close + 1 :]
        node = self.inventory.by_name.get(body)
        if node is not None and iid is None:
            return node.instance_id, node, None
        if body.startswith("app:"):
            return self._app_endpoint(body, iid, where)
        if body in self.doc.hosts:
            return iid, None, self.doc.hosts[body]
        try:
            return iid, None, ip_address(body)
        except ValueError:
            pass
        try:
            return iid, None, (ip_network(body, strict=False),)
        except ValueError:
            raise PolicyError(
                f"{where}: {text!r} is not an enrolled node, a host of the policy or an address"
            ) from None

    def _app_endpoint(self, body: str, iid: int | None, where: str) -> tuple[int, None, Any]:
        """`app:NAME`: its first placed replica (every replica is judged alike unless the rules
        name single EIDs)."""
        app = self.inventory.apps_by_name.get(body[4:])
        for r in app.replicas if app is not None else ():
            host = self.inventory.by_name.get(r.node)
            if host is not None and r.prefixes and (iid is None or iid == host.instance_id):
                return host.instance_id, None, r.prefixes
        raise PolicyError(f"{where}: {body!r}: the app has no replica placed (yet)")

    def endpoints(self, src: str, dst: str, where: str = "explain") -> tuple[Endpoint, Endpoint]:
        s_iid, s_node, s_fixed = self._parse(src, where)
        d_iid, d_node, d_fixed = self._parse(dst, where)
        version = 4
        for fixed in (s_fixed, d_fixed):
            if isinstance(fixed, IPv4Address | IPv6Address):
                version = fixed.version
                break
            if isinstance(fixed, tuple):
                version = fixed[0].version
        iid_s = s_iid if s_iid is not None else (d_iid if d_iid is not None else 0)
        iid_d = d_iid if d_iid is not None else iid_s
        return (
            self._endpoint(src, iid_s, s_node, s_fixed, version, where),
            self._endpoint(dst, iid_d, d_node, d_fixed, version, where),
        )

    def _endpoint(
        self, text: str, iid: int, node: InventoryNode | None, fixed: Any, version: int, where: str
    ) -> Endpoint:
        if node is not None:
            address = node.address(version) or node.address(10 - version)
            if address is None:
                raise PolicyError(f"{where}: node {node.name} has no EID")
            return Endpoint(text, address, iid, node)
        if isinstance(fixed, tuple):
            prefix = next((p for p in fixed if p.version == version), fixed[0])
            address = _host(prefix)
        else:
            address = fixed
        return Endpoint(text, address, iid, self.inventory.owner(iid, address))

    # ------------------------------------------------------------------ deciding

    def decide(self, src: Endpoint, dst: Endpoint, protocol: int, port: int | None) -> Decision:
        if src.instance_id != dst.instance_id:
            return Decision(
                False, None,
                f"segmentation: {src.show()} is in instance-id {src.instance_id}, "
                f"{dst.show()} in {dst.instance_id}; instance-ids never reach each other",
            )  # fmt: skip
        if src.address.version != dst.address.version:
            return Decision(False, None, "the two addresses are of different families")
        resolver = self.resolver(src.instance_id)
        skipped: list[Skipped] = []
        name = PROTOCOL_NAMES.get(protocol, str(protocol))
        for rule in self.doc.rules:
            src_members, dst_members = resolver.rule_sides(rule)
            src_why = _match(src_members, src.address)
            dst_why = _match(dst_members, dst.address)
            why = None
            if src_why is None:
                why = f"source {src.address} is not in {', '.join(rule.sources)}"
            elif dst_why is None:
                why = f"destination {dst.address} is not in {', '.join(rule.destinations)}"
            elif rule.protocols and protocol not in rule.protocols:
                why = f"protocol {name} is not {rule.proto}"
            elif rule.ports and (port is None or protocol not in (6, 17)):
                why = f"ports apply to tcp and udp, not {name}"
            elif rule.ports and not any(lo <= (port or 0) <= hi for lo, hi in rule.ports):
                why = f"port {port} is not in {rule.ports_text()}"
            if why is not None:
                skipped.append(Skipped(rule, why))
                continue
            port_text = f"/{port}" if port is not None else ""
            reason = (
                f"rule {rule.name!r} ({self.doc.where(rule.line)}: {rule.describe()}) matches "
                f"{name}{port_text}: source {src.address} ({src_why}), "
                f"destination {dst.address} ({dst_why})"
            )
            return Decision(rule.action == "allow", rule, reason, tuple(skipped))
        return Decision(False, None, "default deny: no rule matched", tuple(skipped))

    def explain(self, src: str, dst: str, proto: str, port: int | None) -> Explanation:
        s, d = self.endpoints(src, dst)
        text = proto.lower()
        if (not text.isdigit() and text not in PROTOCOLS) or text == "any":
            raise PolicyError(f"explain: unknown protocol {proto!r} (tcp, udp, icmp, a number)")
        protocol = _proto_number(text, s.address.version)
        if protocol in (6, 17) and port is None:
            raise PolicyError(f"explain: {text} needs a port")
        if protocol not in (6, 17):
            port = None
        return Explanation(s, d, protocol, port, self.decide(s, d, protocol, port),
                           self.doc.filename)  # fmt: skip

    def failures(self) -> list[TestFailure]:
        out = []
        for case in self.doc.tests:
            where = f"{self.doc.where(case.line)}: {case.label()}"
            src, dst = self.endpoints(case.source, case.destination, where)
            protocol = _proto_number(case.proto, src.address.version)
            got = self.decide(src, dst, protocol, case.port)
            if got.verdict != case.expect:
                out.append(TestFailure(case, got))
        return out

    # ------------------------------------------------------------------ the map-server

    def may_exchange(self, requester: InventoryNode, instance_id: int, eid: IpAddress) -> bool:
        """May `requester` learn the locators of `eid`: some rule could allow a flow between
        them, in either direction (a node needs the mapping to answer, too)."""
        if requester.instance_id != instance_id:
            return False
        resolver = self.resolver(instance_id)
        host = (ip_network(eid),)
        own = requester.enforced  # its replicas' flows need the mappings too
        return self._may(resolver, own, host) or self._may(resolver, host, own)

    def _may(
        self, resolver: Resolver, src: tuple[IpNetwork, ...], dst: tuple[IpNetwork, ...]
    ) -> bool:
        for rule in self.doc.rules:
            src_members, dst_members = resolver.rule_sides(rule)
            if not (_overlaps(src_members, src) and _overlaps(dst_members, dst)):
                continue
            if rule.action == "allow":
                return True
            whole = not rule.protocols and not rule.ports
            if whole and _covers(src_members, src) and _covers(dst_members, dst):
                return False
        return False
