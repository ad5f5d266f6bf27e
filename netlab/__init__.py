"""netlab: containerlab-compatible labs made of Linux network namespaces.

Reads containerlab `*.clab.yml` files unchanged and builds each node as a network namespace
(`clab-<lab>-<node>`), each link as a veth pair, the management network as a bridge in a
namespace of its own, so the host's root namespace is never touched (except `host:` endpoints).

Python API (used by the project's multi-node tests, demo and benchmarks)::

    from netlab import Lab

    lab = Lab.from_file("examples/two-node.clab.yml", name="t-1234",     # unique name for tests
                        overrides={"n1": {"cmd": "sleep 600"}})       # replace node fields
    with lab:                                   # deploy() on enter, destroy() on exit
        lab.exec("n1", ["ping", "-c", "1", "-W", "2", "10.0.12.2"], check=True)
        ns = lab.netns_name("n1")               # "clab-t-1234-n1", for IPRoute(netns=ns)

`lab.deploy()` returns "deployed" or "unchanged" (idempotent); `lab.destroy()` removes every
namespace, veth, bridge and process the deploy created, using the state file in `clab-<lab>/`,
even after a deploy that failed half-way. Errors a user can act on are `NetlabError` (bad
topology files raise its subclass `TopologyError`, whose message names file, line and field).

Command line: `lispmesh lab deploy|destroy|inspect|graph|exec|tools` (see lispmesh/commands/lab.py).
"""

from netlab.errors import NetemUnavailable, NetlabError, TopologyError
from netlab.lab import Lab
from netlab.model import Topology
from netlab.topology import parse_file, parse_text

__all__ = [
    "Lab",
    "NetemUnavailable",
    "NetlabError",
    "Topology",
    "TopologyError",
    "parse_file",
    "parse_text",
]
