"""Apps from the controller onto the nodes (issues 13 item 7, 14): a controller and three nodes,
`lispmesh app deploy` of a 2-replica busybox echo with distinct_hosts; the controller places
them, each hosting node's agent imports the image (a layout on the node's filesystem, checked
against the pinned digest), runs it under runc with the EID the controller assigned from the app
pool, and registers that EID; the third node reaches both replicas by EID through the encrypted
mesh (ping and a TCP echo). A policy naming the app by label (`label:app=echo`) then allows its
port 7 and denies its port 8 (both served: before the policy both answer). `app status` shows
nodes, EIDs and states; `app rm` stops them. A bad spec is refused with one line naming the
field."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from lispmesh.mesh_lab import CONTROLLER, REPO_ROOT, MeshLab, wait_for
from node.workloads.runc import RuncRuntime
from tests.oci_build import BUSYBOX, busybox_layer, write_layout

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and runc"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc not installed (bootstrap.sh)"),
    pytest.mark.skipif(not BUSYBOX.exists(), reason="busybox-static not installed"),
]
TOPOLOGY = REPO_ROOT / "examples" / "apps.clab.yml"
SERVE = "/bin/nc -ll -p 8 -e /bin/cat & exec /bin/nc -ll -p 7 -e /bin/cat"  # echo on 7 and 8
ECHO = {"Cmd": ["/bin/sh", "-c", SERVE], "User": "app"}
POLICY = """\
version: 1
rules:
  - {name: echo-7, from: any, to: label:app=echo, proto: tcp, ports: [7]}
  - {name: ping, from: any, to: any, proto: icmp}
"""


def app_spec(digest: str, source: Path, cpu: str = "100m") -> str:
    return f"""apiVersion: lispmesh/v1
kind: App
metadata: {{name: echo, labels: {{app: echo}}}}
spec:
  image: local/echo@{digest}
  source: {source}
  replicas: 2
  resources: {{memory: 64Mi, cpu: {cpu}, disk: 64Mi}}
  constraints: {{distinct_hosts: true}}
  ports: [tcp/7]
