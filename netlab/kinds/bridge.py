"""Kind `bridge`: a Linux bridge. containerlab's bridge lives in the host; netlab puts it in a
namespace of its own (`clab-<lab>-<name>`) so the host stays untouched. The bridge device is named
after the node; link endpoints on the node become its ports (enslaved by deploy)."""

from __future__ import annotations

from netlab import links, naming, netns
from netlab.kinds.base import DeployContext, Kind
from netlab.model import Node


def bridge_ifname(node: Node) -> str:
    return naming.shorten_ifname(node.name)


class BridgeKind(Kind):
    name = "bridge"

    def setup(self, ctx: DeployContext, node: Node) -> None:
        with netns.ipr(node.ns) as ipr:
            links.set_up(ipr, "lo")
            links.add_bridge(ipr, bridge_ifname(node))
