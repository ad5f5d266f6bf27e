"""Kind `nat`: a router that translates traffic from its inside links out of its outside link.

`nat: {outside: eth1, profile: ..., udp-timeout: S}` names the outside interface (every other
interface is inside) and the NAT's behaviour in the terms of RFC 4787 (mapping / filtering of UDP):

| profile              | mapping                | filtering              | built with             |
|----------------------|------------------------|------------------------|------------------------|
| `full-cone`          | endpoint-independent   | endpoint-independent   | masquerade + DNAT map  |
| `address-restricted` | endpoint-independent   | address-dependent      | same, DNAT from peers  |
| `port-restricted`    | endpoint-independent   | address+port-dependent | masquerade             |
| `symmetric`          | address+port-dependent | address+port-dependent | masquerade fully-random|

Linux conntrack alone gives port-restricted: masquerade keeps the source port when it can (so
one inside socket has one outside port whoever it talks to) and only replies from the exact peer
match the connection. The two cone profiles add what conntrack lacks: every outbound UDP packet
records `outside port -> inside address:port` in a dynamic map (after SNAT, so the key is the
translated port), and new inbound UDP to a recorded port is DNATed to its inside owner (from
anyone for full-cone; for address-restricted only from an address that mapping has sent to).
Mappings are refreshed by outbound packets only (RFC 4787 REQ-6 allows that).

`udp-timeout` (seconds) lowers the NAT's memory of idle UDP mappings (both conntrack UDP
timeouts and the cone maps), so a keepalive interval that is too long fails a lab test instead of
working by luck. Like a home gateway the NAT drops other new connections coming in from outside
(`block-inbound: false` turns that off). Only IPv4 is translated.
"""

from __future__ import annotations

from netlab import netns
from netlab.errors import NetlabError
from netlab.kinds.base import DeployContext
from netlab.kinds.router import FORWARDING, RouterKind
from netlab.model import DEFAULT_NAT_PROFILE, NAT_PROFILES, Node

TABLE = "netlab_nat"
# What a cone map keeps when `udp-timeout` is not given: the kernel's default for a UDP flow that
# saw replies (nf_conntrack_udp_timeout_stream), so the map never forgets before conntrack does.
DEFAULT_MAP_TIMEOUT = 120
CONE = ("full-cone", "address-restricted")


def conntrack_sysctls(udp_timeout: int | None) -> dict[str, str]:
    """The per-namespace conntrack sysctls for a NAT's UDP timeout (none when not lowered)."""
    if udp_timeout is None:
        return {}
    return {
        "net.netfilter.nf_conntrack_udp_timeout": str(udp_timeout),
        "net.netfilter.nf_conntrack_udp_timeout_stream": str(udp_timeout),
    }


def ruleset(
    outside: str,
    block_inbound: bool,
    profile: str = DEFAULT_NAT_PROFILE,
    udp_timeout: int | None = None,
) -> str:
    """The nftables ruleset of a NAT gateway (one `inet` table; counters let tests see use)."""
    if profile not in NAT_PROFILES:
        raise ValueError(f"unknown NAT profile {profile!r}")
    out = f'oifname "{outside}" meta nfproto ipv4'
    inb = f'iifname "{outside}" meta nfproto ipv4'
    random = " fully-random" if profile == "symmetric" else ""
    parts = []
    if profile in CONE:
        timeout = udp_timeout or DEFAULT_MAP_TIMEOUT
        parts.append(f"""
  map udp_mapping {{
    type inet_service : ipv4_addr . inet_service
    flags dynamic, timeout
    timeout {timeout}s
  }}""")
        if profile == "address-restricted":
            parts.append(f"""
  set udp_peers {{
    type ipv4_addr . inet_service
    flags dynamic, timeout
    timeout {timeout}s
  }}""")
    parts.append(f"""
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    {out} counter masquerade{random}
  }}""")
    if profile in CONE:
        # After SNAT (priority srcnat + 1): `udp sport` is the translated port here.
        peers = ""
        if profile == "address-restricted":
            peers = f"\n    {out} meta l4proto udp update @udp_peers {{ ip daddr . udp sport }}"
        only_peers = " ip saddr . udp dport @udp_peers" if profile == "address-restricted" else ""
        parts.append(f"""
  chain mapping {{
    type filter hook postrouting priority srcnat + 1; policy accept;
    {out} meta l4proto udp update @udp_mapping {{ udp sport : ct original ip saddr . ct original proto-src }}{peers}
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    {inb} meta l4proto udp{only_peers} counter dnat ip to udp dport map @udp_mapping
  }}""")  # noqa: E501
    if block_inbound:
        # Replies pass; so do new flows a cone profile chose to DNAT to an inside owner.
        dnat = f'\n    iifname "{outside}" ct status dnat counter accept' if profile in CONE else ""
        parts.append(f"""
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{outside}" ct state established,related counter accept{dnat}
    iifname "{outside}" counter drop
  }}""")
    return f"table inet {TABLE} {{{''.join(parts)}\n}}\n"


class NatKind(RouterKind):
    name = "nat"
    extra_sysctls = FORWARDING

    def rules(self, ctx: DeployContext, node: Node) -> None:
        assert node.nat_outside and node.ns
        rules = ruleset(
            node.nat_outside, node.nat_block_inbound, node.nat_profile, node.nat_udp_timeout
        )
        try:
            res = netns.run(node.ns, ["nft", "-f", "-"], input=rules, timeout=ctx.exec_timeout)
        except FileNotFoundError:
            raise NetlabError(
                f"node {node.name}: kind nat needs the nft command (apt-get install nftables)"
            ) from None
        if res.returncode != 0:
            raise NetlabError(
                f"node {node.name}: nft rejected the NAT ruleset: "
                f"{res.stderr.strip().splitlines()[-1] if res.stderr else ''}"
            )
        # The conntrack sysctls exist once the ruleset has loaded nf_conntrack.
        try:
            netns.write_sysctls(node.ns, conntrack_sysctls(node.nat_udp_timeout))
        except OSError as exc:
            raise NetlabError(f"node {node.name}: NAT udp-timeout: {exc}") from None
