"""A controller and three nodes from examples/demo.clab.yml, each node given only the join token
and the controller's address: the issue's lab, then what happens when things go wrong.

One lab for the module, but no test relies on another having run first (CI runs them in a random
order): the fixture waits for the joins and the full mesh, each test waits (bounded) for the state
it needs, and the revocation, which cannot be undone, gets a lab of its own.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest

from controller_api.offline import create_token
from lispmesh.mesh_lab import CONTROLLER, REPO_ROOT, MeshLab, wait_for

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshLab]:
    with _joined_lab(tmp_path_factory.mktemp("ctl")) as built:
        yield built


@pytest.fixture
def revocation_lab(tmp_path: Path) -> Iterator[MeshLab]:
    with _joined_lab(tmp_path / "ctl") as built:
        yield built


@contextmanager
def _joined_lab(workdir: Path) -> Iterator[MeshLab]:
    """Deploy the lab and wait until every node has joined and every pair reaches every other;
    `joined_in` is the time from the deploy to full reachability."""
    built = MeshLab(
        workdir,
        f"ct{secrets.token_hex(3)}",
        token_uses=3,
        controller_flags="--rekey-after 3",
        node_flags="--backoff-cap 2",  # production: 30 s,
    )
    built.deploy()
    try:
        deployed_at = time.monotonic()
        for node in built.nodes:
            wait_for(partial(built.enrollment, node), 30, f"{node} to join")
        try:
            wait_for(built.all_pairs_reach, 30, "every pair to reach every other", 0.05)
        except TimeoutError:
            pytest.fail(f"no full mesh\n{built.dump()}")
        built.joined_in = time.monotonic() - deployed_at  # type: ignore[attr-defined]
        yield built
    finally:
        built.destroy()


def _healthy(lab: MeshLab) -> None:
    """Wait (bounded) for the state every test starts from: the controller up, the three nodes
    online and every pair reaching every other (an earlier test may have restarted things)."""
    if not lab.process_alive(CONTROLLER):
        lab.start_process(CONTROLLER)
    wait_for(lambda: _all_online(lab), 45, "the three nodes online at the controller")
    for node in lab.nodes:
        wait_for(partial(_agent_connected, lab, node), 30, f"{node}'s agent connected")
    wait_for(lab.all_pairs_reach, 30, "the full mesh", 0.1)


def _agent_connected(lab: MeshLab, node: str) -> bool:
    agent = (lab.status(node) or {}).get("agent") or {}
    return agent.get("controller_state") == "connected"


def _nodes(lab: MeshLab) -> dict[str, dict[str, object]]:
    """The lab's own three nodes as the controller lists them. Other tests enroll more nodes
    (the token test joins one that never comes online): they are not part of the lab's state."""
    ours = {lab.enrollment(node).name for node in lab.nodes}
    reply = lab.admin("node", "list", "--all")
    return {n["name"]: n for n in reply.get("nodes", []) if n["name"] in ours}


def test_nodes_join_and_reach_each_other(lab: MeshLab) -> None:
    elapsed = lab.joined_in  # type: ignore[attr-defined]
    print(f"\ntime from the last node's start to full reachability: {elapsed:.2f} s (target 10 s)")
    _healthy(lab)
    # IPv6 EIDs too, and the traffic is encrypted (authenticated key exchange with each peer).
    a, b = lab.nodes[0], lab.nodes[1]
    wait_for(lambda: lab.ping(a, lab.eid(b, 6)), 10, "IPv6 across the mesh")
    status = lab.status(a)
    assert status is not None and status["encryption"] and status["authenticated_key_exchange"]
    assert status["agent"]["controller_state"] == "connected"
    nodes = _nodes(lab)
    assert len(nodes) == 3 and all(n["state"] == "online" for n in nodes.values())
    prefixes = [p for n in nodes.values() for p in n["eid_prefixes"]]
    assert len(set(prefixes)) == 6  # no two nodes share an EID prefix
    # Each node reports its uplinks and peers; the map-server holds exactly its registrations.
    topology = wait_for(partial(_reported, lab), 15, "status reports with peers and uplinks")
    for entry in topology["nodes"]:
        assert len(entry["peers"]) == 2 and entry["node"]["uplinks"][0]["interface"] == "eth1"
        registered = {r["eid"]["prefix"] for r in entry["registrations"]}
        assert registered == set(entry["node"]["eid_prefixes"])


