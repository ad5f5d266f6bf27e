"""`lispmesh policy ...`: check, apply, explain and show the controller's network policy.

    lispmesh policy check FILE                 # syntax here, then names and tests at the controller
    lispmesh policy apply FILE                 # refused (exit 1) with the reason, or applied
    lispmesh policy explain SRC DST PROTO [PORT] [--file FILE]   # which rule decides, and why
    lispmesh policy show                       # the applied policy, per-node rule counts

The admin commands talk to the controller's PolicyAdmin API with the admin certificate, found in
the controller's state dir like `lispmesh controller ...` (or --admin-cert/--admin-key/--ca-cert).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lispmesh.commands.options import Subparsers, add_controller_target, group
from lispmesh.commands.output import console, print_json
from lispmesh.commands.rpc import ask_controller
from lispmesh.errors import CliError


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CliError(f"{path} is not a text file") from None


def _call(args: argparse.Namespace, rpc: str, request: Any) -> Any:
    return ask_controller(args, rpc, request, service="PolicyAdmin")


def _document(path: str) -> Any:
    from controller_api.gen.lispmesh.v1 import policy_pb2

    return policy_pb2.PolicyDocument(text=_read(path), filename=Path(path).name)


def _summary(result: Any) -> str:
    nodes = len(result.nodes)
    return (
        f"{result.rules} rule(s), {result.tests} embedded test(s) passed, "
        f"compiled for {nodes} node(s)"
    )


def _warn(result: Any) -> None:
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    from controller_api.admin_client import AdminUnreachable
    from controller_api.policy import parse_policy

    document = _document(args.file)
    doc = parse_policy(document.text, document.filename)
    note = "--offline"
    if not args.offline:
        try:
            result = _call(args, "Check", document)
        except AdminUnreachable as exc:
            note = str(exc)  # the syntax was checked here: say what could not be
        else:
            if args.json:
                print_json(result)
            if not result.ok:
                raise CliError(result.error)
            if not args.json:
                _warn(result)
                print(f"{args.file}: OK: {_summary(result)}")
            return 0
    if args.json:
        print(json.dumps({"ok": True, "syntax_only": True, "note": note}))
    else:
        print(
            f"{args.file}: syntax OK ({len(doc.rules)} rule(s), {len(doc.tests)} test(s)); "
            f"names and tests not checked against the nodes: {note}"
        )
    return 0


def _apply(args: argparse.Namespace) -> int:
    result = _call(args, "Apply", _document(args.file))
    if args.json:
        print_json(result)
    if not result.ok:
        raise CliError(f"policy refused: {result.error}")
    if not args.json:
        _warn(result)
        print(f"policy v{result.version} applied: {_summary(result)}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import policy_pb2
    from lispmesh.views import policy as view

    request = policy_pb2.ExplainRequest(
        src=args.src, dst=args.dst, protocol=args.proto, port=args.port or 0
    )
    if args.file:
        request.policy.CopyFrom(_document(args.file))
    reply = _call(args, "Explain", request)
    if args.json:
        print_json(reply)
    else:
        view.explanation(reply, console())
    return 0


def _show(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import policy_pb2
    from lispmesh.views import policy as view

    reply = _call(args, "Get", policy_pb2.GetPolicyRequest())
    if args.json:
        print_json(reply)
    elif args.text:
        print(reply.text, end="")
    else:
        view.applied(reply, console())
    return 0


# ---------------------------------------------------------------------------------------------


def register(subparsers: Subparsers) -> None:
    _, sub = group(
        subparsers,
        "policy",
        "network policies: check, apply, explain, show (see examples/policy.yml)",
    )

    check = sub.add_parser(
        "check", help="check a policy file (syntax; names and tests at the controller)"
    )
    check.add_argument("file")
    check.add_argument("--offline", action="store_true", help="syntax only, no controller")
    add_controller_target(check)
    check.set_defaults(handler=_check)

    apply = sub.add_parser("apply", help="check a policy file and make every node enforce it")
    apply.add_argument("file")
    add_controller_target(apply)
    apply.set_defaults(handler=_apply)

    explain = sub.add_parser("explain", help="which rule decides a flow, and why")
    explain.add_argument("src", help="node name, address ([IID]ADDR) or host of the policy")
    explain.add_argument("dst")
    explain.add_argument("proto", help="tcp, udp, icmp or a protocol number")
    explain.add_argument("port", nargs="?", type=int, help="destination port (tcp, udp)")
    explain.add_argument("--file", help="explain against this policy file, not the applied one")
    add_controller_target(explain)
    explain.set_defaults(handler=_explain)

    show = sub.add_parser("show", help="the applied policy")
    show.add_argument("--text", action="store_true", help="print the policy file as applied")
    add_controller_target(show)
    show.set_defaults(handler=_show)
