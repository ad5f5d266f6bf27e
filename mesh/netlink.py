"""Addresses, routes and link state through netlink (pyroute2), never by shelling out to `ip`.

pyroute2's synchronous API runs its own event loop: call `configure_tun` from a worker thread
when an asyncio loop is running in this one.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

IpAddress = IPv4Address | IPv6Address
IpNetwork = IPv4Network | IPv6Network


TUN_GSO_MAX_SEGS = 64


def configure_tun(
    name: str,
    mtu: int,
    addresses: Iterable[IpAddress],
    routes: Iterable[IpNetwork],
) -> None:
    """Bring the TUN up with the EIDs as host addresses and the overlay prefixes routed into it.

    Routes carry the EID of the same family as preferred source, so the kernel never picks an
    underlay address as the source of overlay traffic.
    """
    addresses = list(addresses)
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=name)[0]
        # The C data path cuts a TSO super-packet into at most 64 segments (MAX_SEGMENTS in
        # mesh/_fastpath.c); a peer MSS below ~1020 would need more from a 64 KB one. Capping
        # the device's GSO segments makes the kernel build super-packets it can carry.
        ipr.link("set", index=index, mtu=mtu, state="up", gso_max_segs=TUN_GSO_MAX_SEGS)
        for address in addresses:
            plen = 32 if address.version == 4 else 128
            # NODAD: a TUN has no neighbours; DAD would only hold the address tentative.
            flags = IFA_F_NODAD if address.version == 6 else 0
            ipr.addr("replace", index=index, address=str(address), prefixlen=plen, flags=flags)
        for route in routes:
            source = next((a for a in addresses if a.version == route.version), None)
            spec: dict[str, object] = {
                "dst": str(route.network_address),
                "dst_len": route.prefixlen,
                "oif": index,
            }
            if source is not None:
                spec["prefsrc"] = str(source)
            if route.version == 6:
                spec["family"] = 10
            ipr.route("replace", **spec)


def remove_from_tun(name: str, addresses: Iterable[IpAddress], routes: Iterable[IpNetwork]) -> None:
    """Take EIDs and overlay routes that the config no longer has off the TUN."""
    with IPRoute() as ipr:
        indexes = ipr.link_lookup(ifname=name)
        if not indexes:
            return
        index = indexes[0]
        for route in routes:
            family = 10 if route.version == 6 else 2
            with contextlib.suppress(Exception):  # already gone: nothing to do
                ipr.route(
                    "del", dst=str(route.network_address), dst_len=route.prefixlen,
                    oif=index, family=family,
                )  # fmt: skip
        for address in addresses:
            plen = 32 if address.version == 4 else 128
            with contextlib.suppress(Exception):  # already gone: nothing to do
                ipr.addr("del", index=index, address=str(address), prefixlen=plen)


SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1
IFF_RUNNING = 0x40  # RFC 2863 operational state: up and with carrier


def link_is_up(name: str) -> bool:
    """True when the interface exists, is up and has carrier.

    One ioctl on a socket of the process's own network namespace: cheap enough for every timer
    tick, and safe inside the asyncio loop (pyroute2's sync API is not).
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            reply = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, struct.pack("16s16x", name.encode()))
    except OSError:
        return False
    flags = struct.unpack_from("16xH", reply)[0]
    return bool(flags & IFF_UP) and bool(flags & IFF_RUNNING)


def interface_of(address: IpAddress) -> str | None:
    """The interface that holds `address`, if any."""
    with IPRoute() as ipr:
        for msg in ipr.get_addr():
            if msg.get("address") == str(address) or msg.get("local") == str(address):
                index = msg["index"]
                links = ipr.get_links(index)
                for link in links:
                    return str(link.get("ifname"))
    return None


# ---------------------------------------------------------------- uplink addresses (mobility)
RTM_GETADDR = 22
NLM_F_REQUEST_DUMP = 0x301
NLMSG_DONE = 3
NLMSG_ERROR = 2
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400
IFA_F_SECONDARY_TEMPORARY = 0x01  # (IPv4: secondary; IPv6: a privacy address)
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
RT_SCOPE_LINK = 253


def interface_addresses(name: str, version: int) -> list[IpAddress]:
    """The usable addresses of interface `name` (global scope, not tentative or deprecated), in
    the kernel's order (an IPv4 primary first). One netlink dump on a socket of our own: safe
    inside the asyncio loop, unlike pyroute2's IPRoute; pyroute2 only parses the messages."""
    from pyroute2.netlink.rtnl.marshal import MarshalRtnl

    try:
        index = socket.if_nametoindex(name)
    except OSError:
        return []
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    found: list[IpAddress] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        header = struct.pack("=LHHLL", 24, RTM_GETADDR, NLM_F_REQUEST_DUMP, 1, 0)
        sock.send(header + struct.pack("=BBBBI", family, 0, 0, 0, 0))
        marshal = MarshalRtnl()
        for _ in range(64):  # a dump is a few datagrams; bounded all the same
            messages = list(marshal.parse(sock.recv(1 << 16)))
            for msg in messages:
                if msg["header"]["type"] in (NLMSG_DONE, NLMSG_ERROR):
                    return found
                if msg["index"] != index or msg["family"] != family:
                    continue
                flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
                if msg["scope"] >= RT_SCOPE_LINK or flags & (IFA_F_TENTATIVE | IFA_F_DEPRECATED):
                    continue
                if version == 6 and flags & IFA_F_SECONDARY_TEMPORARY:
                    continue
                text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
                if text:
                    found.append(IPv4Address(text) if version == 4 else IPv6Address(text))
            if not messages:
                break
    return found


class AddressWatch:
    """Wakes the runtime when an address or a route is added or removed (the kernel's netlink
    multicast; nothing is polled): a DHCP client sets the address first and the default route
    after it, so what is sent between the two is lost and is sent again once the route is
    there. `drain` empties the socket; the caller then reads the addresses it cares about with
    `interface_addresses`."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE
            self.sock.bind((0, groups))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> bool:
        """True if anything arrived (an overrun, ENOBUFS, counts: events were lost)."""
        seen = False
        for _ in range(256):
            try:
                if not self.sock.recv(1 << 16):
                    break
            except BlockingIOError:
                break
            except OSError:
                seen = True  # ENOBUFS: the kernel dropped events; look anyway
                continue
            seen = True
        return seen

    def close(self) -> None:
        self.sock.close()