def _reported(lab: MeshLab) -> dict[str, object] | None:
    ours = {lab.enrollment(node).name for node in lab.nodes}
    topology = lab.admin("topology")
    topology["nodes"] = [e for e in topology["nodes"] if e["node"]["name"] in ours]
    done = len(topology["nodes"]) == 3 and all(
        len(e["peers"]) == 2 and e["node"]["uplinks"] for e in topology["nodes"]
    )
    return topology if done else None


def test_controller_restart_loses_nothing(lab: MeshLab) -> None:
    _healthy(lab)
    before = lab.admin("node", "list", "--all")
    tokens_before = lab.admin("token", "list")
    lab.stop_process(CONTROLLER)  # SIGKILL: no chance to flush anything
    wait_for(lambda: not lab.process_alive(CONTROLLER), 5, "the controller to die")
    lab.start_process(CONTROLLER)
    wait_for(lambda: _all_online(lab), 30, "the nodes to reconnect")
    after = lab.admin("node", "list", "--all")
    keys = ("node_id", "name", "eid_prefixes", "config_version", "token_id", "enrolled_at")
    assert [{k: n[k] for k in keys} for n in after["nodes"]] == [
        {k: n[k] for k in keys} for n in before["nodes"]
    ]
    assert lab.admin("token", "list") == tokens_before
    wait_for(lab.all_pairs_reach, 20, "the mesh after the controller restart", 0.1)


def _all_online(lab: MeshLab) -> bool:
    try:
        nodes = _nodes(lab)
    except RuntimeError:
        return False
    return len(nodes) == 3 and all(n["state"] == "online" for n in nodes.values())


def test_controller_down_mesh_stays_and_restarted_node_comes_back(lab: MeshLab) -> None:
    _healthy(lab)
    a, b, c = lab.nodes
    lab.stop_process(CONTROLLER)
    wait_for(lambda: not lab.process_alive(CONTROLLER), 5, "the controller to die")
    # The mesh does not need the controller: established peers keep talking once they know it
    # is gone.
    for node in (b, c):
        wait_for(partial(_unreachable_status, lab, node), 15, f"{node} to see the controller gone")
    assert lab.ping(b, lab.eid(c), count=3) and lab.ping(c, lab.eid(b), count=3)
    # A node rebooted meanwhile comes back from its checkpoint and says why it waits.
    lab.stop_process(a)
    wait_for(lambda: not lab.process_alive(a), 5, f"{a} to die")
    lab.start_process(a)
    try:
        status = wait_for(partial(_unreachable_status, lab, a), 15, f"{a} from its checkpoint")
    except TimeoutError:
        pytest.fail(lab.dump())
    agent = status["agent"]
    assert agent["config_source"] == "checkpoint" and agent["applied_version"] >= 1
    assert "unreachable since" in agent["controller"] and "next retry in" in agent["controller"]
    assert status["xtr"]["eid_prefixes"] == list(lab.enrollment(a).eid_prefixes)
    # From its checkpointed mappings it probes its peers with a fresh key: back in the mesh with
    # the controller (and its map-server) still down.
    wait_for(lambda: lab.ping(a, lab.eid(b)) and lab.ping(b, lab.eid(a)), 20,
             f"{a} <-> {b} with the controller still down", 0.1)  # fmt: skip
    assert not lab.process_alive(CONTROLLER)
    # The controller (and its embedded map-server) back: the rebooted node is in the mesh again.
    back = time.monotonic()
    lab.start_process(CONTROLLER)
    wait_for(lambda: _all_online(lab), 45, "the nodes to come back to the controller")
    wait_for(lambda: lab.ping(a, lab.eid(b)) and lab.ping(b, lab.eid(a)), 30,
             f"{a} <-> {b} once the controller is back", 0.1)  # fmt: skip
    print(f"\n{a} back in the mesh {time.monotonic() - back:.1f} s after the controller")


