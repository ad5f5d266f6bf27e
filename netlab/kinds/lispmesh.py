"""Kinds `lispmesh-node` and `lispmesh-controller`: a namespace running a lispmesh process, wired
up by netlab so that `deploy` alone gives a running mesh.

Without `cmd`, a controller runs `<python> -m lispmesh controller serve --state-dir
<labdir>/<node>/state --listen <address>:7443`, where the address is the first one the netlab
`addresses:` extension gives its data interfaces (in link order). Before it starts, netlab makes
a join token offline in that state dir (`controller token create --offline`), one use per node it
wires. A node without `cmd` and `startup-config` then runs `<python> -m lispmesh node run
--controller <address>:7443 --name <node> --state-dir <labdir>/<node>/state
--run-dir <labdir>/run --uplink <each data interface>` (the mgmt eth0 is no uplink; the
control socket is <labdir>/run/<node>.sock); with `startup-config` it runs `node run --config
<file>`. An explicit `cmd` always wins. Controllers are configured (and started) first and nodes
last (see `Kind.start_order`).

`<python>` is the interpreter running netlab, with PYTHONPATH set to the checkout netlab comes
from when lispmesh cannot be imported from there otherwise. The token goes to the node in its
environment ($LISPMESH_TOKEN): never on a command line (which every local user can read), in the
state file or in the logs; destroy removes the state dirs.
netlab imports nothing of lispmesh: it only builds command lines.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from netlab import procs
from netlab.errors import NetlabError, TopologyError
from netlab.kinds.base import DeployContext
from netlab.kinds.linux import LinuxKind, start_cmd
from netlab.model import Node, Topology

NODE = "lispmesh-node"
CONTROLLER = "lispmesh-controller"
CONTROLLER_PORT = 7443
TOKEN_TTL = "24h"
TOKEN_KEY = "lispmesh-join-token"  # where the controller leaves the token for the nodes
TOKEN_ENV = "LISPMESH_TOKEN"  # where the node agent looks for it (node/join_secret.py)
LISTEN_WAIT = 20.0  # how long deploy waits for the controller's port before starting nodes
CHECKOUT = Path(__file__).resolve().parents[2]  # the tree netlab (and lispmesh) come from


@dataclass(frozen=True)
class Wiring:
    """Which lispmesh nodes netlab joins to which controller."""

    controller: str | None  # the one lispmesh-controller, if the lab has exactly one
    address: str | None  # its listen address (None when it has its own cmd and no address)
    nodes: tuple[str, ...]  # nodes netlab joins with a token: no cmd, no startup-config


def data_interfaces(topo: Topology, node: Node) -> list[str]:
    """The node's interfaces on links (kernel names, in link order): not the mgmt eth0."""
    seen: list[str] = []
    for lk in topo.links:
        for ep in (lk.a, lk.z):
            if ep.node == node.name and ep.ifname not in seen:
                seen.append(ep.ifname)
    return seen


def data_address(topo: Topology, node: Node) -> str | None:
    """The first address of the node's first addressed data interface, in link order."""
    for ifname in data_interfaces(topo, node):
        for cidr in node.addresses.get(ifname, []):
            return str(ipaddress.ip_interface(cidr).ip)
    return None


def host_port(address: str, port: int = CONTROLLER_PORT) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _error(topo: Topology, node: Node, message: str) -> TopologyError:
    return TopologyError(topo.path.name, node.line or None, f"nodes.{node.name}", message)


