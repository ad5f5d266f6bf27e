"""`Lab`: the Python face of netlab, used by tests, the demo and benchmarks."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from netlab import destroy, netns, state, topology
from netlab.deploy import Deployer, Progress
from netlab.errors import NetlabError
from netlab.model import Topology


class Lab:
    """A lab built from a topology file. See the `netlab` package docstring for an example."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        name: str | None = None,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | Path | None = None,
    ) -> Lab:
        """Parse `path`; `name` replaces the lab name, `overrides` replaces node fields and
        `workdir` is where the lab directory goes (default: beside the file, like containerlab).
        """
        topo = topology.parse_file(path, name=name, overrides=overrides, env=env)
        if workdir is not None:
            topo.workdir = Path(workdir).absolute()
        return cls(topo)

    @classmethod
    def from_text(
        cls,
        text: str,
        path: str | Path,
        *,
        name: str | None = None,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        workdir: str | Path | None = None,
    ) -> Lab:
        """Parse topology text as if it were the file `path` (its lab dir goes next to it)."""
        topo = topology.parse_text(text, path, name=name, overrides=overrides)
        if workdir is not None:
            topo.workdir = Path(workdir).absolute()
        return cls(topo)

    @property
    def name(self) -> str:
        return self.topo.name

    @property
    def labdir(self) -> Path:
        return self.topo.labdir

    def netns_name(self, node: str) -> str:
        """The namespace of `node` (for `ip netns exec`, pyroute2's `IPRoute(netns=...)`)."""
        try:
            ns = self.topo.nodes[node].ns
        except KeyError:
            raise NetlabError(f"lab '{self.name}' has no node '{node}'") from None
        if ns is None:
            raise NetlabError(f"node '{node}' is the host: it has no namespace")
        return ns

    def deploy(
        self,
        *,
        reconfigure: bool = False,
        max_workers: int | None = None,
        exec_timeout: float = 30.0,
        progress: Progress | None = None,
    ) -> str:
        """Build the lab; returns "deployed" or "unchanged" (already up, same topology)."""
        return Deployer(
            self.topo, max_workers=max_workers, exec_timeout=exec_timeout, progress=progress
        ).deploy(reconfigure=reconfigure)

    def destroy(self, cleanup: bool = False) -> bool:
        """Remove everything deploy created; False if nothing was deployed."""
        return destroy.destroy_topology(self.topo, cleanup=cleanup)

    def is_deployed(self) -> bool:
        st = state.LabState.load(self.labdir)
        return st is not None and st.status == "deployed" and destroy.is_intact(st)

    def exec(
        self,
        node: str,
        argv: Sequence[str] | str,
        *,
        timeout: float = 30.0,
        check: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in a node's namespace (a string is run by `sh -c`), capturing text."""
        cmd = ["sh", "-c", argv] if isinstance(argv, str) else list(argv)
        res = netns.run(self.netns_name(node), cmd, timeout=timeout, env=env)
        if check and res.returncode != 0:
            raise subprocess.CalledProcessError(res.returncode, cmd, res.stdout, res.stderr)
        return res

    def popen(self, node: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a command in a node's namespace; the caller owns (and must stop) it."""
        return subprocess.Popen(netns.ns_argv(self.netns_name(node), argv), **kwargs)

    def __enter__(self) -> Lab:
        self.deploy()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.destroy()
