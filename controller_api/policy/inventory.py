"""What policies are resolved against: the controller's nodes, their instance-ids, EID prefixes
and tags, and the apps' placed replicas with their EIDs; and how a policy's selectors (`any`,
groups, hosts, nodes, `tag:X`, `app:NAME`, `label:K=V`, prefixes) become prefixes inside one
instance-id, each with the reason it is there (for `explain`).

An app selector stands for the EIDs (/32 and /128) of the app's replicas placed now, in the
instance-id of the node hosting each: a replica scaled up joins it once placed, one scaled away
leaves it, one that moves is enforced by its new host (`InventoryNode.hosted`). A node's name or
tag stands for the node's own EIDs only, never for the apps it happens to host."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
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
    hosted: tuple[IpNetwork, ...] = ()  # EIDs of the app replicas placed on it

    @property
    def enforced(self) -> tuple[IpNetwork, ...]:
        """Every EID this node's data path stands for: its own and its replicas'."""
        return self.prefixes + self.hosted

    def owns(self, address: IpAddress) -> bool:
        return any(address in p for p in self.enforced)

    def address(self, version: int = 4) -> IpAddress | None:
        """The node's own EID address of that family (the first host of its prefix)."""
        for prefix in self.prefixes:
            if prefix.version == version:
                return prefix.network_address + (1 if prefix.num_addresses > 1 else 0)
        return None


@dataclass(frozen=True)
class InventoryReplica:
    replica: int
    node: str  # where it is placed
    prefixes: tuple[IpNetwork, ...]  # its EIDs


@dataclass(frozen=True)
class InventoryApp:
    name: str
    labels: tuple[tuple[str, str], ...]
    replicas: tuple[InventoryReplica, ...]  # placed ones, with an EID

    def matches(self, labels: tuple[tuple[str, str], ...]) -> bool:
        return set(labels) <= set(self.labels)


@dataclass(frozen=True)
class Member:
    """One prefix a selector stands for, and why."""

    prefix: IpNetwork
    why: str


ANY: tuple[Member, ...] | None = None  # a selector list containing `any`


@dataclass
class Inventory:
    nodes: tuple[InventoryNode, ...] = ()
    apps: tuple[InventoryApp, ...] = ()
    by_name: dict[str, InventoryNode] = field(default_factory=dict)
    apps_by_name: dict[str, InventoryApp] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Each node learns the replicas placed on it (a node that left hosts nothing here).
        hosted: dict[str, list[IpNetwork]] = {}
        for app in self.apps:
            for r in app.replicas:
                hosted.setdefault(r.node, []).extend(r.prefixes)
        self.nodes = tuple(
            replace(n, hosted=tuple(hosted[n.name])) if n.name in hosted else n for n in self.nodes
        )
        self.by_name = {n.name: n for n in self.nodes}
        self.apps_by_name = {a.name: a for a in self.apps}

    @classmethod
    def of(cls, nodes: Iterable[InventoryNode], apps: Iterable[InventoryApp] = ()) -> Inventory:
        return cls(tuple(nodes), tuple(apps))

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
                if text.startswith(("app:", "label:")):
                    continue  # apps come and go: an app not deployed (yet) is a warning
                if text not in known:
                    raise PolicyError(
                        f"{doc.where(rule.line)}: rules[{rule.index}].{key}: unknown name "
                        f"{text!r} (not a group, host or enrolled node)"
                    )
    warnings = []
    for rule in doc.rules:
        for text in (*rule.sources, *rule.destinations):
            if text.startswith(("app:", "label:")) and not _apps(inventory, text):
                warnings.append(f"{doc.where(rule.line)}: rules[{rule.index}]: {text}: no app "
                                "placed matches it (yet): it matches nothing")  # fmt: skip
    for group in doc.groups.values():
        for name in group.apps:
            if name not in inventory.apps_by_name:
                warnings.append(f"{doc.where(group.line)}: group {group.name}: app {name!r} "
                                "has no replica placed (yet): it matches nothing")  # fmt: skip
        if group.labels and not any(a.matches(group.labels) for a in inventory.apps):
            shown = ", ".join(f"{k}={v}" for k, v in group.labels)
            warnings.append(f"{doc.where(group.line)}: group {group.name}: no app placed has "
                            f"labels {shown} (yet)")  # fmt: skip
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


def _apps(inventory: Inventory, text: str) -> list[InventoryApp]:
    """The apps an `app:NAME` or `label:KEY=VALUE` selector names."""
    if text.startswith("app:"):
        app = inventory.apps_by_name.get(text[4:])
        return [app] if app is not None else []
    key, _, value = text[6:].partition("=")
    return [a for a in inventory.apps if a.matches(((key, value),))]


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

    def _replicas(self, app: InventoryApp, why: str) -> list[Member]:
        out = []
        for r in app.replicas:
            host = self.inventory.by_name.get(r.node)
            if host is None or host.instance_id != self.instance_id:
                continue  # another virtual network (or a node that left)
            out += [Member(p, f"replica {r.replica} of app {app.name} on {r.node}{why}")
                    for p in r.prefixes]  # fmt: skip
        return out

    def _resolve(self, text: str) -> list[Member]:
        doc = self.doc
        if text.startswith(("app:", "label:")):
            why = f" ({text})" if text.startswith("label:") else ""
            return [m for a in _apps(self.inventory, text) for m in self._replicas(a, why)]
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
            for app in self.inventory.apps:
                if app.name in group.apps:
                    out += self._replicas(app, f" (group {group.name})")
                elif group.labels and app.matches(group.labels):
                    shown = ",".join(f"{k}={v}" for k, v in group.labels)
                    out += self._replicas(app, f" (labels {shown}, group {group.name})")
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