def plan(topo: Topology) -> Wiring:
    """Check the lispmesh wiring of a topology; TopologyError naming the node if it cannot be."""
    controllers = [n for n in topo.nodes.values() if n.kind == CONTROLLER]
    for c in controllers:
        if c.cmd is None and data_address(topo, c) is None:
            raise _error(
                topo,
                c,
                f"lispmesh-controller '{c.name}' has no address to listen on: give its first "
                "data interface one (addresses: {eth1: [10.0.0.1/24]}) or give it a cmd",
            )
    wired = [
        n for n in topo.nodes.values() if n.kind == NODE and n.cmd is None and not n.startup_config
    ]
    if not wired:
        if len(controllers) != 1:
            return Wiring(None, None, ())
        return Wiring(controllers[0].name, data_address(topo, controllers[0]), ())
    first = wired[0]
    how = f"give '{first.name}' a cmd or a startup-config"
    if not controllers:
        raise _error(
            topo,
            first,
            f"lispmesh-node '{first.name}' has no cmd and no startup-config, so netlab joins "
            f"it to the lab's lispmesh-controller, but the lab has none (add one, or {how})",
        )
    if len(controllers) > 1:
        names = ", ".join(c.name for c in controllers)
        raise _error(
            topo,
            first,
            f"lispmesh-node '{first.name}' has no cmd and no startup-config, so netlab joins "
            f"it to the lab's lispmesh-controller, but the lab has {len(controllers)} ({names}): "
            f"keep one, or {how}",
        )
    ctrl = controllers[0]
    if ctrl.cmd is not None:
        raise _error(
            topo,
            first,
            f"lispmesh-node '{first.name}' would be joined to controller '{ctrl.name}', but "
            f"netlab only makes join tokens for a controller it starts itself and "
            f"'{ctrl.name}' has its own cmd ({how})",
        )
    return Wiring(ctrl.name, data_address(topo, ctrl), tuple(n.name for n in wired))


# --- the commands ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def lispmesh_env() -> tuple[tuple[str, str], ...]:
    """Environment the lispmesh processes need: PYTHONPATH=<checkout> unless this interpreter
    imports this checkout's lispmesh without it (an installed or editable package)."""
    probe = "import lispmesh, sys; sys.stdout.write(lispmesh.__file__ or '')"
    try:
        res = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, cwd="/"
        )
        found = Path(res.stdout).resolve().parents[1] if res.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, IndexError):
        found = None
    if found == CHECKOUT or not (CHECKOUT / "lispmesh" / "__main__.py").is_file():
        return ()
    old = os.environ.get("PYTHONPATH")
    return (("PYTHONPATH", str(CHECKOUT) + (os.pathsep + old if old else "")),)


def python_argv() -> list[str]:
    return [sys.executable, "-m", "lispmesh"]


def state_dir(topo: Topology, node: Node) -> Path:
    return topo.labdir / node.name / "state"


def run_dir(topo: Topology) -> Path:
    return topo.labdir / "run"


def controller_argv(topo: Topology, node: Node) -> list[str]:
    address = data_address(topo, node)
    if address is None:  # plan() refuses such topologies; this guards hand-made ones
        raise NetlabError(f"node {node.name}: lispmesh-controller has no address to listen on")
    argv = [*python_argv(), "controller", "serve", "--state-dir", str(state_dir(topo, node))]
    argv += ["--listen", host_port(address)]
    if node.startup_config:
        argv += ["--config", node.startup_config]
    return argv


def token_argv(topo: Topology, node: Node, uses: int) -> list[str]:
    return [
        *python_argv(), "controller", "token", "create", "--offline",
        "--state-dir", str(state_dir(topo, node)), "--uses", str(uses), "--ttl", TOKEN_TTL,
        "--description", f"netlab lab {topo.name}", "--json",
    ]  # fmt: skip


def node_argv(topo: Topology, node: Node, token: str | None) -> list[str]:
    """The node's command; `token` is needed when netlab joins it to the controller. The token
    itself goes into the environment (node_env), never the command line every user can read."""
    if node.startup_config:
        return [*python_argv(), "node", "run", "--config", node.startup_config]
    wiring = plan(topo)
    if wiring.address is None or token is None:
        raise NetlabError(f"node {node.name}: no join token from the lab's lispmesh-controller")
    argv = [
        *python_argv(), "node", "run", "--controller", host_port(wiring.address),
        "--name", node.name, "--state-dir", str(state_dir(topo, node)),
        "--run-dir", str(run_dir(topo)),
    ]  # fmt: skip
    # Uplinks: the data interfaces. The mgmt network is out of band, never the underlay (a
    # node with an RLOC there would be reached around routers and NATs, or not at all).
    for ifname in data_interfaces(topo, node):
        argv += ["--uplink", ifname]
    return argv


