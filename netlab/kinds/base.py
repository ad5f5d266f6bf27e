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
    # Values one node's configure hands to a later one (a join token): memory only, never saved.
    secrets: dict[str, str]

    def node_dir(self, node: Node) -> Path: ...


class Kind:
    name = ""
    has_namespace = True
    # Configure phase: nodes of a lower order are configured (and started) before higher ones.
    start_order = 1

    def setup(self, ctx: DeployContext, node: Node) -> None:
        """Called once the node's namespace exists, before any link is created."""

    def configure(self, ctx: DeployContext, node: Node) -> None:
        """Called once every link exists."""
