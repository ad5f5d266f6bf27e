"""Kernel operations on interfaces via rtnetlink (pyroute2): veths, bridges, addresses, routes.

Both ends of a veth are created directly in their namespaces (IFLA_NET_NS_FD on the link and on
its peer), so node-to-node links never appear in the root namespace, not even for a moment, and
two labs can both have an `eth1` without clashing.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netlab import netns
from netlab.model import Route

IFA_F_NODAD = 0x02  # addresses are usable at once: no 1-2 s of IPv6 duplicate detection


class LinkError(Exception):
    pass


def _index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LinkError(f"no interface {ifname}")
    return int(found[0])


def exists(ipr: IPRoute, ifname: str) -> bool:
    return bool(ipr.link_lookup(ifname=ifname))


def add_veth(
    a_ns: str | None,
    a_name: str,
    z_ns: str | None,
    z_name: str,
    *,
    mtu: int | None = None,
    a_mac: str | None = None,
    z_mac: str | None = None,
) -> None:
    """Create a veth pair with each end placed in its namespace (None: the root namespace)."""
    fds: list[int] = []
    try:
        spec: dict[str, Any] = {"ifname": a_name, "kind": "veth"}
        peer: dict[str, Any] = {"ifname": z_name}
        for ns, d in ((a_ns, spec), (z_ns, peer)):
            if ns is not None:
                fd = os.open(netns.path(ns), os.O_RDONLY)
                fds.append(fd)
                d["net_ns_fd"] = fd
        if mtu:
            spec["mtu"] = peer["mtu"] = mtu
        if a_mac:
            spec["address"] = a_mac
        if z_mac:
            peer["address"] = z_mac
        spec["peer"] = peer
        with IPRoute() as ipr:
            try:
                ipr.link("add", **spec)
            except NetlinkError as exc:
                raise LinkError(
                    f"cannot create veth {a_ns or 'host'}:{a_name} <-> {z_ns or 'host'}:{z_name}: "
                    f"{exc.args[1] if len(exc.args) > 1 else exc}"
                ) from None
    finally:
        for fd in fds:
            os.close(fd)


def set_up(ipr: IPRoute, ifname: str) -> None:
    ipr.link("set", index=_index(ipr, ifname), state="up")


def set_state(ipr: IPRoute, ifname: str, up: bool) -> None:
    ipr.link("set", index=_index(ipr, ifname), state="up" if up else "down")


def add_bridge(ipr: IPRoute, name: str) -> None:
    ipr.link("add", ifname=name, kind="bridge")
    set_up(ipr, name)


def enslave(ipr: IPRoute, ifname: str, bridge: str) -> None:
    ipr.link("set", index=_index(ipr, ifname), master=_index(ipr, bridge))


def add_address(ipr: IPRoute, ifname: str, cidr: str) -> None:
    iface = ipaddress.ip_interface(cidr)
    try:
        ipr.addr(
            "add",
            index=_index(ipr, ifname),
            address=str(iface.ip),
            prefixlen=iface.network.prefixlen,
            flags=IFA_F_NODAD,
        )
    except NetlinkError as exc:
        if exc.code != 17:  # EEXIST: already there, e.g. given twice
            raise LinkError(f"cannot add {cidr} to {ifname}: {exc}") from None


def add_route(ipr: IPRoute, route: Route) -> None:
    spec: dict[str, Any] = {}
    if route.dst == "default":
        fam = 6 if route.via and ":" in route.via else 4
        spec["dst"] = "::/0" if fam == 6 else "0.0.0.0/0"
    else:
        spec["dst"] = route.dst
        fam = ipaddress.ip_network(route.dst).version
    spec["family"] = 10 if fam == 6 else 2
    if route.via:
        spec["gateway"] = route.via
    if route.dev:
        spec["oif"] = _index(ipr, route.dev)
    if route.metric is not None:
        spec["priority"] = route.metric
    try:
        ipr.route("replace", **spec)
    except NetlinkError as exc:
        text = (
            f"{route.dst}"
            + (f" via {route.via}" if route.via else "")
            + (f" dev {route.dev}" if route.dev else "")
        )
        raise LinkError(
            f"cannot add route {text}: {exc.args[1] if len(exc.args) > 1 else exc}"
        ) from None


def delete(ipr: IPRoute, ifname: str) -> bool:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        return False
    try:
        ipr.link("del", index=found[0])
    except NetlinkError as exc:
        if exc.code != 19:  # ENODEV: gone meanwhile (its peer's namespace was freed)
            raise
    return True


def info(ipr: IPRoute) -> list[dict[str, Any]]:
    """Interfaces of a namespace: name, state, mtu, mac, addresses, master."""
    names = {}
    out = []
    links = list(ipr.get_links())
    for lk in links:
        names[lk["index"]] = lk.get_attr("IFLA_IFNAME")
    addrs: dict[int, list[str]] = {}
    for a in ipr.get_addr():
        addrs.setdefault(a["index"], []).append(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
    for lk in links:
        master = lk.get_attr("IFLA_MASTER")
        out.append(
            {
                "ifname": lk.get_attr("IFLA_IFNAME"),
                "state": lk.get_attr("IFLA_OPERSTATE"),
                "up": bool(lk["flags"] & 1),
                "mtu": lk.get_attr("IFLA_MTU"),
                "mac": lk.get_attr("IFLA_ADDRESS"),
                "addresses": addrs.get(lk["index"], []),
                "master": names.get(master) if master else None,
            }
        )
    return out
