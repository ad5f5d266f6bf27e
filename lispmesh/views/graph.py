"""The topology as a graph: DOT and mermaid text, and pictures (SVG, HTML) drawn by Graphviz.

Nodes are the mesh's nodes (with their EIDs and uplinks) and the controller; an edge joins two
nodes with a path, labelled with its type and RTT, solid when active and dashed red when down.
"""

from __future__ import annotations

import html
import shutil
import subprocess
from typing import Any

from lispmesh.errors import CliError
from lispmesh.topology_model import ACTIVE, rtt_text, uplink_text

_COLORS = {"online": "darkgreen", "offline": "orange", "revoked": "red", "enrolled": "grey"}
CONTROLLER = "controller"


def _q(s: str) -> str:
    """A DOT string; labels keep their `\\n` line breaks, so only quotes are escaped."""
    return '"' + s.replace('"', '\\"') + '"'


def _lines(*parts: str) -> str:
    return "\\n".join(part.replace("\\", "/") for part in parts)


def _node_label(n: dict[str, Any]) -> str:
    uplinks = (uplink_text(u) for u in n.get("uplinks", []))
    return _lines(n["name"], *n.get("eid_prefixes", []), *uplinks)


def _edge_label(link: dict[str, Any]) -> str:
    return f"{link['type']} {rtt_text(link['rtt_ms'])}" + ("" if link["encrypted"] else " PLAIN")


def to_dot(doc: dict[str, Any]) -> str:
    lines = [
        'graph "lispmesh" {',
        "  graph [overlap=false, splines=true];",
        "  node [fontname=Helvetica, fontsize=10, shape=box, style=rounded];",
        "  edge [fontname=Helvetica, fontsize=9];",
        f"  {_q(CONTROLLER)} [shape=doubleoctagon, "
        f"label={_q(_lines(CONTROLLER, str(doc.get('controller_address', ''))))}];",
    ]
    for entry in doc.get("nodes", []):
        n = entry["node"]
        color = _COLORS.get(n.get("state", ""), "black")
        lines.append(f"  {_q('node:' + n['name'])} [label={_q(_node_label(n))}, color={color}];")
        online = n.get("state") == "online"
        lines.append(
            f"  {_q(CONTROLLER)} -- {_q('node:' + n['name'])} "
            f"[style={'dotted' if online else 'invis'}, color=grey];"
        )
    for link in doc.get("links", []):
        active = link["state"] == ACTIVE
        style = "style=solid, penwidth=2, color=darkgreen" if active else "style=dashed, color=red"
        lines.append(
            f"  {_q('node:' + link['a'])} -- {_q('node:' + link['b'])} "
            f"[label={_q(_edge_label(link))}, {style}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mid(name: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in name)


def to_mermaid(doc: dict[str, Any]) -> str:
    lines = ["graph LR", f'  ctl{{{{"controller<br/>{doc.get("controller_address", "")}"}}}}']
    for entry in doc.get("nodes", []):
        n = entry["node"]
        label = "<br/>".join(
            [n["name"], *n.get("eid_prefixes", []), *(uplink_text(u) for u in n.get("uplinks", []))]
        )
        lines.append(f'  {_mid(n["name"])}["{label}"]')
        if n.get("state") == "online":
            lines.append(f"  ctl -.- {_mid(n['name'])}")
    for link in doc.get("links", []):
        arrow = "===" if link["state"] == ACTIVE else "-.-"
        label = _edge_label(link) + ("" if link["state"] == ACTIVE else " DOWN")
        lines.append(f'  {_mid(link["a"])} {arrow}|"{label}"| {_mid(link["b"])}')
    return "\n".join(lines) + "\n"


def to_svg(doc: dict[str, Any]) -> str:
    dot = shutil.which("dot")
    if dot is None:
        raise CliError(
            "drawing needs Graphviz's `dot` command (apt-get install graphviz); "
            "--dot and --mermaid work without it"
        )
    res = subprocess.run(
        [dot, "-Tsvg"], input=to_dot(doc), capture_output=True, text=True, timeout=60
    )
    if res.returncode != 0:
        raise CliError(f"dot failed: {res.stderr.strip()}")
    return res.stdout


def to_html(doc: dict[str, Any]) -> str:
    svg = to_svg(doc)
    svg = svg[svg.find("<svg") :]  # drop the XML prolog and doctype to embed it inline
    title = html.escape(f"lispmesh topology ({doc.get('generated_at') or 'now'})")
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title>'
        "<style>body{font-family:sans-serif;margin:2em}</style></head>\n"
        f"<body><h1>{title}</h1>\n{svg}\n</body></html>\n"
    )
