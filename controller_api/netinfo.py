"""The host's own interfaces and addresses (netlink), for the controller's advertised address
and the node's uplinks (RLOCs are local facts, never configured by the controller)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from pyroute2 import IPRoute

RT_SCOPE_UNIVERSE = 0


@dataclass(frozen=True)
class LocalAddress:
    interface: str
    address: IPv4Address | IPv6Address
    up: bool


def global_addresses() -> list[LocalAddress]:
    """Every global-scope address of an interface other than lo, in interface order."""
    out: list[LocalAddress] = []
    with IPRoute() as ipr:
        links = {link["index"]: link for link in ipr.get_links()}
        for msg in ipr.get_addr():
            if msg["scope"] != RT_SCOPE_UNIVERSE:
                continue
            link = links.get(msg["index"])
            if link is None:
                continue
            name = link.get_attr("IFLA_IFNAME")
            if name == "lo":
                continue
            text = msg.get_attr("IFA_ADDRESS")
            if text is None:
                continue
            address = ip_address(text)
            if address.is_loopback or address.is_link_local:
                continue
            up = bool(link["flags"] & 1) and link.get_attr("IFLA_OPERSTATE") != "DOWN"
            out.append(LocalAddress(name, address, up))
    out.sort(key=lambda a: (a.address.version, a.interface))
    return out


def default_advertise() -> str:
    """The first global IPv4 address here (else IPv6, else the host name)."""
    addresses = global_addresses()
    return str(addresses[0].address) if addresses else socket.gethostname()
