"""The lab directory `clab-<lab>/`, written as containerlab writes it: topology-data.json,
ansible-inventory.yml and a hosts file (containerlab edits /etc/hosts; netlab never touches the
host, so the entries go to clab-<lab>/hosts), plus one directory per node for its logs."""

from __future__ import annotations

import json
from typing import Any

import yaml

from netlab.model import HOST, MGMT_NET, Endpoint, Topology


def _split(cidr: str | None) -> tuple[str, int]:
    if not cidr:
        return "", 0
    addr, plen = cidr.split("/")
    return addr, int(plen)


def topology_data(topo: Topology) -> dict[str, Any]:
    nodes: dict[str, Any] = {}
    for i, n in enumerate(topo.nodes.values()):
        v4, p4 = _split(n.mgmt_ipv4)
        v6, p6 = _split(n.mgmt_ipv6)
        nodes[n.name] = {
            "index": str(i),
            "shortname": n.name,
            "longname": n.ns or n.name,
            "fqdn": f"{n.name}.{topo.name}.io",
            "group": n.group,
            "labdir": str(topo.labdir / n.name),
            "kind": n.kind,
            "image": n.image,
            "mgmt-net": topo.mgmt.network if n.has_mgmt else "",
            "mgmt-intf": "eth0" if n.has_mgmt else "",
            "mgmt-ipv4-address": v4,
            "mgmt-ipv4-prefix-length": p4,
            "mgmt-ipv6-address": v6,
            "mgmt-ipv6-prefix-length": p6,
            "mac-address": "",
            "labels": labels(topo, n.name),
            "netns": n.ns or "",  # netlab: where the node lives (`ip netns exec <netns> ...`)
        }

    def ep(e: Endpoint, peer: Endpoint) -> dict[str, Any]:
        return {
            "node": e.node,
            "interface": e.iface,
            "ifname": e.ifname,
            "mac": e.mac or "",
            "peer": peer.node,
            "netns": topo.ns_of(e.node) or "",
        }

    return {
        "name": topo.name,
        "type": "clab",
        "clab": {
            "config": {
                "prefix": topo.prefix,
                "mgmt": {
                    "network": topo.mgmt.network,
                    "bridge": topo.mgmt.bridge,
                    "ipv4-subnet": topo.mgmt.ipv4_subnet or "",
                    "ipv6-subnet": topo.mgmt.ipv6_subnet or "",
                    "netns": topo.mgmt_ns if topo.needs_mgmt_ns else "",
                },
                "config-path": str(topo.path.parent),
            }
        },
        "ssh-pub-keys": [],
        "nodes": nodes,
        "links": [{"endpoints": {"a": ep(lk.a, lk.z), "z": ep(lk.z, lk.a)}} for lk in topo.links],
    }


def labels(topo: Topology, node: str) -> dict[str, str]:
    """A node's labels plus the ones containerlab sets on every container."""
    n = topo.nodes[node]
    return {
        "clab-node-name": n.name,
        "clab-node-longname": n.ns or n.name,
        "clab-node-kind": n.kind,
        "clab-node-group": n.group,
        "clab-node-lab-dir": str(topo.labdir / n.name),
        "clab-topo-file": str(topo.path),
        "containerlab": topo.name,
        **n.labels,
    }


def ansible_inventory(topo: Topology) -> dict[str, Any]:
    children: dict[str, Any] = {}
    for n in topo.nodes.values():
        if not n.has_mgmt:
            continue
        hosts = children.setdefault(n.kind, {"hosts": {}})["hosts"]
        hosts[n.ns] = {"ansible_host": _split(n.mgmt_ipv4)[0] or _split(n.mgmt_ipv6)[0]}
    return {"all": {"vars": {"ansible_httpapi_use_proxy": False}, "children": children}}


def hosts_file(topo: Topology) -> str:
    lines = [f"###### CLAB-{topo.name}-START ######"]
    for n in topo.nodes.values():
        for cidr in (n.mgmt_ipv4, n.mgmt_ipv6):
            if cidr:
                lines.append(f"{_split(cidr)[0]}\t{n.ns}")
    lines.append(f"###### CLAB-{topo.name}-END ######")
    return "\n".join(lines) + "\n"


def write_all(topo: Topology) -> None:
    d = topo.labdir
    d.mkdir(parents=True, exist_ok=True)
    for n in topo.nodes.values():
        (d / n.name).mkdir(exist_ok=True)
    (d / "topology-data.json").write_text(json.dumps(topology_data(topo), indent=2) + "\n")
    (d / "ansible-inventory.yml").write_text(
        yaml.safe_dump(ansible_inventory(topo), sort_keys=False)
    )
    (d / "hosts").write_text(hosts_file(topo))


__all__ = ["HOST", "MGMT_NET", "ansible_inventory", "hosts_file", "topology_data", "write_all"]