"""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[MeshLab]:
    tag = f"la{secrets.token_hex(2)}"
    env = {"TAG": tag, "HOST_MNT": f"/proc/{os.getpid()}/ns/mnt"}
    built = MeshLab(tmp_path / "lab", tag, topology=TOPOLOGY, token_uses=3,
                    node_flags="--backoff-cap 2", extra_env=env)  # fmt: skip
    built.tag = tag  # type: ignore[attr-defined]
    built.deploy()
    try:
        for node in built.nodes:
            wait_for(partial(built.enrollment, node), 30, f"{node} to join")
        yield built
    finally:
        for index, node in enumerate(built.nodes, 1):  # workloads outlive agents: by their ids
            runtime = RuncRuntime(built.state / f"{node}-workloads" / "containers",
                                  built.state / f"{node}-runc", f"{tag}{index}-",
                                  node_netns=built.lab.netns_name(node))  # fmt: skip
            for name in runtime.names():
                runtime.destroy(name)
                runtime.delete(name)
        built.destroy()


def app(lab: MeshLab, *args: str, check: bool = True) -> Any:
    """`lispmesh app ARGS --json` against the controller, in its namespace."""
    argv = [sys.executable, "-m", "lispmesh", "app", *args,
            "--state-dir", str(lab.state / CONTROLLER), "--json"]  # fmt: skip
    result = lab.lab.exec(CONTROLLER, argv, timeout=30, env={"PYTHONPATH": str(REPO_ROOT)})
    if check and result.returncode != 0:
        raise AssertionError(f"lispmesh app {' '.join(args)}: {result.stderr.strip()}")
    return json.loads(result.stdout) if result.returncode == 0 else result


def test_an_app_deployed_at_the_controller_answers_on_its_eids_from_another_node(
    lab: MeshLab, tmp_path: Path
) -> None:
    image = tmp_path / "echo"
    digest = write_layout(image, [busybox_layer()], config=ECHO)
    bad = tmp_path / "bad.yml"
    bad.write_text(app_spec(digest, image, cpu="lots"))
    refused = app(lab, "deploy", str(bad), check=False)
    assert refused.returncode == 1
    assert "bad.yml:" in refused.stderr and "spec.resources.cpu" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    spec = tmp_path / "echo.yml"
    spec.write_text(app_spec(digest, image))
    # The nodes report their workload capacity once connected: until then nothing fits.
    # The nodes already have keys with each other when the app comes (as in a running mesh):
    # those keys must take the replicas' EIDs, delegated after they were agreed.
    try:
        wait_for(lab.all_pairs_reach, 30, "every pair to reach every other", 0.05)
        wait_for(partial(_capacity_reported, lab), 30, "every node to report its capacity")
    except TimeoutError:
        pytest.fail(f"no full mesh, or no capacity reported\n{lab.dump()}")
    deployed = app(lab, "deploy", str(spec))
    assert deployed["ok"] and deployed["created"], deployed

    def status() -> Any:
        return app(lab, "status", "echo")

    def running() -> bool:
        placed = status().get("placed", [])
        return len(placed) == 2 and all(r.get("state") == "RUNNING" for r in placed)

    try:
        wait_for(running, 90, "both replicas running")
    except TimeoutError:
        pytest.fail(f"not running: {status()}\n{lab.dump()}")
    placed = status()["placed"]
    hosts = {r["node"] for r in placed}
    assert len(hosts) == 2  # distinct_hosts
    names = {lab.enrollment(n).name: n for n in lab.nodes}
    (client,) = [n for name, n in names.items() if name not in hosts]
    for replica in placed:
        eid4, eid6 = replica["eids"]
        assert eid4.startswith("10.251.")  # the app pool, not the host node's prefix
        for address in (eid4, eid6):
            try:
                wait_for(partial(lab.ping, client, address), 30, f"{client} to reach {address}")
            except TimeoutError:
                pytest.fail(f"{client} cannot reach {address}\n{lab.dump()}")
        for port in (7, 8):
            assert _echo(lab, client, eid4, port), (port, lab.dump())
    # Through the encrypted overlay: the client counted packets with both hosts.
    node_status = lab.status(client)
    assert node_status is not None
    peers = {p["name"]: p for p in node_status["xtr"]["peers"]}
    assert all(peers[h]["packets_received"] > 0 for h in hosts)

    # A policy naming the app by its label: port 7 allowed, port 8 (served) denied.
    path = tmp_path / "policy.yml"
    path.write_text(POLICY)
    argv = [sys.executable, "-m", "lispmesh", "policy", "apply", str(path),
            "--state-dir", str(lab.state / CONTROLLER)]  # fmt: skip
    applied = lab.lab.exec(CONTROLLER, argv, timeout=30, env={"PYTHONPATH": str(REPO_ROOT)})
    assert applied.returncode == 0, applied
    eid4 = placed[0]["eids"][0]
    try:
        wait_for(lambda: not _echo(lab, client, eid4, 8, wait=1), 30, "port 8 denied")
    except TimeoutError:
        pytest.fail(f"port 8 still answers under the policy\n{lab.dump()}")
    for replica in placed:
        assert _echo(lab, client, replica["eids"][0], 7), lab.dump()  # allowed by the label
    denied = sum(_policy_drops(lab, names[h]) for h in hosts) + _policy_drops(lab, client)
    assert denied > 0

    removed = app(lab, "rm", "echo", "--cluster")
    assert removed["removed"]

    def stopped() -> bool:
        for host in hosts:
            agent = (lab.status(names[host]) or {}).get("agent", {})
            if agent.get("workloads"):
                return False
        return True

    wait_for(stopped, 60, "both replicas stopped and removed")
    assert app(lab, "ls", "--cluster").get("apps", []) == []


def _echo(lab: MeshLab, node: str, address: str, port: int, wait: int = 3) -> bool:
    line = f"hi-{address}-{port}"
    command = f"echo {line} | nc -w {wait} {address} {port}"
    echo = lab.lab.exec(node, ["busybox", "sh", "-c", command], timeout=20)
    return echo.stdout == f"{line}\n"


def _policy_drops(lab: MeshLab, node: str) -> int:
    xtr = (lab.status(node) or {}).get("xtr", {})
    return int(xtr.get("drops", {}).get("policy-denied", 0))


def _capacity_reported(lab: MeshLab) -> bool:
    nodes = lab.admin("node", "list").get("nodes", [])
    if len(nodes) < 3:
        return False
    for node in nodes:
        detail = lab.admin("node", "describe", node["name"])
        status = json.loads(detail.get("status_json") or "{}")
        if not status.get("workload_capacity"):
            return False
    return True
