"""What policies are resolved against: the controller's nodes, their instance-ids, EID prefixes
and tags; and how a policy's selectors (`any`, groups, hosts, nodes, `tag:X`, prefixes) become
prefixes inside one instance-id, each with the reason it is there (for `explain`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

from controller_api.policy.lang import PolicyDoc, PolicyError, Rule, looks_like_address

IpNetwork = IPv4Network | IPv6Network
IpAddress = IPv4Address | IPv6Address


@dataclass(frozen=True)
class InventoryNode:
    name: str
    instance_id: int
    prefixes: tuple[IpNetwork, ...]
    tags: tuple[str, ...] = ()
    node_id: str = ""

    def owns(self, address: IpAddress) -> bool:
        return any(address in p for p in self.prefixes)

    def address(self, version: int = 4) -> IpAddress | None:
        """The node's own EID address of that family (the first host of its prefix)."""
        for prefix in self.prefixes:
            if prefix.version == version:
                return prefix.network_address + (1 if prefix.num_addresses > 1 else 0)
        return None


@dataclass(frozen=True)
class Member:
    """One prefix a selector stands for, and why."""

    prefix: IpNetwork
    why: str


ANY: tuple[Member, ...] | None = None  # a selector list containing `any`


@dataclass
class Inventory:
    nodes: tuple[InventoryNode, ...] = ()
    by_name: dict[str, InventoryNode] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_name = {n.name: n for n in self.nodes}

    @classmethod
    def of(cls, nodes: Iterable[InventoryNode]) -> Inventory:
        return cls(tuple(nodes))

    def instance_ids(self) -> list[int]:
        return sorted({n.instance_id for n in self.nodes} | {0})

    def owner(self, instance_id: int, address: IpAddress) -> InventoryNode | None:
        for node in self.nodes:
            if node.instance_id == instance_id and node.owns(address):
                return node
        return None

    def in_iid(self, instance_id: int) -> list[InventoryNode]:
        return [n for n in self.nodes if n.instance_id == instance_id]


def check_names(doc: PolicyDoc, inventory: Inventory) -> list[str]:
    """PolicyError for a selector that names nothing known; warnings for group members that are
    not enrolled (yet)."""
    known = set(doc.groups) | set(doc.hosts) | set(inventory.by_name)
    for rule in doc.rules:
        for key, selectors in (("from", rule.sources), ("to", rule.destinations)):
            for text in selectors:
                if text == "any" or text.startswith("tag:") or looks_like_address(text):
                    continue
                if text not in known:
                    raise PolicyError(
                        f"{doc.where(rule.line)}: rules[{rule.index}].{key}: unknown name "
                        f"{text!r} (not a group, host or enrolled node)"
                    )
    warnings = []
    tags = {t for n in inventory.nodes for t in n.tags}
    for group in doc.groups.values():
        for name in group.nodes:
            if name not in inventory.by_name:
                warnings.append(f"{doc.where(group.line)}: group {group.name}: node {name!r} "
                                "is not enrolled (yet): it matches nothing")  # fmt: skip
        for tag in group.tags:
            if tag not in tags:
                warnings.append(f"{doc.where(group.line)}: group {group.name}: no node has tag "
                                f"{tag!r} (yet)")  # fmt: skip
    return warnings


class Resolver:
    """Selectors of one policy, resolved inside one instance-id (cached)."""

    def __init__(self, doc: PolicyDoc, inventory: Inventory, instance_id: int) -> None:
        self.doc = doc
        self.inventory = inventory
        self.instance_id = instance_id
        self.nodes = inventory.in_iid(instance_id)
        self._cache: dict[str, tuple[Member, ...]] = {}

    def rule_sides(self, rule: Rule) -> tuple[tuple[Member, ...] | None, tuple[Member, ...] | None]:
        return self.selectors(rule.sources), self.selectors(rule.destinations)

    def selectors(self, selectors: tuple[str, ...]) -> tuple[Member, ...] | None:
        """The members, or None for `any`."""
        if "any" in selectors:
            return ANY
        out: list[Member] = []
        for text in selectors:
            out.extend(self.selector(text))
        return tuple(out)

    def selector(self, text: str) -> tuple[Member, ...]:
        cached = self._cache.get(text)
        if cached is None:
            cached = self._cache[text] = tuple(self._resolve(text))
        return cached

    def _node(self, node: InventoryNode, why: str) -> list[Member]:
        return [Member(p, why) for p in node.prefixes]

    def _resolve(self, text: str) -> list[Member]:
        doc = self.doc
        if text.startswith("tag:"):
            tag = text[4:]
            return [m for n in self.nodes if tag in n.tags
                    for m in self._node(n, f"node {n.name} has tag {tag}")]  # fmt: skip
        if text in doc.groups:
            group = doc.groups[text]
            out: list[Member] = []
            for n in self.nodes:
                hit = sorted(set(group.tags) & set(n.tags))
                if hit:
                    out += self._node(n, f"node {n.name} has tag {hit[0]} (group {group.name})")
                elif n.name in group.nodes:
                    out += self._node(n, f"node {n.name} is listed in group {group.name}")
            for host in group.hosts:
                why = f"host {host} (group {group.name})"
                nets = doc.hosts.get(host) or (ip_network(host, strict=False),)
                out += [Member(p, why) for p in nets]
            return out
        if text in doc.hosts:
            return [Member(p, f"host {text}") for p in doc.hosts[text]]
        node = self.inventory.by_name.get(text)
        if node is not None:
            if node.instance_id != self.instance_id:
                return []  # another virtual network
            return self._node(node, f"node {node.name}")
        if looks_like_address(text):
            return [Member(ip_network(text, strict=False), f"prefix {text}")]
        return []  # an unknown name (refused by check_names) selects nothing
