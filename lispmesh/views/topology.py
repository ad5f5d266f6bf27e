"""The topology for people: rich tables and a tree (see lispmesh.topology_model for the data)."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from lispmesh.topology_model import ACTIVE, rtt_text, uplink_text

_STATE_STYLE = {"online": "green", "offline": "yellow", "revoked": "red", "enrolled": "dim"}


def _header(doc: dict[str, Any]) -> Text:
    servers = ", ".join(doc.get("map_servers", [])) or "-"
    pools = ", ".join(doc.get("eid_pools", [])) or "-"
    return Text(
        f"controller {doc.get('controller_address', '?')}   map-servers: {servers}   "
        f"EID pools: {pools}   at {doc.get('generated_at') or '-'}"
    )


def _state(state: str) -> Text:
    return Text(state, style=_STATE_STYLE.get(state, ""))


def _uplinks(node: dict[str, Any]) -> Text:
    text = Text()
    for i, up in enumerate(node.get("uplinks", [])):
        if i:
            text.append("\n")
        text.append(uplink_text(up), style="" if up.get("up") else "bold red")
    return text if node.get("uplinks") else Text("-")


def _direction(view: dict[str, Any] | None) -> str:
    if view is None:
        return "-"
    if not view["rloc"]:
        return "no path"
    state = "" if view["up"] else " DOWN"
    return f"{view['local_rloc'] or '?'} → {view['rloc']}{state} {rtt_text(view['rtt_ms'])}"


def table(doc: dict[str, Any]) -> RenderableType:
    """`lispmesh topology` (= `controller topology`): the nodes, then the paths between them."""
    nodes = Table(
        "node", "state", "EID prefixes", "uplinks (RLOCs)", "peers", "cert until", title="nodes"
    )
    for entry in doc.get("nodes", []):
        n = entry["node"]
        nodes.add_row(
            n["name"],
            _state(n.get("state", "?")),
            "\n".join(n.get("eid_prefixes", [])),
            _uplinks(n),
            str(len(entry.get("peers", []))),
            n.get("cert_not_after") or "-",
        )
    paths = Table("pair", "path", "encrypted", "state", "RTT", "a → b", "b → a", title="paths")
    for link in doc.get("links", []):
        active = link["state"] == ACTIVE
        paths.add_row(
            f"{link['a']} ↔ {link['b']}",
            link["type"],
            "yes" if link["encrypted"] else Text("NO", style="bold red"),
            Text(link["state"], style="green" if active else "bold red"),
            rtt_text(link["rtt_ms"]),
            _direction(link["a_to_b"]),
            _direction(link["b_to_a"]),
        )
    return Group(_header(doc), nodes, paths)


def tree(doc: dict[str, Any]) -> RenderableType:
    """`lispmesh topology --tree`: each node, its uplinks and its peers."""
    root = Tree(_header(doc))
    for entry in doc.get("nodes", []):
        n = entry["node"]
        branch = root.add(
            Text.assemble((n["name"], "bold"), "  ", _state(n.get("state", "?")), "  ",
                          ", ".join(n.get("eid_prefixes", [])))
        )  # fmt: skip
        uplinks = branch.add("uplinks")
        for up in n.get("uplinks", []):
            uplinks.add(Text(uplink_text(up), style="" if up.get("up") else "bold red"))
        registered = sorted(
            {rloc for r in entry.get("registrations", []) for rloc in r.get("rlocs", [])}
        )
        branch.add(f"registered at the map-server: {', '.join(registered) or '-'}")
        peers = branch.add("peers")
        for peer in entry.get("peer_paths", []):
            path = peer.get("path") or "inbound only"
            lock = "encrypted" if peer.get("encrypted") else "NOT encrypted"
            peers.add(
                f"{peer.get('name')}: {path}, {lock}, {peer.get('local_rloc') or '?'} → "
                f"{peer.get('rloc') or '-'}, RTT {rtt_text(peer.get('rtt_ms'))}"
            )
    return root
