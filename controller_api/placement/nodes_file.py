"""A cluster described in a file, for `lispmesh app deploy --dry-run FILE --nodes NODES.yml`: what
would the scheduler do on these nodes? Errors are one line naming file:line and field, as in the
app spec.

    nodes:
      - name: n1
        memory: 8Gi              # what workloads may use (default 4Gi)
        cpu: 4                   # CPUs, or 500m (default 4)
        disk: 100Gi              # default 100Gi
        labels: {site: factory}
        kinds: [container, vm]   # default [container]
        hypervisors: [kvm]       # default none
        health: online           # online | disconnected | lost
        draining: false
"""

from __future__ import annotations

from typing import Any

from common import yamldoc
from common.yamldoc import Path, YamlDoc
from controller_api.apps.spec import (
    HYPERVISORS,
    KINDS,
    AppSpecError,
    Resources,
    boolean,
    choice,
    cpu,
    labels_field,
    list_field,
    name_field,
    required,
    size,
)
from controller_api.placement.model import HEALTH, Node

_TOP = ("nodes",)
_NODE = ("name", "memory", "cpu", "disk", "labels", "kinds", "hypervisors", "health", "draining")
GI = 1 << 30


def parse_nodes(text: str, filename: str = "nodes.yml") -> tuple[Node, ...]:
    doc = YamlDoc(filename, AppSpecError)
    top = yamldoc.mapping(yamldoc.load(text, doc), (), doc, _TOP)
    items = list_field(required(top, "nodes", (), doc), ("nodes",), doc)
    nodes: list[Node] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        path: Path = ("nodes", i)
        fields = yamldoc.mapping(item, path, doc, _NODE)
        name = name_field(required(fields, "name", path, doc), (*path, "name"), doc)
        if name in seen:
            raise doc.fail((*path, "name"), f"node {name!r} is already nodes[{seen[name]}]")
        seen[name] = i
        nodes.append(_node(name, fields, path, doc))
    return tuple(nodes)


def _node(name: str, fields: dict[str, Any], path: Path, doc: YamlDoc) -> Node:
    def get(key: str, parse: Any, default: Any) -> Any:
        return parse(fields[key], (*path, key), doc) if key in fields else default

    capacity = Resources(
        get("memory", size, 4 * GI), get("cpu", cpu, 4000), get("disk", size, 100 * GI)
    )
    labels = dict(get("labels", labels_field, ()))

    def names(key: str, choices: tuple[str, ...], default: frozenset[str]) -> frozenset[str]:
        if key not in fields:
            return default
        values = list_field(fields[key], (*path, key), doc)
        return frozenset(choice(v, (*path, key, j), doc, choices) for j, v in enumerate(values))

    return Node(
        name,
        capacity,
        labels,
        kinds=names("kinds", KINDS, frozenset({"container"})),
        hypervisors=names("hypervisors", HYPERVISORS, frozenset()),
        health=get("health", lambda v, p, d: choice(v, p, d, HEALTH), "online"),
        draining=get("draining", boolean, False),
    )
