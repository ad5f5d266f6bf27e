"""Destroy a lab from its state file: processes, host-side links, namespaces, state dirs.

Order matters: processes first (a process keeps its namespace alive), then host-side veth ends
(the only objects in the root namespace), then the namespaces, which takes every veth and bridge
inside them along, then the recorded state dirs of lispmesh nodes (only inside the lab dir).
Only what the state file recorded is touched, plus processes found running inside the lab's own
namespaces (started by exec commands, say).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from netlab import links, netns, procs, state
from netlab.model import Topology


def is_intact(st: state.LabState) -> bool:
    """Every recorded namespace and process is still there."""
    return all(netns.exists(n) for n in st.namespaces) and all(
        procs.is_alive(p) for p in st.processes
    )


def destroy_state(st: state.LabState, timeout: float = 3.0) -> None:
    for rec in st.processes:
        procs.stop(rec, timeout)
    for ns in st.namespaces:
        pids = netns.pids_in(ns)
        if pids:
            procs.kill_pids(pids, timeout)
    if st.host_links:
        with netns.ipr(None) as ipr:
            for ifname in st.host_links:
                links.delete(ipr, ifname)
    for ns in st.namespaces:
        netns.remove(ns)
    # Removing a namespace is synchronous for its name; make sure, boundedly, before reporting.
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(netns.exists(n) for n in st.namespaces):
        time.sleep(0.02)
    labdir = st.labdir.resolve()
    for d in st.dirs:  # node state dirs: only ever inside the lab dir
        if d.resolve().is_relative_to(labdir) and d.resolve() != labdir:
            shutil.rmtree(d, ignore_errors=True)
    st.remove()
    state.unregister(str(st.data.get("lab", "")), st.labdir)


def destroy_topology(topo: Topology, cleanup: bool = False) -> bool:
    """Destroy the lab of a topology; returns False when nothing of it was deployed."""
    found = False
    with state.lab_lock(topo.name):
        st = state.LabState.load(topo.labdir)
        if st is not None:
            destroy_state(st)
            found = True
        else:
            # No state file (lab dir deleted by hand?): remove the namespaces the file implies.
            leftovers = [n for n in topo.namespaces() if netns.exists(n)]
            if leftovers:
                fake = state.LabState(
                    topo.labdir,
                    {"lab": topo.name, "namespaces": leftovers, "host_links": [], "processes": []},
                )
                topo.labdir.mkdir(parents=True, exist_ok=True)
                destroy_state(fake)
                found = True
        if cleanup:
            shutil.rmtree(topo.labdir, ignore_errors=True)
    return found


def destroy_labdir(lab: str, labdir: Path, cleanup: bool = False) -> bool:
    with state.lab_lock(lab):
        st = state.LabState.load(labdir)
        if st is None:
            state.unregister(lab, labdir)
            return False
        destroy_state(st)
        if cleanup:
            shutil.rmtree(labdir, ignore_errors=True)
        return True


def destroy_all(cleanup: bool = False) -> list[str]:
    """Destroy every lab in the registry; returns their names."""
    done = []
    for entry in state.all_labs():
        if destroy_labdir(entry["lab"], Path(entry["labdir"]), cleanup):
            done.append(entry["lab"])
    return done
