"""`graph`: the topology as DOT, mermaid, or a picture (SVG via Graphviz, HTML embedding it)."""

from __future__ import annotations

import html
import shutil
import subprocess

from netlab.errors import NetlabError
from netlab.model import HOST, MGMT_NET, Topology

_SHAPES = {
    "router": "box",
    "nat": "octagon",
    "bridge": "ellipse",
    "host": "house",
    "lispmesh-node": "component",
    "lispmesh-controller": "doubleoctagon",
    "linux": "box",
}


def _q(s: str) -> str:
    """A DOT string; labels keep their `\\n` line breaks, so only quotes are escaped."""
    return '"' + s.replace('"', '\\"') + '"'


def to_dot(topo: Topology) -> str:
    lines = [
        f"graph {_q(topo.name)} {{",
        "  graph [overlap=false, splines=true];",
        "  node [fontname=Helvetica, fontsize=11];",
        "  edge [fontname=Helvetica, fontsize=9];",
    ]
    for n in topo.nodes.values():
        label = f"{n.name}\\n{n.kind}" + (f"\\n{n.mgmt_ipv4}" if n.mgmt_ipv4 else "")
        lines.append(f"  {_q(n.name)} [shape={_SHAPES.get(n.kind, 'box')}, label={_q(label)}];")
    for special in (HOST, MGMT_NET):
        if special not in topo.nodes and any(
            special in (lk.a.node, lk.z.node) for lk in topo.links
        ):
            lines.append(f"  {_q(special)} [shape=house, style=dashed];")
    for lk in topo.links:
        lines.append(
            f"  {_q(lk.a.node)} -- {_q(lk.z.node)} "
            f"[taillabel={_q(lk.a.iface)}, headlabel={_q(lk.z.iface)}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mid(name: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in name)


def to_mermaid(topo: Topology) -> str:
    lines = ["graph LR"]
    names = list(topo.nodes)
    for special in (HOST, MGMT_NET):
        if special not in topo.nodes and any(
            special in (lk.a.node, lk.z.node) for lk in topo.links
        ):
            names.append(special)
    for name in names:
        kind = topo.nodes[name].kind if name in topo.nodes else name
        lines.append(f'  {_mid(name)}["{name}<br/>{kind}"]')
    for lk in topo.links:
        lines.append(f'  {_mid(lk.a.node)} ---|"{lk.a.iface} - {lk.z.iface}"| {_mid(lk.z.node)}')
    return "\n".join(lines) + "\n"


def to_svg(topo: Topology) -> str:
    dot = shutil.which("dot")
    if dot is None:
        raise NetlabError(
            "drawing needs Graphviz's `dot` command (apt-get install graphviz); "
            "--dot and --mermaid work without it"
        )
    res = subprocess.run(
        [dot, "-Tsvg"], input=to_dot(topo), capture_output=True, text=True, timeout=60
    )
    if res.returncode != 0:
        raise NetlabError(f"dot failed: {res.stderr.strip()}")
    return res.stdout


def to_html(topo: Topology) -> str:
    svg = to_svg(topo)
    svg = svg[svg.find("<svg") :]  # drop the XML prolog and doctype to embed it inline
    title = html.escape(f"lab {topo.name}")
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title>'
        "<style>body{font-family:sans-serif;margin:2em}</style></head>\n"
        f"<body><h1>{title}</h1>\n{svg}\n</body></html>\n"
    )
