"""The everyday verbs: `lispmesh status`, `topology`, `ping`, `trace`, `map-cache`, `netcheck`.

`topology` asks the controller (its Admin API, with the admin certificate from the controller's
state dir); the others ask the local node over its control socket. Every command has `--json`;
exit codes: 0 ok, 1 error or failed check (ping: no reply at all), 2 usage. An unreachable node
or controller is one line, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from lispmesh.errors import CliError


def _console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 160)


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True, default=str))


# ------------------------------------------------------------------------ the local node


def _ask(args: argparse.Namespace, command: str, timeout: float = 5.0, **fields: Any) -> Any:
    from mesh.control import ControlError, query
    from node.cli import control_socket_path

    try:
        return query(control_socket_path(args), command, timeout=timeout, **fields)
    except ControlError as exc:
        raise CliError(str(exc)) from None


def _status(args: argparse.Namespace) -> int:
    from lispmesh import render_node

    doc = _ask(args, "status")
    if args.json:
        _print_json(doc)
    else:
        render_node.status(doc, _console())
    return 0


def _map_cache(args: argparse.Namespace) -> int:
    from lispmesh import render_node

    doc = _ask(args, "map-cache")
    if args.json:
        _print_json(doc)
    else:
        render_node.map_cache(doc["map_cache"], _console())
    return 0


def _ping(args: argparse.Namespace) -> int:
    from lispmesh import render_node

    budget = 2 * args.timeout + args.count * (args.timeout + args.interval) + 5
    doc = _ask(args, "ping", budget, eid=args.eid, count=args.count, wait=args.timeout,
               interval=args.interval)  # fmt: skip
    if args.json:
        _print_json(doc)
    else:
        render_node.ping(doc, _console())
    if not doc["replies"]:
        if not args.json:
            print(f"lispmesh: error: no reply from {args.eid}", file=sys.stderr)
        return 1
    return 0


def _trace(args: argparse.Namespace) -> int:
    from lispmesh import render_node

    doc = _ask(args, "trace", 4 * args.timeout + 5, eid=args.eid, wait=args.timeout)
    if args.json:
        _print_json(doc)
    else:
        render_node.trace(doc, _console())
    return 0 if doc["reached"] else 1


def _netcheck(args: argparse.Namespace) -> int:
    from lispmesh import render_node

    doc = _ask(args, "netcheck", 2 * args.timeout + 5, wait=args.timeout)
    if args.json:
        _print_json(doc)
    else:
        render_node.netcheck(doc, _console())
    return 0 if doc["ok"] else 1


# ------------------------------------------------------------------------ the controller


def _fetch_topology(args: argparse.Namespace) -> dict[str, Any]:
    from controller_api.admin_client import AdminError, call, resolve_target
    from controller_api.gen.lispmesh.v1 import admin_pb2
    from lispmesh.topology_model import document

    try:
        target = resolve_target(
            Path(args.state_dir), args.controller, args.admin_cert, args.admin_key, args.ca_cert
        )
        reply = call(target, lambda stub: stub.GetTopology, admin_pb2.GetTopologyRequest())
    except AdminError as exc:
        raise CliError(str(exc)) from None
    return document(reply)


def _write(path: str | None, text: str) -> None:
    if path is None or path == "-":
        sys.stdout.write(text)
        return
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


def _topology(args: argparse.Namespace) -> int:
    from lispmesh import render_graph, render_topology

    render = render_topology.tree if args.tree else render_topology.table
    if args.watch:
        from lispmesh.topology_watch import watch

        _fetch_topology(args)  # an unreachable controller is one line before the view starts
        watch(lambda: _fetch_topology(args), render, args.interval, args.iterations, _console())
        return 0
    doc = _fetch_topology(args)
    if args.svg:
        _write(args.svg, render_graph.to_svg(doc))
    if args.html:
        _write(args.html, render_graph.to_html(doc))
    if args.json:
        _print_json(doc)
    elif args.dot:
        _write(args.output, render_graph.to_dot(doc))
    elif args.mermaid:
        _write(args.output, render_graph.to_mermaid(doc))
    elif not (args.svg or args.html):
        _console().print(render(doc))
    return 0


# ------------------------------------------------------------------------ wiring


def _node_options(parser: argparse.ArgumentParser) -> None:
    from node.cli import add_target_options

    add_target_options(parser)


def _timeout(parser: argparse.ArgumentParser, default: float) -> None:
    parser.add_argument(
        "--timeout", type=float, default=default, help=f"seconds to wait per answer ({default:g})"
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from controller_api.settings import DEFAULT_STATE_DIR

    status = subparsers.add_parser(
        "status", help="this node: identity, EIDs, uplinks, controller, map-servers, peers"
    )
    _node_options(status)
    status.set_defaults(handler=_status)

    topology = subparsers.add_parser(
        "topology", help="the whole mesh from the controller: nodes, uplinks, encrypted paths"
    )
    form = topology.add_mutually_exclusive_group()
    form.add_argument("--tree", action="store_true", help="a tree instead of tables")
    form.add_argument("--json", action="store_true", help="print JSON for scripts")
    form.add_argument("--dot", action="store_true", help="Graphviz DOT")
    form.add_argument("--mermaid", action="store_true", help="a mermaid graph")
    form.add_argument("--watch", action="store_true", help="a live view, refreshed in place")
    topology.add_argument("-o", "--output", help="write --dot/--mermaid to FILE")
    topology.add_argument("--svg", metavar="FILE", help="draw it as SVG (Graphviz)")
    topology.add_argument("--html", metavar="FILE", help="an HTML page with the SVG drawing")
    topology.add_argument("--interval", type=float, default=1.0, help="--watch period (1 s)")
    topology.add_argument("--iterations", type=int, help=argparse.SUPPRESS)
    topology.add_argument("--controller", help="the API address HOST:PORT")
    topology.add_argument(
        "--state-dir", default=str(DEFAULT_STATE_DIR), help="the controller's state dir"
    )
    topology.add_argument("--admin-cert", help="admin certificate (default: STATE_DIR/admin.crt)")
    topology.add_argument("--admin-key", help="admin key (default: STATE_DIR/admin.key)")
    topology.add_argument("--ca-cert", help="controller CA (default: STATE_DIR/ca.crt)")
    topology.set_defaults(handler=_topology)

    ping = subparsers.add_parser(
        "ping", help="RLOC-probe an EID's node: which RLOC and path answered, and the RTT"
    )
    ping.add_argument("eid", help="an EID address (IPv4 or IPv6)")
    ping.add_argument("-c", "--count", type=int, default=3, help="probes per RLOC (3)")
    ping.add_argument("-i", "--interval", type=float, default=0.2, help="between rounds (0.2 s)")
    _timeout(ping, 1.0)
    _node_options(ping)
    ping.set_defaults(handler=_ping)

    trace = subparsers.add_parser(
        "trace", help="the hops to an EID: ITR, map-resolver, relays, ETR, with RLOCs and times"
    )
    trace.add_argument("eid", help="an EID address (IPv4 or IPv6)")
    _timeout(trace, 1.0)
    _node_options(trace)
    trace.set_defaults(handler=_trace)

    cache = subparsers.add_parser("map-cache", help="this node's map-cache: TTLs, RLOC states")
    _node_options(cache)
    cache.set_defaults(handler=_map_cache)

    netcheck = subparsers.add_parser(
        "netcheck", help="uplinks, NAT, and whether the controller and map-servers answer"
    )
    _timeout(netcheck, 2.0)
    _node_options(netcheck)
    netcheck.set_defaults(handler=_netcheck)
