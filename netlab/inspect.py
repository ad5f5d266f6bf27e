"""`inspect`: containerlab's rows (and JSON) of a lab's nodes and their state (the table is
lispmesh/views/lab.py)."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path
from typing import Any

from netlab import naming, netns, procs, state
from netlab.model import Topology


def _owner(path: Path) -> str:
    try:
        return pwd.getpwuid(os.stat(path).st_uid).pw_name
    except (OSError, KeyError):
        return ""


def rows(topo: Topology) -> list[dict[str, Any]]:
    """One row per node in containerlab's JSON shape (plus netlab's `netns`)."""
    st = state.LabState.load(topo.labdir)
    deployed = st is not None
    procs_by_node = {p.node: p for p in st.processes} if st else {}
    out = []
    for n in topo.nodes.values():
        if n.ns is None:
            run_state = "running" if deployed else "absent"
            cid = "host"
        else:
            ino = netns.inode(n.ns) if deployed else None
            # Like a container id: stable while the namespace lives, new after a redeploy.
            cid = naming.short_hash(f"{n.ns}:{ino}", 12) if ino else ""
            if ino is None:
                run_state = "absent"
            elif n.name in procs_by_node and not procs.is_alive(procs_by_node[n.name]):
                run_state = "exited"  # the namespace is up but the node process died
            else:
                run_state = "running"
        out.append(
            {
                "lab_name": topo.name,
                "labPath": str(topo.path),
                "name": n.ns or n.name,
                "container_id": cid,
                "image": n.image or "-",
                "kind": n.kind,
                "state": run_state,
                "ipv4_address": n.mgmt_ipv4 or "N/A",
                "ipv6_address": n.mgmt_ipv6 or "N/A",
                "owner": _owner(topo.path),
                "netns": n.ns or "",
            }
        )
    return out


def to_json(all_rows: list[dict[str, Any]]) -> str:
    return json.dumps({"containers": all_rows}, indent=2)
