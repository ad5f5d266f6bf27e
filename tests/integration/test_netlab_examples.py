"""The examples deploy a working mesh with nothing but `deploy` (root, namespaces, TUN).

Each example is deployed unchanged (only its lab name and lab directory differ): netlab starts
the controller, makes a join token, starts the nodes with it; the test waits until the nodes
have joined and pings EID to EID across the encrypted overlay.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from lispmesh.waiting import wait_until
from netlab import Lab
from netlab.state import STATE_FILE, LabState
from netlab.testing import leftovers, unique_name

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not Path("/dev/net/tun").exists(), reason="needs /dev/net/tun"),
    pytest.mark.timeout(90),
]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
JOIN_WAIT = 30.0
PING_WAIT = 20.0


wait_for = wait_until


def lispmesh(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "lispmesh", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, env=env)


def logs(lab: Lab) -> str:
    out = []
    for node in lab.topo.nodes:
        path = lab.labdir / node / "stderr.log"
        if path.exists():
            out.append(f"--- {node}:\n{path.read_text(errors='replace')[-2000:]}")
    return "\n".join(out)


@contextmanager
def deployed(example: str, tmp_path: Path) -> Iterator[Lab]:
    path = EXAMPLES / example
    lab = Lab.from_file(path, name=unique_name(path.name.split(".")[0][:12]), workdir=tmp_path)
    try:
        assert lab.deploy() == "deployed"
        yield lab
    except BaseException:
        print(logs(lab), file=sys.stderr)
        raise
    finally:
        lab.destroy()
    assert leftovers(lab.topo) == []
    assert not list(lab.labdir.glob("*/state")), "destroy leaves no state dir behind"
    assert not (lab.labdir / "run").exists()


def status(lab: Lab, node: str) -> dict[str, Any] | None:
    res = lispmesh("node", "status", "--json", "--socket", str(lab.labdir / "run" / f"{node}.sock"))
    if res.returncode != 0:
        return None
    doc: dict[str, Any] = json.loads(res.stdout)
    if doc.get("agent", {}).get("controller_state") != "connected":
        return None
    return doc


def joined(lab: Lab, nodes: list[str]) -> dict[str, dict[str, Any]]:
    found = {n: wait_for(lambda n=n: status(lab, n), JOIN_WAIT, f"{n} to join") for n in nodes}
    return found


def eid4(doc: dict[str, Any]) -> str:
    return next(a for a in doc["xtr"]["eid_addresses"] if ":" not in a)


def eid6(doc: dict[str, Any]) -> str:
    return next(a for a in doc["xtr"]["eid_addresses"] if ":" in a)


def pings(lab: Lab, node: str, address: str) -> bool:
    res = lab.exec(node, ["ping", "-c", "1", "-W", "1", address], timeout=10)
    return res.returncode == 0


def assert_no_secret_on_disk(lab: Lab) -> None:
    """The join token is in no log, not in the state file, and on no command line: what any local
    user reads from /proc/PID/cmdline (`ps`). Only the nodes' environments hold it."""
    state = (lab.labdir / STATE_FILE).read_text()
    assert "lmj1." not in state and "--token" not in state
    for log in lab.labdir.glob("*/*.log"):
        assert "lmj1." not in log.read_text(errors="replace"), log
    recorded = LabState.load(lab.labdir)
    assert recorded is not None
    records = [r for r in recorded.processes if lab.topo.nodes[r.node].kind == "lispmesh-node"]
    assert records, "the lab runs node processes"
    for rec in records:
        cmdline = Path(f"/proc/{rec.pid}/cmdline").read_bytes()
        assert b"lmj1." not in cmdline, (rec.node, cmdline)
        environ = Path(f"/proc/{rec.pid}/environ").read_bytes()
        assert b"LISPMESH_TOKEN=lmj1." in environ, rec.node  # the positive path: it got it


