"""Parse and validate containerlab topology files into a `Topology`.

Reads the containerlab schema unchanged (name, prefix, mgmt, topology.defaults/kinds/groups/nodes,
links in brief and extended form, ${ENV}) and resolves each node field with containerlab's
inheritance: node -> group -> kind -> defaults (mappings such as env and labels are merged, the
most specific winning). Every error names the file, the line and the field; container-only fields
that netlab cannot honour (image, binds, ports...) produce warnings, not errors.

netlab extensions (see netlab/README.md): node fields `addresses`, `routes`, `nat`, `cmd` and
`startup-config` (the last two also exist in containerlab, with a container meaning).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from netlab import naming
from netlab.errors import TopologyError
from netlab.model import (
    DEFAULT_NAT_PROFILE,
    HOST,
    KNOWN_KINDS,
    MGMT_NET,
    NAT_PROFILES,
    Endpoint,
    Link,
    Mgmt,
    Node,
    Route,
    Topology,
)
from netlab.yamlload import LDict, LList, load_yaml

# Fields netlab resolves per node (with inheritance).
NODE_FIELDS = {
    "kind",
    "group",
    "image",
    "labels",
    "env",
    "exec",
    "cmd",
    "startup-config",
    "mgmt-ipv4",
    "mgmt-ipv6",
    "network-mode",
    "sysctls",
    "addresses",
    "routes",
    "nat",
}
# Container-only fields: accepted for compatibility, ignored with a warning.
CONTAINER_FIELDS = {
    "binds",
    "ports",
    "entrypoint",
    "user",
    "cpu",
    "cpu-set",
    "memory",
    "publish",
    "license",
    "startup-delay",
    "enforce-startup-config",
    "suppress-startup-config",
    "auto-remove",
    "restart-policy",
    "runtime",
    "extras",
    "dns",
    "certificate",
    "healthcheck",
    "wait-for",
    "stages",
    "devices",
    "cap-add",
    "shm-size",
    "aliases",
    "env-files",
    "type",
    "config",
    "image-pull-policy",
    "mgmt-net",
    "components",
    "exec-timeout",
}
# `image` is so common in containerlab files that it is accepted silently for namespace kinds
# whose image has no meaning, but still reported once where it is written.
IGNORED_WITH_NOTE = {"image"}

_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_MERGED = ("labels", "env", "sysctls")


class _Ctx:
    """Parsing context: the file name for errors and the warnings collected so far."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.warnings: list[str] = []

    def err(self, line: int | None, field: str, message: str) -> TopologyError:
        return TopologyError(self.file, line, field, message)

    def warn(self, line: int | None, field: str, message: str) -> None:
        where = f"{self.file}:{line}" if line else self.file
        self.warnings.append(f"{where}: warning: {field}: {message}")


def _line(obj: Any, key: str | int | None = None, default: int = 0) -> int:
    if isinstance(obj, LDict) and isinstance(key, str):
        return obj.line_of(key)
    if isinstance(obj, LList) and isinstance(key, int):
        return obj.line_of(key)
    return getattr(obj, "line", default) or default


def _mapping(ctx: _Ctx, value: Any, line: int, field: str) -> LDict:
    if value is None:
        empty = LDict()
        empty.line, empty.key_lines = line, {}
        return empty
    if not isinstance(value, dict):
        raise ctx.err(line, field, f"must be a mapping, got {type(value).__name__}")
    if not isinstance(value, LDict):  # overrides passed from Python
        out = LDict(value)
        out.line, out.key_lines = line, {}
        return out
    return value


