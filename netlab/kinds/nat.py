"""Kind `nat`: a router that masquerades traffic from its inside links out of its outside link.

`nat: {outside: eth1}` names the outside interface; every other interface is inside. Like a home
gateway it also drops new connections coming in from outside (`block-inbound: false` turns that
off), which is what NAT-traversal tests need to be realistic.
"""

from __future__ import annotations

from netlab import netns
from netlab.errors import NetlabError
from netlab.kinds.base import DeployContext
from netlab.kinds.router import FORWARDING, RouterKind
from netlab.model import Node

TABLE = "netlab_nat"


def ruleset(outside: str, block_inbound: bool) -> str:
    forward = ""
    if block_inbound:
        forward = f"""
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{outside}" ct state established,related counter accept
    iifname "{outside}" counter drop
  }}"""
    # `inet` covers IPv4 and IPv6 in one table; the counter lets tests see the rule was used.
    return f"""table inet {TABLE} {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "{outside}" meta nfproto ipv4 counter masquerade
  }}{forward}
}}
"""


class NatKind(RouterKind):
    name = "nat"
    extra_sysctls = FORWARDING

    def rules(self, ctx: DeployContext, node: Node) -> None:
        assert node.nat_outside
        try:
            res = netns.run(
                node.ns,
                ["nft", "-f", "-"],
                input=ruleset(node.nat_outside, node.nat_block_inbound),
                timeout=ctx.exec_timeout,
            )
        except FileNotFoundError:
            raise NetlabError(
                f"node {node.name}: kind nat needs the nft command (apt-get install nftables)"
            ) from None
        if res.returncode != 0:
            raise NetlabError(
                f"node {node.name}: nft rejected the NAT ruleset: "
                f"{res.stderr.strip().splitlines()[-1] if res.stderr else ''}"
            )
