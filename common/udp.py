"""The underlay UDP socket of a node or a controller: how every one of them is set up."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address

from common.errors import LispmeshError

IpAddress = IPv4Address | IPv6Address

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
IP_FREEBIND = 15
IPV6_FREEBIND = 78
IP_MTU_DISCOVER = 10
IPV6_MTU_DISCOVER = 23
IP_PMTUDISC_DO = 2
SOCKET_BUFFER = 4 * 1024 * 1024  # several MB, or datagrams drop under load (platform.md)


class UdpSocketError(LispmeshError):
    """A socket could not be opened (one line naming the address)."""


def underlay_socket(address: IpAddress, port: int, device: str | None) -> socket.socket:
    """A non-blocking UDP socket bound to `address`:`port` (pinned to `device` if given), as
    every underlay socket of a node or a controller is set up; UdpSocketError naming it."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # FREEBIND: an uplink that is down at start (no address yet) must not stop the node.
        # DF on every datagram (also GSO segments): the underlay is never fragmented; an MTU
        # problem shows up as an error instead of as fragments.
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IP_PMTUDISC_DO)
        if device:
            # Pin the socket to its uplink: the RLOC picks the interface, not the routing table.
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, device.encode())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        sock.bind((str(address), port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        where = f"{address}:{port}" + (f" on {device}" if device else "")
        raise UdpSocketError(f"cannot open UDP socket {where}: {exc.strerror}") from None
    return sock
