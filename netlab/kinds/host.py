"""Kind `host`: the machine's root namespace. Nothing is created for the node itself; its link
ends (`host:ifname`) are veth ends in the root namespace, without addresses unless the topology
gives some. Its `exec` commands run on the host, as containerlab does."""

from __future__ import annotations

from netlab import links, netns
from netlab.errors import NetlabError
from netlab.kinds.base import DeployContext, Kind
from netlab.kinds.linux import run_exec
from netlab.model import Node


class HostKind(Kind):
    name = "host"
    has_namespace = False

    def configure(self, ctx: DeployContext, node: Node) -> None:
        if node.addresses:
            with netns.ipr(None) as ipr:
                for ifname, cidrs in node.addresses.items():
                    for cidr in cidrs:
                        try:
                            links.add_address(ipr, ifname, cidr)
                        except links.LinkError as exc:
                            raise NetlabError(f"node {node.name}: {exc}") from None
        run_exec(ctx, node)
