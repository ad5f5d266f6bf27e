"""The `lispmesh` command: one entry point, one sub-command group per layer.

Each layer that has commands exposes `register(subparsers)` in its own `cli` module, so this file
only wires them together. A command returns an exit code; errors a person can act on are raised as
`CliError` and printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from lispmesh.errors import CliError

# Modules that contribute commands: each has `register(subparsers) -> None`. A module that is
# missing (a layer not built yet) is skipped so the rest of the CLI keeps working.
COMMAND_MODULES = (
    "lispmesh.demo_cli",
    "netlab.cli",
    "mesh.cli",
    "node.cli",
    "controller_api.cli",
    "controller_api.policy_cli",
    "lispmesh.ops_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lispmesh", description="lispmesh: an encrypted LISP mesh for edge computing"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except CliError as exc:
        print(f"lispmesh: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["CliError", "main"]