def test_two_node_example_is_a_mesh(tmp_path: Path) -> None:
    with deployed("two-node.clab.yml", tmp_path) as lab:
        docs = joined(lab, ["n1", "n2"])
        assert docs["n1"]["encryption"] is True
        for a, b in (("n1", "n2"), ("n2", "n1")):
            target = eid4(docs[b])
            wait_for(lambda a=a, t=target: pings(lab, a, t), PING_WAIT, f"{a} to ping {target}")
        wait_for(lambda: pings(lab, "n1", eid6(docs["n2"])), PING_WAIT, "an IPv6 EID ping")
        listed = lab.exec(  # the controller's API listens in its namespace only
            "ctrl",
            [sys.executable, "-m", "lispmesh", "controller", "node", "list", "--json",
             "--state-dir", str(lab.labdir / "ctrl" / "state")],
            env={"PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        assert {"n1", "n2"} <= {n["name"] for n in json.loads(listed.stdout)["nodes"]}
        assert_no_secret_on_disk(lab)
        assert lab.deploy() == "unchanged"


def test_edge_dual_uplink_example_registers_both_uplinks(tmp_path: Path) -> None:
    with deployed("edge-dual-uplink.clab.yml", tmp_path) as lab:
        docs = joined(lab, ["edge", "peer"])
        uplinks = {u["interface"]: u["address"] for u in docs["edge"]["xtr"]["uplinks"]}
        assert uplinks == {"wifi": "10.10.1.2", "lte": "10.20.1.2"}
        target = eid4(docs["peer"])
        wait_for(lambda: pings(lab, "edge", target), PING_WAIT, f"edge to ping {target}")
        back = eid4(docs["edge"])
        wait_for(lambda: pings(lab, "peer", back), PING_WAIT, f"peer to ping {back}")


def _nat_verdict(lab: Lab, node: str) -> dict[str, Any] | None:
    doc = status(lab, node)
    nat = doc["xtr"]["uplinks"][0]["nat"] if doc and doc.get("xtr") else None
    return nat if nat and nat["state"] != "checking" else None


@pytest.mark.timeout(150)  # three joins, a NAT check and relayed pings on 2 shared cores
def test_hub_spoke_nat_example_reaches_the_spoke_behind_the_nat(tmp_path: Path) -> None:
    """hub and spoke1 mesh across the routed WAN; spoke2 joins through the NAT, knows it is
    behind one (Info-Request to the controller's map-server) and is reached through the hub,
    which the controller names as the mesh's RTR."""
    with deployed("hub-spoke-nat.clab.yml", tmp_path) as lab:
        docs = joined(lab, ["hub", "spoke1", "spoke2"])
        assert [u["address"] for u in docs["spoke2"]["xtr"]["uplinks"]] == ["192.168.1.2"]
        target = eid4(docs["spoke1"])
        wait_for(lambda: pings(lab, "hub", target), PING_WAIT, f"hub to ping {target}")
        behind = wait_for(lambda: _nat_verdict(lab, "spoke2"), JOIN_WAIT, "spoke2's NAT check")
        # One map-server: a NAT is seen (nat1's outside address), its mapping class is not.
        assert (behind["state"], behind["mapping"]) == ("nat", None)
        assert behind["translated"].startswith("10.0.3.2:")
        hub = wait_for(lambda: _nat_verdict(lab, "hub"), JOIN_WAIT, "hub's NAT check")
        assert (hub["state"], hub["translated"]) == ("none", "10.0.1.2:4342")
        spoke2 = eid4(docs["spoke2"])
        for a, b in (("spoke1", spoke2), ("hub", spoke2), ("spoke2", target)):
            wait_for(lambda a=a, b=b: pings(lab, a, b), JOIN_WAIT, f"{a} to ping {b}")
        peers = {p["name"]: p for p in (status(lab, "spoke1") or {})["xtr"]["peers"]}
        assert peers["spoke2"]["path"] == "rtr:hub", peers["spoke2"]
        relay = (status(lab, "spoke2") or {})["xtr"]["nat_relay"]
        assert relay["via"] == "hub", relay
