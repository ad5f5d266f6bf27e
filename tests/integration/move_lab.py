"""A controller, two workload nodes (n1, n2) and a client node (n3) in namespaces
(tests/integration/app_move.clab.yml), for moving an app replica between n1 and n2 while n3
keeps pinging its EID: tests/integration/test_app_move.py and bench/move_bench.py share it.

`Pinger` runs `ping -D` in the client's namespace (stopped by its pid) and reads the replies'
timestamps; the move gap is the longest time between two replies around the move.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from lispmesh.mesh_lab import CONTROLLER, REPO_ROOT, MeshLab, wait_for
from node.workloads.layout_writer import busybox_layer, write_layout
from node.workloads.runc import RuncRuntime

TOPOLOGY = Path(__file__).with_name("app_move.clab.yml")
HOSTS = ("n1", "n2")  # the nodes with a workload runtime
CLIENT = "n3"
ECHO = {"Cmd": ["/bin/nc", "-ll", "-p", "7", "-e", "/bin/cat"], "User": "app"}


def app_spec(digest: str, source: Path, lost_after: str = "2s") -> str:
    return f"""apiVersion: lispmesh/v1
kind: App
metadata: {{name: mover, labels: {{app: mover}}}}
spec:
  image: local/echo@{digest}
  source: {source}
  replicas: 1
  resources: {{memory: 64Mi, cpu: 100m, disk: 64Mi}}
  ports: [tcp/7]
  disconnect: {{lost_after: {lost_after}}}
"""


@contextmanager
def move_lab(workdir: Path, node_timeout: str = "2s") -> Iterator[MeshLab]:
    """The lab, deployed and joined; on exit its workloads (which outlive agents) and the lab
    are removed."""
    tag = f"mv{secrets.token_hex(2)}"
    env = {"TAG": tag, "HOST_MNT": f"/proc/{os.getpid()}/ns/mnt"}
    lab = MeshLab(workdir / "lab", tag, topology=TOPOLOGY, token_uses=3,
                  controller_flags=f"--node-timeout {node_timeout}",
                  node_flags="--backoff-cap 2", extra_env=env)  # fmt: skip
    lab.deploy()
    try:
        for node in lab.nodes:
            wait_for(partial(lab.enrollment, node), 30, f"{node} to join")
        yield lab
    finally:
        for index, node in enumerate(lab.nodes, 1):
            if node not in HOSTS:
                continue
            runtime = RuncRuntime(lab.state / f"{node}-workloads" / "containers",
                                  lab.state / f"{node}-runc", f"{tag}{index}-",
                                  node_netns=lab.lab.netns_name(node))  # fmt: skip
            for name in runtime.names():
                runtime.destroy(name)
                runtime.delete(name)
        lab.destroy()


def run_cli(lab: MeshLab, *args: str, check: bool = True) -> Any:
    """`lispmesh ARGS --json` against the controller, in its namespace."""
    argv = [sys.executable, "-m", "lispmesh", *args,
            "--state-dir", str(lab.state / CONTROLLER), "--json"]  # fmt: skip
    result = lab.lab.exec(CONTROLLER, argv, timeout=30, env={"PYTHONPATH": str(REPO_ROOT)})
    if check and result.returncode != 0:
        raise AssertionError(f"lispmesh {' '.join(args)}: {result.stderr.strip()}")
    return json.loads(result.stdout) if result.returncode == 0 else result


def hosts_ready(lab: MeshLab) -> bool:
    """n1 and n2 report their workload capacity, and every node reaches every other."""
    names = {lab.enrollment(n).name for n in HOSTS}
    nodes = lab.admin("node", "list").get("nodes", [])
    for node in nodes:
        if node["name"] in names:
            status = json.loads(lab.admin("node", "describe", node["name"]).get("status_json")
                                or "{}")  # fmt: skip
            if not status.get("workload_capacity"):
                return False
            names.discard(node["name"])
    return not names and lab.all_pairs_reach()


def deploy(lab: MeshLab, workdir: Path, lost_after: str = "2s") -> dict[str, Any]:
    """Deploy the one-replica app; its replica once RUNNING (node, eids)."""
    image = workdir / "echo"
    digest = write_layout(image, [busybox_layer()], config=ECHO)
    spec = workdir / "mover.yml"
    spec.write_text(app_spec(digest, image, lost_after))
    deployed = run_cli(lab, "app", "deploy", str(spec))
    assert deployed["ok"], deployed
    return wait_running(lab, lambda node: True, 90)


def copies(lab: MeshLab) -> list[dict[str, Any]]:
    """The replica's copies as `app status` shows them (a lost node's copy stays listed)."""
    placed: list[dict[str, Any]] = run_cli(lab, "app", "status", "mover").get("placed", [])
    return placed


def wait_running(lab: MeshLab, where: Any, timeout: float) -> dict[str, Any]:
    """The replica's copy RUNNING on a node `where(node)` accepts, once there is one."""
    found: dict[str, Any] = {}

    def done() -> bool:
        for r in copies(lab):
            if r.get("state") == "RUNNING" and where(r["node"]):
                found.update(r)
                return True
        return False

    wait_for(done, timeout, "the replica running where expected", 0.2)
    return found


def lab_node(lab: MeshLab, name: str) -> str:
    """The lab node (n1...) of the enrolled node `name`."""
    return next(n for n in lab.nodes if lab.enrollment(n).name == name)


class Pinger:
    """`ping -D` from the client to `address`, 10 a second, replies read with their times."""

    LINE = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from ")

    def __init__(self, lab: MeshLab, address: str, out: Path) -> None:
        self.out = out
        self.file = out.open("w")
        self.proc = lab.lab.popen(
            CLIENT, ["stdbuf", "-oL", "ping", "-D", "-n", "-i", "0.1", "-W", "1", address],
            stdout=self.file, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def replies(self) -> list[float]:
        text = self.out.read_text(errors="replace")
        return [float(m.group(1)) for m in map(self.LINE.match, text.splitlines()) if m]

    def answered_since(self, moment: float, count: int = 3) -> bool:
        return sum(1 for t in self.replies() if t > moment) >= count

    def gap(self, since: float) -> float:
        """The longest time without a reply between the last reply before `since` and the
        first ones after it."""
        times = self.replies()
        before = [t for t in times if t <= since]
        after = [t for t in times if t > since]
        if not before or not after:
            return float("inf")
        marks = [before[-1], *after]
        return max(b - a for a, b in itertools.pairwise(marks))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.file.close()


def client_view(lab: MeshLab) -> str:
    """The client's map-cache and counters, and the controller's topology (for failures)."""
    status = lab.status(CLIENT) or {}
    xtr = status.get("xtr", {})
    topology = lab.admin("topology", check=False)
    shown = json.dumps(topology) if isinstance(topology, dict) else topology
    return (f"{CLIENT} map-cache: {json.dumps(xtr.get('map_cache'))}\n"
            f"{CLIENT} stats: {json.dumps(xtr.get('stats'))}\n"
            f"{CLIENT} drops: {json.dumps(xtr.get('drops'))}\n"
            f"topology: {shown}")  # fmt: skip


def now() -> float:
    return time.time()
