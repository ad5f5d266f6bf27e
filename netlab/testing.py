"""Helpers for tests that build labs (ours and other engineers' multi-node tests).

    from netlab.testing import lab_up

    def test_something(tmp_path):
        with lab_up("examples/two-node.clab.yml", tmp_path, fake_lispmesh=True) as lab:
            lab.exec("n1", ["ping", "-c", "1", "-W", "2", "10.0.12.2"], check=True)

`lab_up` gives the lab a unique name (so parallel and repeated runs never collide), puts its lab
directory under `workdir`, and destroys it on exit, also when the test fails.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from netlab import netns, procs, state, topology
from netlab.lab import Lab
from netlab.model import Topology

# Stand-in for the lispmesh node binary until it exists: lives until destroy stops it.
FAKE_LISPMESH_CMD = "sleep 3600"


def unique_name(base: str) -> str:
    return f"{base}-{secrets.token_hex(3)}"


def fake_lispmesh_overrides(path: str | Path, cmd: str = FAKE_LISPMESH_CMD) -> dict[str, Any]:
    """Overrides replacing the process of every lispmesh-* node by `cmd`."""
    topo = topology.parse_file(path)
    return {n.name: {"cmd": cmd} for n in topo.nodes.values() if n.kind.startswith("lispmesh")}


@contextmanager
def lab_up(
    path: str | Path,
    workdir: str | Path,
    *,
    name: str | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    fake_lispmesh: bool = False,
    **deploy_args: Any,
) -> Iterator[Lab]:
    """Deploy a uniquely named copy of a topology; destroy it on exit whatever happens."""
    ov: dict[str, Any] = dict(fake_lispmesh_overrides(path)) if fake_lispmesh else {}
    for node, fields in (overrides or {}).items():
        ov[node] = {**ov.get(node, {}), **fields}
    base = topology.parse_file(path).name
    lab = Lab.from_file(path, name=name or unique_name(base[:20]), overrides=ov, workdir=workdir)
    try:
        lab.deploy(**deploy_args)
        yield lab
    finally:
        lab.destroy()


def link_pings(topo: Topology) -> list[tuple[str, str]]:
    """(node, address) pairs that must answer a ping: each addressed end of every link, pinged
    from the other end when that end has an address of the same family in the same subnet."""
    out = []
    for lk in topo.links:
        ends = [(lk.a, lk.z), (lk.z, lk.a)]
        for src, dst in ends:
            if src.node not in topo.nodes or dst.node not in topo.nodes:
                continue
            s_addrs = topo.nodes[src.node].addresses.get(src.ifname, [])
            d_addrs = topo.nodes[dst.node].addresses.get(dst.ifname, [])
            for d in d_addrs:
                dif = ipaddress.ip_interface(d)
                if any(ipaddress.ip_interface(s).network == dif.network for s in s_addrs):
                    out.append((src.node, str(dif.ip)))
    return out


def leftovers(topo: Topology) -> list[str]:
    """Anything of the lab still present: namespaces, registry entry, state file."""
    found = [f"namespace {n}" for n in topo.namespaces() if netns.exists(n)]
    found += [f"UTS namespace {n}" for n in topo.namespaces() if os.path.exists(netns.uts_path(n))]
    entry = state.lookup(topo.name)
    if entry and Path(entry["labdir"]) == topo.labdir:
        found.append(f"registry entry {topo.name}")
    if (topo.labdir / state.STATE_FILE).exists():
        found.append(f"state file {topo.labdir / state.STATE_FILE}")
    return found


def pids_with_cmdline(marker: str) -> list[int]:
    """Pids whose command line contains `marker` (e.g. a unique sleep duration)."""
    out = []
    for pid in (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()):
        try:
            cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if marker.encode() in cmdline and procs.starttime(pid) is not None:
            out.append(pid)
    return out
