"""The controller's topology as one JSON-ready document, with the mesh's links worked out.

`document(topology)` turns the Admin API's Topology message into plain data (what `--json`
prints) and adds `links`: one entry per pair of nodes that have a path, combining what each side
reported (path type, RLOC in use, RTT, whether its RLOC is up). Every renderer works from this
document, so they all show the same facts.
"""

from __future__ import annotations

from typing import Any

ACTIVE = "active"
DOWN = "down"


def document(topology: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    doc: dict[str, Any] = json_format.MessageToDict(
        topology, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    doc["links"] = links(doc)
    return doc


def _direction(peer: dict[str, Any]) -> dict[str, Any]:
    rloc = peer.get("rloc") or ""
    states = {r.get("address"): r for r in peer.get("rlocs", [])}
    rloc_up = bool(rloc) and bool(states.get(rloc, {"up": True}).get("up"))
    return {
        "path": peer.get("path") or "",
        "rloc": rloc,
        "local_rloc": peer.get("local_rloc") or "",
        "rtt_ms": float(peer.get("rtt_ms") or 0.0),
        "encrypted": bool(peer.get("encrypted")),
        "up": rloc_up and bool(peer.get("path")),
        "rlocs": [_rloc(r) for r in peer.get("rlocs", [])],
    }


def _rloc(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "address": r.get("address", ""),
        "up": bool(r.get("up")),
        "rtt_ms": float(r.get("rtt_ms") or 0.0),
    }


def links(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Pairs of nodes with a path: {a, b, type, encrypted, state, rtt_ms, a_to_b, b_to_a}."""
    live = {n["node"]["name"] for n in doc.get("nodes", []) if n["node"].get("state") != "revoked"}
    views: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in doc.get("nodes", []):
        name = entry["node"]["name"]
        if name not in live:
            continue
        for peer in entry.get("peer_paths", []):
            other = peer.get("name", "")
            if other in live and other != name:
                views[(name, other)] = _direction(peer)
    out = []
    for a, b in sorted({tuple(sorted(pair)) for pair in views}):
        ab, ba = views.get((a, b)), views.get((b, a))
        sides = [s for s in (ab, ba) if s is not None]
        rtts = [s["rtt_ms"] for s in sides if s["up"] and s["rtt_ms"] > 0]
        kinds = sorted({s["path"] for s in sides if s["path"]})
        out.append(
            {
                "a": a,
                "b": b,
                "type": "/".join(kinds) or "none",
                "encrypted": any(s["encrypted"] for s in sides)
                and all(s["encrypted"] for s in sides if s["path"]),
                "state": ACTIVE if any(s["up"] for s in sides) else DOWN,
                "rtt_ms": round(sum(rtts) / len(rtts), 3) if rtts else None,
                "a_to_b": ab,
                "b_to_a": ba,
            }
        )
    return out


def uplink_text(uplink: dict[str, Any]) -> str:
    state = "up" if uplink.get("up") else "DOWN"
    return f"{uplink.get('interface') or '-'} {uplink.get('address', '')} {state}"


def rtt_text(rtt: float | None) -> str:
    return "-" if not rtt else f"{rtt:.2f} ms"