def _str(ctx: _Ctx, value: Any, line: int, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ctx.err(line, field, f"must be a string, got {type(value).__name__}")
    return str(value)


def _str_map(ctx: _Ctx, value: Any, line: int, field: str) -> dict[str, str]:
    m = _mapping(ctx, value, line, field)
    out = {}
    for k, v in m.items():
        out[k] = "" if v is None else _str(ctx, v, _line(m, k, line), f"{field}.{k}")
    return out


def _str_list(ctx: _Ctx, value: Any, line: int, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ctx.err(line, field, f"must be a list of strings, got {type(value).__name__}")
    return [_str(ctx, v, _line(value, i, line), f"{field}[{i}]") for i, v in enumerate(value)]


def parse_file(
    path: str | Path,
    *,
    name: str | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    env: Mapping[str, str] | None = None,
) -> Topology:
    """Read and validate a topology file. `name` replaces the lab name (like `deploy --name`);
    `overrides` maps node names to fields that replace the file's (e.g. `{"n1": {"cmd": ...}}`).
    """
    p = Path(path).absolute()
    try:
        text = p.read_text()
    except OSError as exc:
        raise TopologyError(
            str(path), None, "", f"cannot read topology file: {exc.strerror}"
        ) from None
    return parse_text(text, p, name=name, overrides=overrides, env=env)


def parse_text(
    text: str,
    path: str | Path,
    *,
    name: str | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    env: Mapping[str, str] | None = None,
) -> Topology:
    """Parse topology text as if read from `path` (used for errors and relative paths)."""
    p = Path(path).absolute()
    ctx = _Ctx(p.name)
    data = load_yaml(text, ctx.file, env)
    if not isinstance(data, LDict):
        raise ctx.err(1, "", "a topology file must be a mapping with 'name' and 'topology'")
    for key in data:
        if key not in ("name", "prefix", "mgmt", "topology", "settings", "debug"):
            ctx.warn(data.line_of(key), key, "unknown top-level field, ignored")

    lab = name if name is not None else data.get("name")
    if lab is None:
        raise ctx.err(1, "name", "missing: every lab needs a name")
    lab = _str(ctx, lab, data.line_of("name"), "name")
    if not naming.NAME_RE.match(lab) or len(lab) > 64:
        raise ctx.err(
            data.line_of("name"),
            "name",
            f"'{lab}' is not a valid lab name (letters, digits, '_', '.', '-'; at most 64)",
        )
    prefix = naming.DEFAULT_PREFIX
    if "prefix" in data:
        prefix = (
            ""
            if data["prefix"] is None
            else _str(ctx, data["prefix"], data.line_of("prefix"), "prefix")
        )
        if prefix and prefix != naming.LAB_NAME_PREFIX and not naming.NAME_RE.match(prefix):
            raise ctx.err(data.line_of("prefix"), "prefix", f"'{prefix}' is not a valid prefix")

    mgmt = _parse_mgmt(ctx, data.get("mgmt"), data.line_of("mgmt"))
    if "topology" not in data:
        raise ctx.err(1, "topology", "missing: the file needs a 'topology' section with nodes")
    topo = _mapping(ctx, data["topology"], data.line_of("topology"), "topology")
    for key in topo:
        if key not in ("defaults", "kinds", "groups", "nodes", "links"):
            ctx.warn(topo.line_of(key), f"topology.{key}", "unknown field, ignored")

    defaults = _mapping(ctx, topo.get("defaults"), topo.line_of("defaults"), "topology.defaults")
    kinds = _mapping(ctx, topo.get("kinds"), topo.line_of("kinds"), "topology.kinds")
    groups = _mapping(ctx, topo.get("groups"), topo.line_of("groups"), "topology.groups")
    raw_nodes = _mapping(ctx, topo.get("nodes"), topo.line_of("nodes"), "topology.nodes")
    if not raw_nodes:
        raise ctx.err(topo.line_of("nodes"), "topology.nodes", "missing or empty: no nodes")

    _check_fields(ctx, defaults, "topology.defaults")
    for k in kinds:
        if k not in KNOWN_KINDS:
            ctx.warn(kinds.line_of(k), f"topology.kinds.{k}", "kind unknown to netlab, ignored")
        _check_fields(
            ctx,
            _mapping(ctx, kinds[k], kinds.line_of(k), f"topology.kinds.{k}"),
            f"topology.kinds.{k}",
        )
    for g in groups:
        _check_fields(
            ctx,
            _mapping(ctx, groups[g], groups.line_of(g), f"topology.groups.{g}"),
            f"topology.groups.{g}",
        )

    nodes: dict[str, Node] = {}
    raw_by_node: dict[str, LDict] = {}
    for nname, raw in raw_nodes.items():
        field = f"nodes.{nname}"
        line = raw_nodes.line_of(nname)
        if not naming.NAME_RE.match(nname) or (nname in (HOST, MGMT_NET) and raw is None):
            raise ctx.err(line, field, f"'{nname}' is not a valid node name")
        rawmap = _mapping(ctx, raw, line, field)
        if overrides and nname in overrides:
            rawmap = _mapping(ctx, {**rawmap, **overrides[nname]}, line, field)
            rawmap.key_lines = dict(getattr(raw, "key_lines", {}))
        _check_fields(ctx, rawmap, field)
        raw_by_node[nname] = rawmap
        nodes[nname] = _resolve_node(
            ctx, lab, prefix, nname, rawmap, line, defaults, kinds, groups, p.parent
        )
    if overrides:
        for extra in set(overrides) - set(nodes):
            raise ctx.err(None, f"nodes.{extra}", "override names a node the topology lacks")

    links = _parse_links(ctx, topo.get("links"), topo.line_of("links"), nodes)
    _check_ns_names(ctx, lab, prefix, nodes, raw_nodes)
    for nname, node in nodes.items():
        _finish_node(
            ctx, node, raw_by_node[nname], raw_nodes.line_of(nname), links, defaults, kinds, groups
        )
    _allocate_mgmt(ctx, mgmt, nodes, raw_nodes)
    topology = Topology(name=lab, prefix=prefix, path=p, mgmt=mgmt, nodes=nodes, links=links)
    topology.warnings = ctx.warnings
    from netlab.kinds.lispmesh import plan  # the kinds import the model, not this module

    plan(topology)  # lispmesh wiring: one controller with an address (TopologyError if not)
    return topology


def _check_fields(ctx: _Ctx, raw: LDict, field: str) -> None:
    for key in raw:
        if key in NODE_FIELDS:
            if key in IGNORED_WITH_NOTE:
                ctx.warn(
                    raw.line_of(key),
                    f"{field}.{key}",
                    "container image ignored: netlab nodes are network namespaces",
                )
            continue
        if key in CONTAINER_FIELDS:
            ctx.warn(raw.line_of(key), f"{field}.{key}", "container-only field ignored by netlab")
        else:
            ctx.warn(raw.line_of(key), f"{field}.{key}", "unknown field, ignored")


def _parse_mgmt(ctx: _Ctx, raw: Any, line: int) -> Mgmt:
    mgmt = Mgmt()
    m = _mapping(ctx, raw, line, "mgmt")
    for key, value in m.items():
        kl = m.line_of(key)
        if key == "network":
            mgmt.network = _str(ctx, value, kl, "mgmt.network")
        elif key == "bridge":
            br = _str(ctx, value, kl, "mgmt.bridge")
            problem = naming.ifname_problem(br)
            if problem:
                raise ctx.err(kl, "mgmt.bridge", problem)
            mgmt.bridge = naming.shorten_ifname(br)
        elif key in ("ipv4-subnet", "ipv6-subnet"):
            fam = 4 if key.startswith("ipv4") else 6
            if value is None or value == "":
                setattr(mgmt, f"ipv{fam}_subnet", None)
                continue
            try:
                net = ipaddress.ip_network(_str(ctx, value, kl, f"mgmt.{key}"), strict=False)
            except ValueError:
                raise ctx.err(kl, f"mgmt.{key}", f"'{value}' is not an IP network") from None
            if net.version != fam or net.num_addresses < 4:
                raise ctx.err(kl, f"mgmt.{key}", f"'{value}' is not a usable IPv{fam} subnet")
            setattr(mgmt, f"ipv{fam}_subnet", str(net))
        elif key in (
            "ipv4-gw",
            "ipv6-gw",
            "ipv4-range",
            "ipv6-range",
            "mtu",
            "external-access",
            "driver",
        ):
            ctx.warn(kl, f"mgmt.{key}", "ignored (the mgmt network lives in its own namespace)")
        else:
            ctx.warn(kl, f"mgmt.{key}", "unknown field, ignored")
    return mgmt


def _inherit(
    key: str, raw: LDict, group: LDict | None, kind: LDict | None, defaults: LDict
) -> tuple[Any, int, str]:
    """First definition of `key` in node -> group -> kind -> defaults, with line and origin."""
    for layer in (raw, group, kind, defaults):
        if layer is not None and key in layer:
            return layer[key], layer.line_of(key), "node"
    return None, 0, ""


def _merged(
    ctx: _Ctx, key: str, field: str, layers: list[LDict | None], line: int
) -> dict[str, str]:
    out: dict[str, str] = {}
    for layer in reversed(layers):  # defaults first, node last: the most specific wins
        if layer is not None and key in layer:
            out.update(_str_map(ctx, layer[key], layer.line_of(key), field))
    return out


def _resolve_node(
    ctx: _Ctx,
    lab: str,
    prefix: str,
    name: str,
    raw: LDict,
    line: int,
    defaults: LDict,
    kinds: LDict,
    groups: LDict,
    topodir: Path,
) -> Node:
    field = f"nodes.{name}"
    group_name = ""
    group: LDict | None = None
    if "group" in raw:
        group_name = _str(ctx, raw["group"], raw.line_of("group"), f"{field}.group")
        if group_name not in groups:
            raise ctx.err(
                raw.line_of("group"),
                f"{field}.group",
                f"unknown group '{group_name}' (known: {', '.join(groups) or 'none'})",
            )
        group = _mapping(ctx, groups[group_name], groups.line_of(group_name), "group")
    kind_v, kind_line, _ = _inherit("kind", raw, group, None, defaults)
    if kind_v is None:
        raise ctx.err(line, f"{field}.kind", "missing: no kind on the node, its group or defaults")
    kind = _str(ctx, kind_v, kind_line, f"{field}.kind")
    if kind not in KNOWN_KINDS:
        raise ctx.err(
            kind_line, f"{field}.kind", f"unknown kind '{kind}' (known: {', '.join(KNOWN_KINDS)})"
        )
    kind_map = (
        _mapping(ctx, kinds.get(kind), kinds.line_of(kind), f"kinds.{kind}")
        if kind in kinds
        else None
    )

    def get(key: str) -> tuple[Any, int]:
        v, ln, _ = _inherit(key, raw, group, kind_map, defaults)
        return v, ln or line

    layers = [raw, group, kind_map, defaults]
    ns = None if kind == "host" else naming.ns_name(prefix, lab, name)
    node = Node(name=name, kind=kind, ns=ns, group=group_name, line=line)
    image, ln = get("image")
    node.image = "" if image is None else _str(ctx, image, ln, f"{field}.image")
    node.labels = _merged(ctx, "labels", f"{field}.labels", layers, line)
    node.env = _merged(ctx, "env", f"{field}.env", layers, line)
    node.sysctls = _merged(ctx, "sysctls", f"{field}.sysctls", layers, line)
    ex, ln = get("exec")
    node.exec = _str_list(ctx, ex, ln, f"{field}.exec")
    for i, cmd in enumerate(node.exec):
        _split(ctx, cmd, _line(ex, i, ln), f"{field}.exec[{i}]")
    cmd, ln = get("cmd")
    if cmd is not None:
        node.cmd = _str(ctx, cmd, ln, f"{field}.cmd")
        _split(ctx, node.cmd, ln, f"{field}.cmd")
    sc, ln = get("startup-config")
    if sc is not None:
        node.startup_config = str(topodir / _str(ctx, sc, ln, f"{field}.startup-config"))
    nm, ln = get("network-mode")
    if nm is not None:
        node.network_mode = _str(ctx, nm, ln, f"{field}.network-mode")
        if node.network_mode not in ("none", "host"):
            raise ctx.err(
                ln,
                f"{field}.network-mode",
                f"'{node.network_mode}' is not supported (netlab knows 'none')",
            )
    if kind in ("host", "bridge") and node.cmd:
        raise ctx.err(line, f"{field}.cmd", f"kind {kind} runs no process")
    # lispmesh kinds without `cmd` get their command at deploy time (netlab/kinds/lispmesh.py):
    # it names lab paths and a join token made then.
    # Fields finished once links are known (addresses, routes, nat) are kept on the raw map.
    return node


def _split(ctx: _Ctx, cmd: str, line: int, field: str) -> list[str]:
    try:
        argv = shlex.split(cmd)
    except ValueError as exc:
        raise ctx.err(line, field, f"cannot split command '{cmd}': {exc}") from None
    if not argv:
        raise ctx.err(line, field, "empty command")
    return argv


def _endpoint_from_str(
    ctx: _Ctx, value: Any, line: int, field: str, nodes: dict[str, Node]
) -> Endpoint:
    if not isinstance(value, str) or value.count(":") != 1:
        raise ctx.err(
            line, field, f"endpoint {value!r} must be written 'node:interface' (e.g. \"r1:eth1\")"
        )
    node, iface = value.split(":")
    return _endpoint(ctx, node, iface, None, line, field, nodes)


def _endpoint(
    ctx: _Ctx, node: Any, iface: Any, mac: Any, line: int, field: str, nodes: dict[str, Node]
) -> Endpoint:
    node = _str(ctx, node, line, f"{field}.node") if node is not None else ""
    if node not in nodes and node not in (HOST, MGMT_NET):
        raise ctx.err(line, field, f"link to unknown node '{node}' (nodes: {', '.join(nodes)})")
    problem = naming.ifname_problem(iface)
    if problem:
        raise ctx.err(line, field, problem)
    assert isinstance(iface, str)
    if mac is not None:
        mac = _str(ctx, mac, line, f"{field}.mac")
        if not _MAC_RE.match(mac):
            raise ctx.err(line, f"{field}.mac", f"'{mac}' is not a MAC address")
    if node in nodes and nodes[node].kind == "bridge" and iface == naming.shorten_ifname(node):
        raise ctx.err(line, field, f"interface '{iface}' is the name of bridge node '{node}'")
    return Endpoint(node=node, iface=iface, ifname=naming.shorten_ifname(iface), mac=mac)


def _parse_links(ctx: _Ctx, raw: Any, line: int, nodes: dict[str, Node]) -> list[Link]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ctx.err(line, "topology.links", "must be a list")
    links: list[Link] = []
    seen: dict[tuple[str, str], int] = {}
    for i, item in enumerate(raw):
        field = f"links[{i}]"
        iline = _line(raw, i, line)
        if not isinstance(item, dict):
            raise ctx.err(
                iline,
                field,
                "a link must be a mapping with 'endpoints' "
                '(brief form: endpoints: ["a:eth1", "b:eth1"])',
            )
        item = _mapping(ctx, item, iline, field)
        ltype = item.get("type")
        eps: list[Endpoint]
        if ltype is None and "endpoints" in item:
            ep_raw = item["endpoints"]
            eline = item.line_of("endpoints")
            if not isinstance(ep_raw, list) or len(ep_raw) != 2:
                raise ctx.err(eline, f"{field}.endpoints", "a link needs exactly two endpoints")
            eps = []
            for j, e in enumerate(ep_raw):
                ef, el = f"{field}.endpoints[{j}]", _line(ep_raw, j, eline)
                if isinstance(e, dict):
                    eps.append(
                        _endpoint(
                            ctx, e.get("node"), e.get("interface"), e.get("mac"), el, ef, nodes
                        )
                    )
                else:
                    eps.append(_endpoint_from_str(ctx, e, el, ef, nodes))
        elif ltype == "veth":
            ep_raw = item.get("endpoints")
            eline = item.line_of("endpoints") if "endpoints" in item else iline
            if not isinstance(ep_raw, list) or len(ep_raw) != 2:
                raise ctx.err(eline, f"{field}.endpoints", "a veth link needs two endpoints")
            eps = []
            for j, e in enumerate(ep_raw):
                ef, el = f"{field}.endpoints[{j}]", _line(ep_raw, j, eline)
                if not isinstance(e, dict):
                    raise ctx.err(el, ef, "extended endpoints are mappings with node, interface")
                eps.append(
                    _endpoint(ctx, e.get("node"), e.get("interface"), e.get("mac"), el, ef, nodes)
                )
        elif ltype in ("host", "mgmt-net"):
            e = item.get("endpoint")
            el = item.line_of("endpoint") if "endpoint" in item else iline
            if not isinstance(e, dict):
                raise ctx.err(el, f"{field}.endpoint", f"a {ltype} link needs one endpoint mapping")
            hi = item.get("host-interface")
            if hi is None:
                raise ctx.err(iline, f"{field}.host-interface", f"missing on a {ltype} link")
            eps = [
                _endpoint(
                    ctx,
                    e.get("node"),
                    e.get("interface"),
                    e.get("mac"),
                    el,
                    f"{field}.endpoint",
                    nodes,
                ),
                _endpoint(
                    ctx,
                    HOST if ltype == "host" else MGMT_NET,
                    hi,
                    None,
                    item.line_of("host-interface"),
                    f"{field}.host-interface",
                    nodes,
                ),
            ]
        elif ltype is not None:
            raise ctx.err(
                item.line_of("type"),
                f"{field}.type",
                f"link type '{ltype}' is not supported by netlab (veth, host, mgmt-net)",
            )
        else:
            raise ctx.err(
                iline,
                field,
                'a link needs \'endpoints\' (brief form: endpoints: ["a:eth1", "b:eth1"])',
            )
        for ep in eps:
            key = (ep.node, ep.ifname)
            if key in seen:
                raise ctx.err(
                    iline,
                    field,
                    f"endpoint {ep.node}:{ep.iface} is already used by "
                    f"the link on line {seen[key]}",
                )
            seen[key] = iline
            if ep.node in nodes:
                n = nodes[ep.node]
                if (
                    ep.ifname == "eth0"
                    and n.kind not in ("host", "bridge")
                    and n.network_mode != "none"
                ):
                    raise ctx.err(
                        iline,
                        field,
                        f"eth0 is the management interface of node "
                        f"'{ep.node}' (set network-mode: none to use it in a link)",
                    )
        mtu = item.get("mtu")
        if mtu is not None and (
            not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535
        ):
            raise ctx.err(item.line_of("mtu"), f"{field}.mtu", f"'{mtu}' is not an MTU (68-65535)")
        labels = _str_map(ctx, item.get("labels"), item.line_of("labels"), f"{field}.labels")
        links.append(Link(a=eps[0], z=eps[1], mtu=mtu, line=iline, labels=labels))
    return links


def _check_ns_names(
    ctx: _Ctx, lab: str, prefix: str, nodes: dict[str, Node], raw_nodes: LDict
) -> None:
    mgmt = naming.mgmt_ns_name(prefix, lab)
    for n in nodes.values():
        if n.ns == mgmt:
            raise ctx.err(
                raw_nodes.line_of(n.name),
                f"nodes.{n.name}",
                "its namespace name clashes with the lab's management namespace",
            )


def _interfaces_of(node: str, links: list[Link]) -> dict[str, str]:
    """Interfaces a node has on links: name as written -> kernel name."""
    out = {}
    for lk in links:
        for ep in (lk.a, lk.z):
            if ep.node == node:
                out[ep.iface] = ep.ifname
    return out


def _finish_node(
    ctx: _Ctx,
    node: Node,
    raw: LDict,
    line: int,
    links: list[Link],
    defaults: LDict,
    kinds: LDict,
    groups: LDict,
) -> None:
    """Fields that need the links: addresses, routes and nat refer to interfaces."""
    field = f"nodes.{node.name}"
    ifaces = _interfaces_of(node.name, links)
    known = dict(ifaces)
    if node.kind != "host":  # never address the host's own lo or eth0
        known["lo"] = "lo"
        if node.network_mode != "none":
            known.setdefault("eth0", "eth0")
    group = groups.get(node.group) if node.group else None
    kind_map = kinds.get(node.kind) if isinstance(kinds.get(node.kind), dict) else None

    def get(key: str) -> tuple[Any, int]:
        v, ln, _ = _inherit(key, raw, group, kind_map, defaults)
        return v, ln or line

    addrs, aline = get("addresses")
    if addrs is not None:
        amap = _mapping(ctx, addrs, aline, f"{field}.addresses")
        if node.kind == "bridge":
            raise ctx.err(aline, f"{field}.addresses", "a bridge node has no addresses")
        for iface, values in amap.items():
            af, al = f"{field}.addresses.{iface}", amap.line_of(iface)
            if iface not in known:
                raise ctx.err(
                    al,
                    af,
                    f"node '{node.name}' has no link on interface '{iface}' "
                    f"(its interfaces: {', '.join(sorted(known))})",
                )
            cidrs = []
            for j, v in enumerate(_str_list(ctx, values, al, af)):
                cidrs.append(_cidr(ctx, v, _line(values, j, al), af))
            node.addresses[known[iface]] = cidrs
    routes, rline = get("routes")
    if routes is not None:
        if node.kind == "bridge":
            raise ctx.err(rline, f"{field}.routes", "a bridge node has no routes")
        if node.kind == "host":
            raise ctx.err(
                rline, f"{field}.routes", "netlab never adds routes to the host's root namespace"
            )
        for j, r in enumerate(_str_list(ctx, routes, rline, f"{field}.routes")):
            node.routes.append(
                _route(ctx, r, _line(routes, j, rline), f"{field}.routes[{j}]", known)
            )
    nat, nline = get("nat")
    if node.kind == "nat":
        nmap = _mapping(ctx, nat, nline, f"{field}.nat")
        outside = nmap.get("outside")
        if outside is None:
            raise ctx.err(
                nline,
                f"{field}.nat.outside",
                "missing: a nat node needs nat: {outside: <interface>}",
            )
        outside = _str(ctx, outside, nmap.line_of("outside"), f"{field}.nat.outside")
        if outside not in ifaces:
            raise ctx.err(
                nmap.line_of("outside"),
                f"{field}.nat.outside",
                f"node '{node.name}' has no link on interface '{outside}'",
            )
        node.nat_outside = ifaces[outside]
        bi = nmap.get("block-inbound", True)
        if not isinstance(bi, bool):
            raise ctx.err(
                nmap.line_of("block-inbound"), f"{field}.nat.block-inbound", "must be true or false"
            )
        node.nat_block_inbound = bi
        profile = nmap.get("profile", DEFAULT_NAT_PROFILE)
        if profile not in NAT_PROFILES:
            raise ctx.err(
                nmap.line_of("profile"),
                f"{field}.nat.profile",
                f"unknown NAT profile {profile!r} (known: {', '.join(NAT_PROFILES)})",
            )
        node.nat_profile = profile
        if "udp-timeout" in nmap:
            timeout = nmap["udp-timeout"]
            whole = isinstance(timeout, int) and not isinstance(timeout, bool)
            if not whole or not 1 <= timeout <= 3600:
                raise ctx.err(
                    nmap.line_of("udp-timeout"),
                    f"{field}.nat.udp-timeout",
                    f"must be a whole number of seconds from 1 to 3600, not {timeout!r}",
                )
            node.nat_udp_timeout = timeout
        unknown = sorted(set(nmap) - {"outside", "block-inbound", "profile", "udp-timeout"})
        if unknown:
            raise ctx.err(
                nmap.line_of(unknown[0]),
                f"{field}.nat.{unknown[0]}",
                "unknown field (known: outside, profile, udp-timeout, block-inbound)",
            )
    elif nat is not None:
        raise ctx.err(nline, f"{field}.nat", f"only nodes of kind nat take 'nat' ({node.kind})")
    for key in ("mgmt-ipv4", "mgmt-ipv6"):
        if key in raw:
            setattr(
                node, key.replace("-", "_"), _str(ctx, raw[key], raw.line_of(key), f"{field}.{key}")
            )


def _cidr(ctx: _Ctx, value: str, line: int, field: str) -> str:
    if "/" not in value:
        raise ctx.err(line, field, f"address '{value}' needs a prefix length (e.g. {value}/24)")
    try:
        return str(ipaddress.ip_interface(value))
    except ValueError:
        raise ctx.err(line, field, f"'{value}' is not an IP address with prefix") from None


def _route(ctx: _Ctx, text: str, line: int, field: str, ifaces: dict[str, str]) -> Route:
    words = text.split()
    if not words:
        raise ctx.err(line, field, "empty route")
    dst = words[0]
    if dst != "default":
        try:
            dst = str(ipaddress.ip_network(dst, strict=False))
        except ValueError:
            raise ctx.err(
                line,
                field,
                f"'{dst}' is not a destination network "
                "(write e.g. '10.0.2.0/24 via 10.0.12.2' or 'default via ...')",
            ) from None
    opts: dict[str, str] = {}
    rest = words[1:]
    if len(rest) % 2:
        raise ctx.err(line, field, f"cannot read route '{text}' (expected: DST via GW [dev IF])")
    for k, v in zip(rest[::2], rest[1::2], strict=True):
        if k not in ("via", "dev", "metric"):
            raise ctx.err(line, field, f"unknown route word '{k}' (via, dev, metric)")
        opts[k] = v
    if "via" not in opts and "dev" not in opts:
        raise ctx.err(line, field, f"route '{text}' needs 'via GATEWAY' or 'dev INTERFACE'")
    via = None
    if "via" in opts:
        try:
            via = str(ipaddress.ip_address(opts["via"]))
        except ValueError:
            raise ctx.err(line, field, f"gateway '{opts['via']}' is not an IP address") from None
        if (
            dst != "default"
            and ipaddress.ip_network(dst).version != ipaddress.ip_address(via).version
        ):
            raise ctx.err(line, field, "destination and gateway are of different IP versions")
    dev = None
    if "dev" in opts:
        if opts["dev"] not in ifaces:
            raise ctx.err(
                line, field, f"route device '{opts['dev']}' is not an interface of the node"
            )
        dev = ifaces[opts["dev"]]
    metric = None
    if "metric" in opts:
        if not opts["metric"].isdigit():
            raise ctx.err(line, field, f"metric '{opts['metric']}' is not a number")
        metric = int(opts["metric"])
    return Route(dst=dst, via=via, dev=dev, metric=metric)


def _allocate_mgmt(ctx: _Ctx, mgmt: Mgmt, nodes: dict[str, Node], raw_nodes: LDict) -> None:
    """Give each namespace node an eth0 address on the mgmt subnet, honouring mgmt-ipv4/ipv6.

    Addresses are handed out in declaration order from the second host address (the first is
    the gateway on the mgmt bridge), so the same file always gives the same addresses.
    """
    for fam, subnet in ((4, mgmt.ipv4_subnet), (6, mgmt.ipv6_subnet)):
        attr = f"mgmt_ipv{fam}"
        net = ipaddress.ip_network(subnet) if subnet else None
        taken: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}
        if net is not None:
            taken[net.network_address + 1] = "the mgmt gateway"
        wants = [
            n
            for n in nodes.values()
            if n.kind not in ("host", "bridge") and n.network_mode != "none"
        ]
        for n in nodes.values():
            static = getattr(n, attr)
            if static is None:
                continue
            field, line = f"nodes.{n.name}.mgmt-ipv{fam}", raw_nodes.line_of(n.name)
            if n not in wants:
                raise ctx.err(line, field, f"node '{n.name}' has no management interface")
            if net is None:
                raise ctx.err(line, field, f"the lab has no mgmt ipv{fam}-subnet")
            try:
                addr = ipaddress.ip_address(static.split("/")[0])
            except ValueError:
                raise ctx.err(line, field, f"'{static}' is not an IPv{fam} address") from None
            if addr not in net or addr in (net.network_address, net.broadcast_address):
                raise ctx.err(line, field, f"{addr} is not a host address of {net}")
            if addr in taken:
                raise ctx.err(line, field, f"{addr} is already taken by {taken[addr]}")
            taken[addr] = f"node '{n.name}'"
            setattr(n, attr, f"{addr}/{net.prefixlen}")
        if net is None:
            continue
        hosts = (net.network_address + i for i in range(2, min(net.num_addresses - 1, 1 << 20)))
        for n in wants:
            if getattr(n, attr) is not None:
                continue
            for addr in hosts:
                if addr not in taken:
                    taken[addr] = f"node '{n.name}'"
                    setattr(n, attr, f"{addr}/{net.prefixlen}")
                    break
            else:
                raise ctx.err(
                    raw_nodes.line_of(n.name),
                    f"nodes.{n.name}",
                    f"the mgmt subnet {net} has no address left",
                )
