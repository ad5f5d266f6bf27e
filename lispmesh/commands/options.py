"""Flags several verbs share, defined once: which node, which controller, how long to wait."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TypeAlias

DEFAULT_RUN_DIR = Path("/run/lispmesh")  # where a node's control socket is (`NAME.sock`)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)\Z")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

# What `add_subparsers()` returns (argparse has no public name for it; generic only in typeshed).
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def group(
    subparsers: Subparsers, name: str, help_text: str, metavar: str = "COMMAND"
) -> tuple[argparse.ArgumentParser, Subparsers]:
    """A verb group (`lispmesh NAME VERB`): bare `lispmesh NAME` prints its help, exit 2."""
    parser = subparsers.add_parser(name, help=help_text)
    inner = parser.add_subparsers(dest=f"{name}_command", metavar=metavar)
    parser.set_defaults(handler=lambda _args: usage(parser))
    return parser, inner


def usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def add_json(parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def add_node_target(parser: argparse.ArgumentParser) -> None:
    """Which running node to ask (see `rpc.control_socket_path`), and --json."""
    parser.add_argument("--socket", help="the node's control socket")
    parser.add_argument("--config", help="the node's config file (to find its socket)")
    parser.add_argument("--state-dir", help="a controller-managed node's state dir")
    parser.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR), help=argparse.SUPPRESS)
    add_json(parser)


def add_controller_target(parser: argparse.ArgumentParser, json: bool = True) -> None:
    """Which controller to administer, with which admin certificate (and --json)."""
    from controller_api.settings import DEFAULT_STATE_DIR

    parser.add_argument(
        "--controller", help="the API address HOST:PORT (default: from the state dir)"
    )
    parser.add_argument(
        "--state-dir", default=str(DEFAULT_STATE_DIR), help="the controller's state dir"
    )
    parser.add_argument("--admin-cert", help="admin certificate (default: STATE_DIR/admin.crt)")
    parser.add_argument("--admin-key", help="admin key (default: STATE_DIR/admin.key)")
    parser.add_argument("--ca-cert", help="controller CA (default: STATE_DIR/ca.crt)")
    if json:
        add_json(parser)


def add_timeout(parser: argparse.ArgumentParser, default: float) -> None:
    parser.add_argument(
        "--timeout", type=float, default=default, help=f"seconds to wait per answer ({default:g})"
    )


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `1h`, `7d` or plain seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90s, 30m, 1h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_instance_id(text: str) -> int:
    """An instance-id: 0..16777215 (24 bits, RFC 9300)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 1 << 24:
        raise argparse.ArgumentTypeError(f"{text!r} is not an instance-id (0..16777215)")
    return value