# --- deploy ---------------------------------------------------------------------------------


def _fresh_dir(ctx: DeployContext, path: Path) -> None:
    """A state dir for this deploy: recorded (destroy removes it), emptied of older runs."""
    ctx.state.add_dir(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, mode=0o700)


def make_token(ctx: DeployContext, node: Node, uses: int) -> str:
    argv = token_argv(ctx.topo, node, uses)
    try:
        res = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=ctx.exec_timeout,
            env={**os.environ, **dict(lispmesh_env()), **node.env},
        )
    except subprocess.TimeoutExpired:
        raise NetlabError(
            f"node {node.name}: making the join token took longer than {ctx.exec_timeout:g} s"
        ) from None
    except OSError as exc:
        raise NetlabError(f"node {node.name}: cannot make the join token: {exc}") from None
    if res.returncode != 0:  # stderr only: stdout would hold the secret
        lines = res.stderr.strip().splitlines()
        raise NetlabError(
            f"node {node.name}: making the join token failed (exit code {res.returncode})"
            + (f": {lines[-1]}" if lines else "")
        )
    try:
        token = json.loads(res.stdout)["token_secret"]
    except (ValueError, KeyError, TypeError):
        raise NetlabError(f"node {node.name}: 'controller token create' gave no token") from None
    return str(token)


def _listening(pid: int, port: int) -> bool:
    """Whether a socket listens on `port` in the network namespace of `pid`."""
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A" and fields[1].endswith(f":{port:04X}"):
                return True
    return False


def wait_listening(ctx: DeployContext, node: Node, port: int, timeout: float) -> None:
    """Wait (bounded) until the controller accepts connections, so nodes join at once."""
    rec = next((p for p in reversed(ctx.state.processes) if p.node == node.name), None)
    if rec is None:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _listening(rec.pid, port):
            return
        if not procs.is_alive(rec):
            raise NetlabError(
                f"node {node.name}: the controller exited while starting "
                f"(see {Path(rec.log_dir) / 'stderr.log'})"
            )
        time.sleep(0.05)
    # Not fatal: nodes retry with backoff until the controller answers.


class LispmeshNodeKind(LinuxKind):
    name = NODE
    start_order = 2  # after the controller and the routers

    def start(self, ctx: DeployContext, node: Node) -> None:
        if node.cmd is not None:
            start_cmd(ctx, node)
            return
        token = None
        if not node.startup_config:
            token = ctx.secrets.get(TOKEN_KEY)
            _fresh_dir(ctx, state_dir(ctx.topo, node))
            ctx.state.add_dir(run_dir(ctx.topo))
            run_dir(ctx.topo).mkdir(parents=True, exist_ok=True)
        argv = node_argv(ctx.topo, node, token)
        env = dict(lispmesh_env())
        if token is not None:
            env[TOKEN_ENV] = token
        start_cmd(ctx, node, argv, env)


class LispmeshControllerKind(LinuxKind):
    name = CONTROLLER
    start_order = 0  # before every other node

    def start(self, ctx: DeployContext, node: Node) -> None:
        if node.cmd is not None:
            start_cmd(ctx, node)
            return
        _fresh_dir(ctx, state_dir(ctx.topo, node))
        wiring = plan(ctx.topo)
        if wiring.nodes:
            ctx.secrets[TOKEN_KEY] = make_token(ctx, node, len(wiring.nodes))
        argv = controller_argv(ctx.topo, node)
        start_cmd(ctx, node, argv, dict(lispmesh_env()))
        wait_listening(ctx, node, CONTROLLER_PORT, LISTEN_WAIT)


__all__ = [
    "CONTROLLER_PORT",
    "LispmeshControllerKind",
    "LispmeshNodeKind",
    "Wiring",
    "controller_argv",
    "data_address",
    "data_interfaces",
    "node_argv",
    "plan",
    "token_argv",
]
