"""What every kind shares: the deploy context it is given and the no-op defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from netlab.model import Node, Topology
from netlab.state import LabState


class DeployContext(Protocol):
    topo: Topology
    state: LabState
    exec_timeout: float

    def node_dir(self, node: Node) -> Path: ...


class Kind:
    name = ""
    has_namespace = True

    def setup(self, ctx: DeployContext, node: Node) -> None:
        """Called once the node's namespace exists, before any link is created."""

    def configure(self, ctx: DeployContext, node: Node) -> None:
        """Called once every link exists."""
