"""`lispmesh node ...`: join the mesh, run a node, and ask a running node how it is doing.

`node run --config FILE` runs a node from its own config file; without --config the node is
controller-managed (node/agent.py): it joins on first boot (--controller, --token) and reuses
its identity from the state dir on every later boot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

DEFAULT_RUN_DIR = Path("/run/lispmesh")


def _fail(message: str) -> Exception:
    from lispmesh.errors import CliError

    return CliError(message)


def _run(args: argparse.Namespace) -> int:
    from mesh.config import ConfigError, load_config
    from mesh.node import NodeRuntime, NodeSetupError

    if not args.config:
        from node.agent_cli import run_managed

        return run_managed(args)
    try:
        config = load_config(Path(args.config))
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    level = getattr(logging, (args.log_level or config.log_level).upper(), logging.INFO)
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {config.name} %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(NodeRuntime(config).run())
    except NodeSetupError as exc:
        raise _fail(f"node {config.name}: {exc}") from None
    return 0


def control_socket_path(args: argparse.Namespace) -> Path:
    """Which node to ask: --socket, else --config's node, else the only node running here."""
    if getattr(args, "socket", None):
        return Path(args.socket)
    if getattr(args, "state_dir", None):
        from node.state import StateDir, StateError

        try:
            name = StateDir(Path(args.state_dir)).load_enrollment().name
        except StateError as exc:
            raise _fail(str(exc)) from None
        return Path(args.run_dir) / f"{name}.sock"
    if getattr(args, "config", None):
        from mesh.config import ConfigError, load_config

        try:
            return load_config(Path(args.config)).control_socket
        except ConfigError as exc:
            raise _fail(str(exc)) from None
    sockets = sorted(DEFAULT_RUN_DIR.glob("*.sock")) if DEFAULT_RUN_DIR.is_dir() else []
    if len(sockets) == 1:
        return sockets[0]
    if not sockets:
        raise _fail(f"no node is running here (no control socket in {DEFAULT_RUN_DIR})")
    names = ", ".join(s.stem for s in sockets)
    raise _fail(f"several nodes run here ({names}): pick one with --socket or --config")


def ask(args: argparse.Namespace, command: str) -> dict[str, Any]:
    from mesh.control import ControlError, query

    try:
        return query(control_socket_path(args), command)
    except ControlError as exc:
        raise _fail(str(exc)) from None


def _status(args: argparse.Namespace) -> int:
    status = ask(args, "status")
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return 0
    from node.status_view import render_status

    render_status(status)
    return 0


def add_target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", help="the node's control socket")
    parser.add_argument("--config", help="the node's config file (to find its socket)")
    parser.add_argument("--state-dir", help="a controller-managed node's state dir")
    parser.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR), help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    node = subparsers.add_parser("node", help="run a lispmesh node and inspect it")
    sub = node.add_subparsers(dest="node_command", metavar="COMMAND")
    from node.agent_cli import add_join_options, add_run_options, join

    join_parser = sub.add_parser("join", help="enroll this machine with the controller (once)")
    add_join_options(join_parser)
    join_parser.add_argument("--force", action="store_true", help="join again as a new node")
    join_parser.set_defaults(handler=join)
    run = sub.add_parser(
        "run",
        help="run a node: controller-managed (joins on first boot), or from --config FILE",
    )
    run.add_argument("--config", help="node config file (YAML): a node without a controller")
    add_join_options(run)
    add_run_options(run, DEFAULT_RUN_DIR)
    run.set_defaults(handler=_run)
    status = sub.add_parser("status", help="state and drop counters of a running node")
    add_target_options(status)
    status.set_defaults(handler=_status)
    node.set_defaults(handler=lambda args: _usage(node))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2
