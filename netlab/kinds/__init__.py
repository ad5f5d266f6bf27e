"""Node kinds: one module per kind, each a `Kind` with `setup` (namespace just created, before
links) and `configure` (after links: addresses, routes, rules, exec, processes)."""

from __future__ import annotations

from netlab.kinds.base import DeployContext, Kind
from netlab.kinds.bridge import BridgeKind
from netlab.kinds.host import HostKind
from netlab.kinds.linux import LinuxKind
from netlab.kinds.lispmesh import LispmeshControllerKind, LispmeshNodeKind
from netlab.kinds.nat import NatKind
from netlab.kinds.router import RouterKind

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        LinuxKind(),
        BridgeKind(),
        HostKind(),
        RouterKind(),
        NatKind(),
        LispmeshNodeKind(),
        LispmeshControllerKind(),
    )
}

__all__ = ["KINDS", "DeployContext", "Kind"]
