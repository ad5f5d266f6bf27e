"""Asking a running node (its control socket) or the controller (its admin API).

Both raise `common.errors.LispmeshError` subclasses with one line (`mesh.control.ControlError`,
`controller_api.admin_client.AdminError`), which `lispmesh.cli.main` prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lispmesh.commands.options import DEFAULT_RUN_DIR
from lispmesh.errors import CliError


def control_socket_path(args: argparse.Namespace) -> Path:
    """Which node to ask: --socket, else --state-dir's or --config's node, else the only node
    running here."""
    if getattr(args, "socket", None):
        return Path(args.socket)
    if getattr(args, "state_dir", None):
        from node.state import StateDir

        name = StateDir(Path(args.state_dir)).load_enrollment().name
        return Path(args.run_dir) / f"{name}.sock"
    if getattr(args, "config", None):
        from mesh.config import load_config

        return load_config(Path(args.config)).control_socket
    sockets = sorted(DEFAULT_RUN_DIR.glob("*.sock")) if DEFAULT_RUN_DIR.is_dir() else []
    if len(sockets) == 1:
        return sockets[0]
    if not sockets:
        raise CliError(f"no node is running here (no control socket in {DEFAULT_RUN_DIR})")
    names = ", ".join(s.stem for s in sockets)
    raise CliError(f"several nodes run here ({names}): pick one with --socket or --config")


def ask_node(args: argparse.Namespace, command: str, timeout: float = 5.0, **fields: Any) -> Any:
    """One control-socket command to the node the flags name; its JSON reply."""
    from mesh.control import query

    return query(control_socket_path(args), command, timeout=timeout, **fields)


def ask_controller(args: argparse.Namespace, rpc: str, request: Any, service: str = "Admin") -> Any:
    """One admin API call to the controller the flags name (`options.add_controller_target`)."""
    from controller_api.admin_client import call, resolve_target

    target = resolve_target(
        Path(args.state_dir), args.controller, args.admin_cert, args.admin_key, args.ca_cert
    )
    return call(target, service, rpc, request)
