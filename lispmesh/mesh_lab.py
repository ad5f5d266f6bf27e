"""A controller plus nodes in a netlab lab (examples/demo.clab.yml): the demo and the
controller integration tests share it.

A join token is written into the controller's state dir before the lab starts (the node command
lines need it), then netlab starts the controller and the nodes; each node has nothing but the
controller's address, the token and its own state dir.
"""

from __future__ import annotations

import json
import secrets
import shlex
import sys
from ipaddress import ip_network
from pathlib import Path
from typing import Any

from controller_api.offline import create_token
from lispmesh.waiting import wait_until
from mesh.control import ControlError, query
from netlab import Lab
from netlab import procs as netlab_procs
from netlab.state import LabState
from node.state import StateDir, StateError

REPO_ROOT = Path(__file__).resolve().parents[1]
TOPOLOGY = REPO_ROOT / "examples" / "demo.clab.yml"
CONTROLLER = "controller"
CONTROLLER_ADDRESS = "10.77.0.1"


wait_for = wait_until  # the name the demo and the controller tests use


class MeshLab:
    def __init__(
        self,
        workdir: Path,
        name: str | None = None,
        topology: Path = TOPOLOGY,
        token_uses: int = 10,
        token_ttl: float = 3600.0,
        controller_flags: str = "",
        node_flags: str = "",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir.absolute()
        self.state = self.workdir / "state"
        self.name = name or f"lm{secrets.token_hex(3)}"
        self.token, _ = create_token(
            self.state / CONTROLLER, token_ttl, token_uses, ("lab",), f"lab {self.name}"
        )
        self.env = {
            "LISPMESH": f"{shlex.quote(sys.executable)} -m lispmesh",
            "PYTHONPATH_DIR": str(REPO_ROOT),
            "LAB_STATE": str(self.state),
            "LISPMESH_TOKEN": str(self.token),
            "CONTROLLER_FLAGS": controller_flags,
            "NODE_FLAGS": node_flags,
            **(extra_env or {}),
        }
        self.lab = Lab.from_file(topology, name=self.name, env=self.env, workdir=self.workdir)
        self.nodes = [n.name for n in self.lab.topo.nodes.values() if n.kind == "lispmesh-node"]

    # ------------------------------------------------------------------ lifecycle

    def deploy(self) -> None:
        try:
            self.lab.deploy()
        except BaseException:
            self.lab.destroy()
            raise

    def destroy(self) -> None:
        self.lab.destroy()

    def __enter__(self) -> MeshLab:
        self.deploy()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def _record(self, node: str) -> Any:
        state = LabState.load(self.lab.labdir)
        assert state is not None
        records = [r for r in state.processes if r.node == node]
        return state, records

    def stop_process(self, node: str) -> None:
        """Stop a node's (or the controller's) process, as a power cut would (SIGKILL)."""
        _, records = self._record(node)
        for rec in records:
            if netlab_procs.is_alive(rec):
                netlab_procs.kill_pids([rec.pid])

    def start_process(self, node: str) -> None:
        """Start the node's command again (recorded, so destroy stops it)."""
        state, _ = self._record(node)
        spec = self.lab.topo.nodes[node]
        assert spec.cmd is not None
        rec, _child = netlab_procs.start(
            spec.ns, node, shlex.split(spec.cmd), spec.env, self.lab.labdir / node
        )
        state.add_process(rec)

    def process_alive(self, node: str) -> bool:
        _, records = self._record(node)
        return any(netlab_procs.is_alive(r) for r in records)

    # ------------------------------------------------------------------ observing

    def log(self, node: str) -> str:
        path = self.lab.labdir / node / "stderr.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def enrollment(self, node: str) -> Any:
        try:
            return StateDir(self.state / node).load_enrollment()
        except StateError:
            return None

    def eid(self, node: str, version: int = 4) -> str:
        enrollment = self.enrollment(node)
        assert enrollment is not None, f"{node} has not joined"
        for text in enrollment.eid_prefixes:
            prefix = ip_network(text)
            if prefix.version == version:
                return str(prefix.network_address + 1)
        raise AssertionError(f"{node} has no IPv{version} EID")

    def status(self, node: str) -> dict[str, Any] | None:
        enrollment = self.enrollment(node)
        if enrollment is None:
            return None
        try:
            return query(self.state / "run" / f"{enrollment.name}.sock", "status", timeout=2)
        except ControlError:
            return None

    def ping(self, node: str, address: str, count: int = 1, wait: float = 1.0) -> bool:
        result = self.lab.exec(
            node, ["ping", "-c", str(count), "-i", "0.2", "-W", f"{wait:g}", address],
            timeout=count * wait + 10,
        )  # fmt: skip
        return result.returncode == 0

    def all_pairs_reach(self) -> bool:
        return all(self.ping(a, self.eid(b)) for a in self.nodes for b in self.nodes if a != b)

    def admin(self, *args: str, check: bool = True) -> Any:
        """`lispmesh controller ARGS --json` run in the controller's namespace."""
        argv = [sys.executable, "-m", "lispmesh", "controller", *args,
                "--state-dir", str(self.state / CONTROLLER), "--json"]  # fmt: skip
        result = self.lab.exec(CONTROLLER, argv, timeout=30, env={"PYTHONPATH": str(REPO_ROOT)})
        if check and result.returncode != 0:
            raise RuntimeError(f"lispmesh controller {' '.join(args)}: {result.stderr.strip()}")
        return json.loads(result.stdout) if result.returncode == 0 else result

    def dump(self) -> str:
        parts = []
        for node in [CONTROLLER, *self.nodes]:
            parts.append(f"--- {node} log:\n{self.log(node)[-2500:]}")
        return "\n".join(parts)
