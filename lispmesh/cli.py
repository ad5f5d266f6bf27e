"""The `lispmesh` command: one entry point, one verb group per module in `lispmesh.commands`.

This file only wires the groups together and is the one place where errors become output: any
`common.errors.LispmeshError` (each layer's own errors derive from it, and `CliError` for the
command line's own) is printed as one line, `lispmesh: error: ...`, and its `code` returned.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from common.errors import LispmeshError
from lispmesh.commands import app, controller, demo, lab, node, ops, pki, policy

# In the order `lispmesh --help` lists them.
GROUPS = (demo, lab, node, app, controller, policy, pki, ops)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lispmesh", description="lispmesh: an encrypted LISP mesh for edge computing"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in GROUPS:
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
    except LispmeshError as exc:
        print(f"lispmesh: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
