"""Kind `router`: a linux node that forwards IPv4 and IPv6; static routes come from `routes`."""

from __future__ import annotations

from netlab.kinds.linux import LinuxKind

FORWARDING = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
}


class RouterKind(LinuxKind):
    name = "router"
    extra_sysctls = FORWARDING