def _unreachable_status(lab: MeshLab, node: str) -> dict[str, object] | None:
    status = lab.status(node)
    agent = (status or {}).get("agent") or {}
    if status and status.get("xtr") and agent.get("controller_state") == "unreachable":
        return status
    return None


def test_revoked_node_is_cut_off(revocation_lab: MeshLab) -> None:
    lab = revocation_lab
    victim, other = lab.nodes[2], lab.nodes[0]
    name = lab.enrollment(victim).name
    assert lab.ping(other, lab.eid(victim))  # the positive path first: it is reachable
    revoked_at = time.monotonic()
    reply = lab.admin("node", "revoke", name)
    assert reply["state"] == "revoked"
    wait_for(lambda: not lab.process_alive(victim), 10, f"{victim}'s agent to leave the mesh")
    wait_for(lambda: not lab.ping(other, lab.eid(victim)), 10, f"{victim} to be unreachable")
    print(f"\n{victim} cut off {time.monotonic() - revoked_at:.1f} s after its revocation")
    topology = lab.admin("topology")
    entry = next(t for t in topology["nodes"] if t["node"]["name"] == name)
    assert entry["node"]["state"] == "revoked" and entry["registrations"] == []
    assert "revoked" in lab.log(victim)
    assert not (lab.state / victim / "checkpoint.json").exists()
    # Restarted, it refuses to run (its identity is dead); the others still reach each other.
    a, b = lab.nodes[0], lab.nodes[1]
    # The revocation reconfigures every node at once: wait (bounded) instead of one ping.
    wait_for(lambda: lab.ping(a, lab.eid(b)), 10, f"{a} to still reach {b}")
    # Every other node got the revocation list: its xTR refuses the victim's keys.
    for node in (a, b):
        wait_for(partial(_lists_revoked, lab, node, name), 10, f"{node} to list {name} revoked")


def _lists_revoked(lab: MeshLab, node: str, name: str) -> bool:
    status = lab.status(node) or {}
    return name in ((status.get("xtr") or {}).get("revoked_peers") or [])


def test_expired_and_used_up_tokens_are_refused(lab: MeshLab, tmp_path: Path) -> None:
    expired, row = create_token(lab.state / CONTROLLER, 0.5, 1)
    wait_for(lambda: time.time() > row.expires_at, 5, "the token to expire")
    argv = [sys.executable, "-m", "lispmesh", "node", "join", "--controller", "10.77.0.1:7443",
            "--token", str(expired), "--state-dir", str(tmp_path / "late")]  # fmt: skip
    env = {"PYTHONPATH": str(REPO_ROOT)}
    result = lab.lab.exec(lab.nodes[0], argv, timeout=30, env=env)
    assert result.returncode == 78, result
    line = result.stderr.strip()
    assert f"token lmj1.{expired.token_id}… expired at " in line, line
    assert expired.secret not in line and "Traceback" not in line
    once, _ = create_token(lab.state / CONTROLLER, 600, 1)
    argv[argv.index(str(expired))] = str(once)
    first = lab.lab.exec(lab.nodes[0], argv, timeout=30, env=env)
    assert first.returncode == 0, first
    argv[argv.index(str(tmp_path / "late"))] = str(tmp_path / "later")
    second = lab.lab.exec(lab.nodes[0], argv, timeout=30, env=env)
    assert second.returncode == 78 and "is used up (1 of 1 uses)" in second.stderr, second
    joined = json.loads((tmp_path / "late" / "agent.json").read_text())
    assert joined["node_id"]
