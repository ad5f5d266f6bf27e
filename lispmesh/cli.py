"""The `lispmesh` command: one entry point, one verb group per module in `lispmesh.commands`.

This file only wires the groups together and is the one place where errors become output: any
`common.errors.LispmeshError` (each layer's own errors derive from it, and `CliError` for the
command line's own) is printed as one line, `lispmesh: error: ...`, and its `code` returned.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from common.errors import LispmeshError

# The modules of lispmesh.commands, in the order `lispmesh --help` lists them.
GROUPS = ("demo", "lab", "node", "app", "controller", "policy", "pki", "ops")
# The groups that register exactly one command, named after the module: `lispmesh node run`
# imports only lispmesh.commands.node. A node's process start is most of its join time (issue
# 19.4) and the other groups' imports (netlab, pyroute2's lab side, rich, yaml) cost it ~0.2 s.
OWN_COMMAND = frozenset(GROUPS) - {"ops"}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser with every group, or only the group `argv` names when it has its own command
    (the same parse for that command, without importing the others)."""
    parser = argparse.ArgumentParser(
        prog="lispmesh", description="lispmesh: an encrypted LISP mesh for edge computing"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = [argv[0]] if argv and argv[0] in OWN_COMMAND else GROUPS
    for name in names:
        importlib.import_module(f"lispmesh.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except LispmeshError as exc:
        print(f"lispmesh: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
