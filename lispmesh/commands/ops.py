"""The everyday verbs: `lispmesh status`, `topology`, `ping`, `trace`, `map-cache`, `netcheck`.

`topology` asks the controller (its Admin API, with the admin certificate from the controller's
state dir); the others ask the local node over its control socket. Every command has `--json`;
exit codes: 0 ok, 1 error or failed check (ping: no reply at all), 2 usage. An unreachable node
or controller is one line, never a traceback. `lispmesh node status` and
`lispmesh controller topology` are the older spellings of `status` and `topology`: the same verbs
(`add_status`, `add_topology`), flags and output.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lispmesh.commands.options import (
    Subparsers,
    add_controller_target,
    add_json,
    add_node_target,
    add_timeout,
)
from lispmesh.commands.output import console, print_json, write_text
from lispmesh.commands.rpc import ask_controller, ask_node

# ------------------------------------------------------------------------ the local node


def _status(args: argparse.Namespace) -> int:
    from lispmesh.views import node as view

    doc = ask_node(args, "status")
    if args.json:
        print_json(doc)
    else:
        view.status(doc, console())
    return 0


def _map_cache(args: argparse.Namespace) -> int:
    from lispmesh.views import node as view

    doc = ask_node(args, "map-cache")
    if args.json:
        print_json(doc)
    else:
        view.map_cache(doc["map_cache"], console())
    return 0


def _ping(args: argparse.Namespace) -> int:
    from lispmesh.views import node as view

    budget = 2 * args.timeout + args.count * (args.timeout + args.interval) + 5
    doc = ask_node(args, "ping", budget, eid=args.eid, count=args.count, wait=args.timeout,
                   interval=args.interval)  # fmt: skip
    if args.json:
        print_json(doc)
    else:
        view.ping(doc, console())
    if not doc["replies"]:
        if not args.json:
            print(f"lispmesh: error: no reply from {args.eid}", file=sys.stderr)
        return 1
    return 0


def _trace(args: argparse.Namespace) -> int:
    from lispmesh.views import node as view

    doc = ask_node(args, "trace", 4 * args.timeout + 5, eid=args.eid, wait=args.timeout)
    if args.json:
        print_json(doc)
    else:
        view.trace(doc, console())
    return 0 if doc["reached"] else 1


def _netcheck(args: argparse.Namespace) -> int:
    from lispmesh.views import node as view

    doc = ask_node(args, "netcheck", 2 * args.timeout + 5, wait=args.timeout)
    if args.json:
        print_json(doc)
    else:
        view.netcheck(doc, console())
    return 0 if doc["ok"] else 1


# ------------------------------------------------------------------------ the controller


def _fetch_topology(args: argparse.Namespace) -> dict[str, Any]:
    from controller_api.gen.lispmesh.v1 import admin_pb2
    from lispmesh.topology_model import document

    return document(ask_controller(args, "GetTopology", admin_pb2.GetTopologyRequest()))


def _topology(args: argparse.Namespace) -> int:
    from lispmesh.views import graph
    from lispmesh.views import topology as view

    render = view.tree if args.tree else view.table
    if args.watch:
        from lispmesh.views.watch import watch

        _fetch_topology(args)  # an unreachable controller is one line before the view starts
        watch(lambda: _fetch_topology(args), render, args.interval, args.iterations, console())
        return 0
    doc = _fetch_topology(args)
    if args.svg:
        write_text(args.svg, graph.to_svg(doc))
    if args.html:
        write_text(args.html, graph.to_html(doc))
    if args.json:
        print_json(doc)
    elif args.dot:
        write_text(args.output, graph.to_dot(doc))
    elif args.mermaid:
        write_text(args.output, graph.to_mermaid(doc))
    elif not (args.svg or args.html):
        console().print(render(doc))
    return 0


# ------------------------------------------------------------------------ wiring


def add_status(subparsers: Subparsers, name: str, help_text: str) -> None:
    """The `status` verb (also registered as `node status`)."""
    status = subparsers.add_parser(name, help=help_text)
    add_node_target(status)
    status.set_defaults(handler=_status)


def add_topology(subparsers: Subparsers, name: str, help_text: str) -> None:
    """The `topology` verb (also registered as `controller topology`)."""
    topology = subparsers.add_parser(name, help=help_text)
    form = topology.add_mutually_exclusive_group()
    form.add_argument("--tree", action="store_true", help="a tree instead of tables")
    add_json(form)
    form.add_argument("--dot", action="store_true", help="Graphviz DOT")
    form.add_argument("--mermaid", action="store_true", help="a mermaid graph")
    form.add_argument("--watch", action="store_true", help="a live view, refreshed in place")
    topology.add_argument("-o", "--output", help="write --dot/--mermaid to FILE")
    topology.add_argument("--svg", metavar="FILE", help="draw it as SVG (Graphviz)")
    topology.add_argument("--html", metavar="FILE", help="an HTML page with the SVG drawing")
    topology.add_argument("--interval", type=float, default=1.0, help="--watch period (1 s)")
    topology.add_argument("--iterations", type=int, help=argparse.SUPPRESS)
    add_controller_target(topology, json=False)
    topology.set_defaults(handler=_topology)


def register(subparsers: Subparsers) -> None:
    add_status(
        subparsers, "status", "this node: identity, EIDs, uplinks, controller, map-servers, peers"
    )
    add_topology(
        subparsers,
        "topology",
        "the whole mesh from the controller: nodes, uplinks, encrypted paths",
    )

    ping = subparsers.add_parser(
        "ping", help="RLOC-probe an EID's node: which RLOC and path answered, and the RTT"
    )
    ping.add_argument("eid", help="an EID address (IPv4 or IPv6)")
    ping.add_argument("-c", "--count", type=int, default=3, help="probes per RLOC (3)")
    ping.add_argument("-i", "--interval", type=float, default=0.2, help="between rounds (0.2 s)")
    add_timeout(ping, 1.0)
    add_node_target(ping)
    ping.set_defaults(handler=_ping)

    trace = subparsers.add_parser(
        "trace", help="the hops to an EID: ITR, map-resolver, relays, ETR, with RLOCs and times"
    )
    trace.add_argument("eid", help="an EID address (IPv4 or IPv6)")
    add_timeout(trace, 1.0)
    add_node_target(trace)
    trace.set_defaults(handler=_trace)

    cache = subparsers.add_parser("map-cache", help="this node's map-cache: TTLs, RLOC states")
    add_node_target(cache)
    cache.set_defaults(handler=_map_cache)

    netcheck = subparsers.add_parser(
        "netcheck", help="uplinks, NAT, and whether the controller and map-servers answer"
    )
    add_timeout(netcheck, 2.0)
    add_node_target(netcheck)
    netcheck.set_defaults(handler=_netcheck)
