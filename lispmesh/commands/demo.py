"""`lispmesh demo`: a controller and three nodes join an encrypted mesh, live.

Deploys examples/demo.clab.yml with netlab (network namespaces), where each node gets nothing
but the controller's address and a join token; waits until every node has joined and every
pair reaches every other over the overlay; shows the topology as the controller sees it, a ping
across the mesh and proof that the underlay carries only ciphertext; then, where runc and
busybox-static are installed (examples/apps.clab.yml: the nodes run workloads), deploys an app
from the controller (`lispmesh app deploy`: two busybox echo replicas on distinct nodes) and
shows both answering on their EIDs from the third node; then destroys the lab (`--keep` leaves
it up).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from lispmesh.commands.options import Subparsers
from lispmesh.errors import CliError

WAIT_JOIN = 60.0
WAIT_MESH = 60.0
ECHO = {"Cmd": ["/bin/nc", "-ll", "-p", "7", "-e", "/bin/cat"], "User": "app"}
ECHO_APP = """apiVersion: lispmesh/v1
kind: App
metadata: {{name: echo, labels: {{app: echo}}}}
spec:
  image: demo/echo@{digest}
  source: {source}
  replicas: 2
  resources: {{memory: 64Mi, cpu: 100m, disk: 64Mi}}
  constraints: {{distinct_hosts: true}}
  ports: [tcp/7]
