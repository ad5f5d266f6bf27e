"""A policy compiled for one node: `NodePolicy` (common.policy_format) and its desired-state form.

For node N (instance-id I, EID prefixes P: its own and those of the app replicas placed on it),
every rule in file order, resolved inside I:
- egress (packets leaving N's workloads): rules whose source can be N; the source narrowed to P;
- ingress (packets arriving for N's workloads): rules whose destination can be N; the
  destination narrowed to P.
A side that resolves to no prefix at all (a group nobody is in yet) drops the rule: an empty
list means "any" in the compiled format. `icmp` becomes two rules (ICMP and ICMPv6). Rule ids
are 2 * position + 1 (+1 for the ICMPv6 twin), so counters and flow logs map back to the file.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Literal

from common.policy_format import NodePolicy, PolicyRule
from controller_api.gen.lispmesh.v1 import config_pb2
from controller_api.policy.evaluate import Evaluator
from controller_api.policy.inventory import InventoryNode, Member

IpNetwork = IPv4Network | IPv6Network


def _narrow(members: tuple[Member, ...] | None, own: tuple[IpNetwork, ...]) -> list[IpNetwork]:
    """The parts of `own` that `members` covers (None: any, so all of `own`)."""
    if members is None:
        return list(own)
    out: list[IpNetwork] = []
    for m in members:
        for p in own:
            if m.prefix.version != p.version or not m.prefix.overlaps(p):
                continue
            part = m.prefix if m.prefix.subnet_of(p) else p  # type: ignore[arg-type]
            if part not in out:
                out.append(part)
    return out


def _prefixes(members: tuple[Member, ...] | None) -> list[IpNetwork] | None:
    if members is None:
        return None
    out: list[IpNetwork] = []
    for m in members:
        if m.prefix not in out:
            out.append(m.prefix)
    return out


def compile_node(evaluator: Evaluator, node: InventoryNode, version: int) -> NodePolicy:
    resolver = evaluator.resolver(node.instance_id)
    egress: list[PolicyRule] = []
    ingress: list[PolicyRule] = []
    for rule in evaluator.doc.rules:
        src, dst = resolver.rule_sides(rule)
        src_all, dst_all = _prefixes(src), _prefixes(dst)
        if src_all == [] or dst_all == []:
            continue  # one side selects nothing: the rule cannot match
        protocols: tuple[int | None, ...] = rule.protocols or (None,)
        own_src = _narrow(src, node.enforced)
        own_dst = _narrow(dst, node.enforced)
        action: Literal["allow", "deny"] = "allow" if rule.action == "allow" else "deny"
        for k, protocol in enumerate(protocols):
            rule_id = 2 * rule.index + 1 + k

            def make(s: list[IpNetwork] | None, d: list[IpNetwork] | None) -> PolicyRule:
                return PolicyRule(
                    id=rule_id, name=rule.name, action=action,  # noqa: B023
                    src=tuple(s or ()), dst=tuple(d or ()), protocol=protocol,  # noqa: B023
                    ports=rule.ports,  # noqa: B023
                )  # fmt: skip

            if own_src:
                egress.append(make(own_src, dst_all))
            if own_dst:
                ingress.append(make(src_all, own_dst))
    return NodePolicy(version, tuple(egress), tuple(ingress))


def node_policy_to_proto(
    policy: NodePolicy, name: str = "", policy_version: int = 0
) -> config_pb2.Policy:
    def rule(r: PolicyRule) -> config_pb2.PolicyRule:
        out = config_pb2.PolicyRule(
            id=r.id, name=r.name, action=r.action,
            src=[str(p) for p in r.src], dst=[str(p) for p in r.dst],
            ports=[config_pb2.PortRange(low=lo, high=hi) for lo, hi in r.ports],
        )  # fmt: skip
        if r.protocol is not None:
            out.protocol = r.protocol
        return out

    return config_pb2.Policy(
        name=name,
        version=policy.version,
        egress=[rule(r) for r in policy.egress],
        ingress=[rule(r) for r in policy.ingress],
        policy_version=policy_version,
    )


def proto_to_node_policy(message: config_pb2.Policy) -> NodePolicy:
    """ValueError (one line) if the message is not a valid policy."""

    def rule(r: config_pb2.PolicyRule) -> PolicyRule:
        return PolicyRule(
            id=r.id,
            name=r.name,
            action=r.action,  # type: ignore[arg-type]  # checked by PolicyRule
            src=tuple(ip_network(p) for p in r.src),
            dst=tuple(ip_network(p) for p in r.dst),
            protocol=r.protocol if r.HasField("protocol") else None,
            ports=tuple((p.low, p.high) for p in r.ports),
        )

    return NodePolicy(
        version=message.version,
        egress=tuple(rule(r) for r in message.egress),
        ingress=tuple(rule(r) for r in message.ingress),
    )
