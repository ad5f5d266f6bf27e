"""`lispmesh demo`: a controller and three nodes join an encrypted mesh, live.

Deploys examples/demo.clab.yml with netlab (network namespaces), where each node gets nothing
but the controller's address and a join token; waits until every node has joined and every
pair reaches every other over the overlay; shows the topology as the controller sees it, a ping
across the mesh and proof that the underlay carries only ciphertext; then destroys the lab
(`--keep` leaves it up).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from rich.console import Console

from lispmesh.commands.options import Subparsers
from lispmesh.errors import CliError

WAIT_JOIN = 60.0
WAIT_MESH = 60.0


def _check_machine() -> None:
    if os.geteuid() != 0:
        raise CliError("the demo builds network namespaces and TUN devices: run it as root")
    if not Path("/dev/net/tun").exists():
        raise CliError("no /dev/net/tun on this machine: the overlay needs TUN devices")


def run_demo(args: argparse.Namespace) -> int:
    _check_machine()
    from lispmesh.mesh_lab import CONTROLLER, TOPOLOGY, MeshLab, wait_for
    from netlab import NetlabError

    console = Console()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="lispmesh-demo-"))
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
            lab.destroy()
            console.print("lab destroyed")
    return 0


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
        env = dict.fromkeys(("LISPMESH", "PYTHONPATH_DIR", "LAB_STATE", "LISPMESH_TOKEN"), "unset")
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
