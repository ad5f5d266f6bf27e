"""A container's own network namespace, routed to the node over a veth (the Calico pattern).

    node namespace                          workload namespace (/run/netns/<netns>)
    HOST_IF  (no address; fe80::1 for NDP)  eth0: EID/32, EID/128, MTU with encapsulation room
    route EID/32 and EID/128 dev HOST_IF    default via 169.254.1.1 (onlink), via fe80::1

The workload's gateway 169.254.1.1 is a permanent neighbour entry for the host end's MAC, so
nothing on the node has to answer ARP for an address it does not have. Every step is safe to
repeat (define is retried after an agent crash); `detach` removes what `attach` made, absent
parts included. Commands go through iproute2 (`ip -n`), one error line naming the step.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from node.workloads.errors import WorkloadError
from node.workloads.runtime import GATEWAY4, GATEWAY6, Attachment

INSIDE_IF = "eth0"


def _ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        error = result.stderr.strip().splitlines()[-1:] or ["failed"]
        raise WorkloadError(f"network: `{' '.join(cmd)}`: {error[0]}")
    return result.stdout


def netns_path(attachment: Attachment, netns: str) -> Path:
    return Path(attachment.netns_dir) / netns


def attach(attachment: Attachment, netns: str, node_netns: str | None = None) -> None:
    """Make the namespace `netns` and its veth to the node (in `node_netns`, or ours)."""
    host = attachment.host_if
    if len(host) > 15:
        raise WorkloadError(f"network: interface name {host!r} is longer than 15 characters")
    if not netns_path(attachment, netns).exists():
        _ip("netns", "add", netns)
    _ip("link", "del", host, netns=node_netns, check=False)  # a half-made pair from before
    _ip("link", "del", INSIDE_IF, netns=netns, check=False)
    _ip("link", "add", host, "mtu", str(attachment.mtu), "type", "veth", "peer", "name",
        INSIDE_IF, "mtu", str(attachment.mtu), "netns", netns, netns=node_netns)  # fmt: skip
    mac = json.loads(_ip("-j", "link", "show", host, netns=node_netns))[0]["address"]
    _ip("link", "set", host, "up", netns=node_netns)
    _ip("-6", "addr", "add", f"{GATEWAY6}/64", "dev", host, "nodad", netns=node_netns)
    _ip("link", "set", "lo", "up", netns=netns)
    _ip("link", "set", INSIDE_IF, "up", netns=netns)
    gateway = ["dev", INSIDE_IF]
    if attachment.eid4 is not None:
        _ip("addr", "add", f"{attachment.eid4}/32", *gateway, netns=netns)
        _ip("neigh", "replace", str(GATEWAY4), "lladdr", mac, "nud", "permanent", *gateway,
            netns=netns)  # fmt: skip
        _ip("route", "replace", "default", "via", str(GATEWAY4), *gateway, "onlink", netns=netns)
        _ip("route", "replace", f"{attachment.eid4}/32", "dev", host, netns=node_netns)
    if attachment.eid6 is not None:
        _ip("-6", "addr", "add", f"{attachment.eid6}/128", *gateway, "nodad", netns=netns)
        _ip("-6", "route", "replace", "default", "via", str(GATEWAY6), *gateway, netns=netns)
        _ip("-6", "route", "replace", f"{attachment.eid6}/128", "dev", host, netns=node_netns)


def detach(attachment: Attachment, netns: str, node_netns: str | None = None) -> None:
    _ip("link", "del", attachment.host_if, netns=node_netns, check=False)  # routes go with it
    if netns_path(attachment, netns).exists():
        _ip("netns", "del", netns)


def attach_tap(attachment: Attachment, node_netns: str | None = None) -> str:
    """A tap for a VM (qemu opens it by name), routed like a veth; returns its MAC (the guest's
    gateway). The guest sets its own EIDs (domain_xml.kernel_cmdline tells it which)."""
    host = attachment.host_if
    if len(host) > 15:
        raise WorkloadError(f"network: interface name {host!r} is longer than 15 characters")
    _ip("link", "del", host, netns=node_netns, check=False)
    _ip("tuntap", "add", "dev", host, "mode", "tap", netns=node_netns)
    _ip("link", "set", host, "mtu", str(attachment.mtu), "up", netns=node_netns)
    _ip("-6", "addr", "add", f"{GATEWAY6}/64", "dev", host, "nodad", netns=node_netns)
    if attachment.eid4 is not None:
        _ip("route", "replace", f"{attachment.eid4}/32", "dev", host, netns=node_netns)
    if attachment.eid6 is not None:
        _ip("-6", "route", "replace", f"{attachment.eid6}/128", "dev", host, netns=node_netns)
    return str(json.loads(_ip("-j", "link", "show", host, netns=node_netns))[0]["address"])


def detach_tap(attachment: Attachment, node_netns: str | None = None) -> None:
    _ip("link", "del", attachment.host_if, netns=node_netns, check=False)