"""


def _apps_possible() -> bool:
    from node.workloads.layout_writer import BUSYBOX

    return shutil.which("runc") is not None and BUSYBOX.exists()


def _check_machine() -> None:
    if os.geteuid() != 0:
        raise CliError("the demo builds network namespaces and TUN devices: run it as root")
    if not Path("/dev/net/tun").exists():
        raise CliError("no /dev/net/tun on this machine: the overlay needs TUN devices")


def run_demo(args: argparse.Namespace) -> int:
    _check_machine()
    from lispmesh.mesh_lab import CONTROLLER, REPO_ROOT, TOPOLOGY, MeshLab, wait_for

    apps_topology = REPO_ROOT / "examples" / "apps.clab.yml"
    from netlab import NetlabError

    console = Console()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="lispmesh-demo-"))
    apps = _apps_possible()
    if apps:
        name = args.name or f"lm{os.urandom(3).hex()}"
        env = {"TAG": name, "HOST_MNT": f"/proc/{os.getpid()}/ns/mnt"}
        lab = MeshLab(workdir, name=name, topology=apps_topology, extra_env=env)
    else:
        console.print("(no runc or busybox-static here: the demo shows no app; bootstrap.sh)")
        lab = MeshLab(workdir, name=args.name)
    console.rule("[bold]lispmesh demo: a controller and three nodes")
    console.print(f"lab [bold]{lab.name}[/bold] from {TOPOLOGY}, state in {lab.state}")
    console.print(f"join token (given to every node): lmj1.{lab.token.token_id}…")
    started = time.monotonic()
    try:
        lab.deploy()
    except NetlabError as exc:
        raise CliError(f"cannot deploy the lab: {exc}") from None
    keep = args.keep
    try:
        deployed = time.monotonic()
        console.print(f"deployed in {deployed - started:.1f} s; nodes joining ...")
        for node in lab.nodes:
            enrollment = wait_for(partial(lab.enrollment, node), WAIT_JOIN, f"{node} to join")
            console.print(f"  {node} joined as [bold]{enrollment.name}[/bold]: "
                          f"{', '.join(enrollment.eid_prefixes)}")  # fmt: skip
        wait_for(lab.all_pairs_reach, WAIT_MESH, "every node to reach every other", 0.1)
        console.print(f"[green]full mesh reachable {time.monotonic() - deployed:.1f} s after "
                      "the nodes started[/green]")  # fmt: skip
        # Give the nodes a moment to report their peers (they do when their state changes).
        with contextlib.suppress(TimeoutError):
            wait_for(partial(_all_report_peers, lab), 10, "the nodes' status reports", 0.5)
        console.rule("topology (lispmesh topology)")
        out = lab.lab.exec(
            CONTROLLER,
            [sys.executable, "-m", "lispmesh", "topology",
             "--state-dir", str(lab.state / CONTROLLER)],
            timeout=30, env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )  # fmt: skip
        print(out.stdout or out.stderr)
        a, b = lab.nodes[0], lab.nodes[-1]
        target = lab.eid(b)
        console.rule(f"ping {target} ({b}'s EID) from {a}, across the encrypted mesh")
        ping = lab.lab.exec(a, ["ping", "-c", "3", "-i", "0.2", "-W", "2", target], timeout=20)
        print(ping.stdout.strip() or ping.stderr.strip())
        _show_ciphertext(lab, a, target, console)
        if ping.returncode != 0:
            keep = True
            raise CliError(f"the ping failed; the lab is kept for a look: {lab.name}")
        if apps and not _demo_app(lab, console, workdir):
            keep = True
            raise CliError(f"the app did not answer; the lab is kept for a look: {lab.name}")
    except TimeoutError as exc:
        keep = True
        print(lab.dump(), file=sys.stderr)
        raise CliError(f"{exc}; the lab is kept for a look (see the logs above)") from None
    finally:
        if keep:
            console.print(
                f"lab kept: its namespaces are clab-{lab.name}-*, e.g.\n"
                f"  ip netns exec clab-{lab.name}-{lab.nodes[0]} ping {lab.eid(lab.nodes[-1])}\n"
                f"destroy it with: lispmesh demo --destroy {lab.workdir}"
            )
        else:
            if apps:
                _remove_workloads(lab)
            lab.destroy()
            console.print("lab destroyed")
    return 0


def _demo_app(lab: object, console: Console, workdir: Path) -> bool:
    """Deploy a 2-replica echo app from the controller (distinct hosts), reach both replicas on
    their EIDs from the node that runs neither; remove it. False if it did not answer."""
    import json

    from lispmesh.mesh_lab import CONTROLLER, MeshLab, wait_for
    from node.workloads.layout_writer import busybox_layer, write_layout

    assert isinstance(lab, MeshLab)
    image = workdir / "echo-image"
    digest = write_layout(image, [busybox_layer()], config=ECHO)
    spec = workdir / "echo.yml"
    spec.write_text(ECHO_APP.format(digest=digest, source=image))
    root = str(Path(__file__).resolve().parents[2])

    def app(*args: str) -> Any:
        argv = [sys.executable, "-m", "lispmesh", "app", *args,
                "--state-dir", str(lab.state / CONTROLLER)]  # fmt: skip
        return lab.lab.exec(CONTROLLER, argv, timeout=30, env={"PYTHONPATH": root})

    console.rule("an app from the controller (lispmesh app deploy echo.yml)")
    print(spec.read_text())
    wait_for(partial(_capacity_reported, lab), 30, "the nodes to report their workload capacity")
    out = app("deploy", str(spec))
    print(out.stdout or out.stderr)

    def placed() -> Any:
        result = app("status", "echo", "--json")
        doc = json.loads(result.stdout) if result.returncode == 0 else {}
        rows = doc.get("placed", [])
        return doc if len(rows) == 2 and all(r["state"] == "RUNNING" for r in rows) else None

    started = time.monotonic()
    doc = wait_for(placed, 120, "both replicas running")
    console.print(f"both replicas running {time.monotonic() - started:.1f} s after the deploy")
    print(app("status", "echo").stdout)
    hosts = {r["node"] for r in doc["placed"]}
    names = {lab.enrollment(n).name: n for n in lab.nodes}
    client = next(n for name, n in names.items() if name not in hosts)
    ok = True
    for replica in doc["placed"]:
        eid = replica["eids"][0]
        console.rule(f"from {client}: replica {replica['replica']} on {replica['node']} at {eid}")
        with contextlib.suppress(TimeoutError):
            wait_for(partial(lab.ping, client, eid), 30, f"{client} to reach {eid}")
        echo = lab.lab.exec(client, ["busybox", "sh", "-c", f"echo hello {eid} | nc -w 3 {eid} 7"],
                            timeout=20)  # fmt: skip
        print(f"TCP echo on {eid}:7 answered: {echo.stdout.strip() or echo.stderr.strip()}")
        ok = ok and echo.stdout.strip() == f"hello {eid}"
    print(app("rm", "echo", "--cluster").stdout.strip().splitlines()[0])
    return ok


def _capacity_reported(lab: object) -> bool:
    import json

    from lispmesh.mesh_lab import MeshLab

    assert isinstance(lab, MeshLab)
    try:
        nodes = lab.admin("node", "list").get("nodes", [])
        return len(nodes) == len(lab.nodes) and all(
            json.loads(lab.admin("node", "describe", n["name"]).get("status_json") or "{}")
            .get("workload_capacity") for n in nodes
        )  # fmt: skip
    except (RuntimeError, ValueError):
        return False


def _remove_workloads(lab: object) -> None:
    """Workloads outlive their agents: whatever is left of the app goes by its runc ids."""
    from lispmesh.mesh_lab import MeshLab
    from node.workloads.runc import RuncRuntime

    assert isinstance(lab, MeshLab)
    for index, node in enumerate(lab.nodes, 1):
        runtime = RuncRuntime(lab.state / f"{node}-workloads" / "containers",
                              lab.state / f"{node}-runc", f"{lab.name}{index}-",
                              node_netns=lab.lab.netns_name(node))  # fmt: skip
        for name in runtime.names():
            with contextlib.suppress(Exception):
                runtime.destroy(name)
                runtime.delete(name)


def _all_report_peers(lab: object) -> bool:
    from lispmesh.mesh_lab import MeshLab

    assert isinstance(lab, MeshLab)
    try:
        topology = lab.admin("topology")
    except (RuntimeError, ValueError):
        return False
    return all(entry.get("peers") for entry in topology.get("nodes", []))


def _show_ciphertext(lab: object, node: str, target: str, console: Console) -> None:
    """Capture the underlay during one ping: LISP data packets (UDP 4341), no ICMP inside."""
    from lispmesh.mesh_lab import MeshLab

    assert isinstance(lab, MeshLab)
    ns = lab.lab.netns_name(node)
    try:
        dump = subprocess.Popen(
            ["ip", "netns", "exec", ns, "tcpdump", "-i", "eth1", "-n", "-c", "4", "-l",
             "udp port 4341"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
    except OSError:
        return
    try:
        time.sleep(0.5)
        lab.lab.exec(node, ["ping", "-c", "2", "-i", "0.2", "-W", "1", target], timeout=10)
        out, _ = dump.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        dump.kill()
        out, _ = dump.communicate()
    if out.strip():
        console.rule("on the underlay meanwhile (tcpdump on eth1): only encrypted LISP data")
        print(out.strip())


def destroy_workdir(workdir: Path) -> int:
    from lispmesh.mesh_lab import TOPOLOGY
    from netlab import Lab

    labs = sorted(workdir.glob("clab-*"))
    if not labs:
        raise CliError(f"no lab in {workdir}")
    for labdir in labs:
        name = labdir.name.removeprefix("clab-")
        # Destroy reads what was built from the lab's state file; the variables only parse.
        env = dict.fromkeys(("LISPMESH", "PYTHONPATH_DIR", "LAB_STATE", "LISPMESH_TOKEN", "TAG",
                             "HOST_MNT"), "unset")  # fmt: skip
        Lab.from_file(TOPOLOGY, name=name, env=env, workdir=workdir).destroy()
        print(f"lab {name} destroyed")
    return 0


def _main(args: argparse.Namespace) -> int:
    if args.destroy:
        return destroy_workdir(Path(args.destroy))
    return run_demo(args)


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="a controller and three nodes join an encrypted mesh (live lab)"
    )
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    parser.add_argument("--name", help="lab name (default: a random one)")
    parser.add_argument("--workdir", help="where the lab's state goes (default: a temp dir)")
    parser.add_argument("--destroy", metavar="WORKDIR", help="destroy a lab left by --keep")
    parser.set_defaults(handler=_main)
