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

from controller_api.settings import DEFAULT_STATE_DIR


def _fail(message: str) -> Exception:
    from lispmesh.errors import CliError

    return CliError(message)


class _Unreachable(Exception):
    pass


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise _fail(f"{path} is not a text file") from None


def _call(args: argparse.Namespace, rpc: str, request: Any) -> Any:
    """One PolicyAdmin call; _Unreachable if the controller (or the admin files) cannot be used,
    CliError when it refuses."""
    import grpc

    from controller_api.admin_client import RPC_TIMEOUT, AdminError, resolve_target
    from controller_api.client import ControllerUnreachable, credentials, explain, sync_channel
    from controller_api.gen.lispmesh.v1 import policy_pb2_grpc

    try:
        target = resolve_target(
            Path(args.state_dir), args.controller, args.admin_cert, args.admin_key, args.ca_cert
        )
    except AdminError as exc:
        raise _Unreachable(str(exc)) from None
    creds = credentials(target.ca_pem, target.cert_pem, target.key_pem)
    with sync_channel(target.address, creds) as channel:
        stub: Any = policy_pb2_grpc.PolicyAdminStub(channel)  # type: ignore[no-untyped-call]
        try:
            return getattr(stub, rpc)(request, timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            error = explain(exc, target.address)
            if isinstance(error, ControllerUnreachable):
                raise _Unreachable(str(error)) from None
            raise _fail(str(error)) from None


def _print_json(message: Any) -> None:
    from google.protobuf import json_format

    doc = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    print(json.dumps(doc, indent=2, sort_keys=True))


def _document(path: str) -> Any:
    from controller_api.gen.lispmesh.v1 import policy_pb2

    return policy_pb2.PolicyDocument(text=_read(path), filename=Path(path).name)


def _summary(result: Any) -> str:
    nodes = len(result.nodes)
    return (
        f"{result.rules} rule(s), {result.tests} embedded test(s) passed, "
        f"compiled for {nodes} node(s)"
    )


# ---------------------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    from controller_api.policy import PolicyError, parse_policy

    document = _document(args.file)
    try:
        doc = parse_policy(document.text, document.filename)
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    note = "--offline"
    if not args.offline:
        try:
            result = _call(args, "Check", document)
        except _Unreachable as exc:
            note = str(exc)
        else:
            if args.json:
                _print_json(result)
            if not result.ok:
                raise _fail(result.error)
            if not args.json:
                for warning in result.warnings:
                    print(f"warning: {warning}", file=sys.stderr)
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
    try:
        result = _call(args, "Apply", _document(args.file))
    except _Unreachable as exc:
        raise _fail(str(exc)) from None
    if args.json:
        _print_json(result)
    if not result.ok:
        raise _fail(f"policy refused: {result.error}")
    if not args.json:
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"policy v{result.version} applied: {_summary(result)}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import policy_pb2
    from controller_api.policy_views import explanation_view

    request = policy_pb2.ExplainRequest(
        src=args.src, dst=args.dst, protocol=args.proto, port=args.port or 0
    )
    if args.file:
        request.policy.CopyFrom(_document(args.file))
    try:
        reply = _call(args, "Explain", request)
    except _Unreachable as exc:
        raise _fail(str(exc)) from None
    if args.json:
        _print_json(reply)
    else:
        explanation_view(reply)
    return 0


def _show(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import policy_pb2
    from controller_api.policy_views import policy_view

    try:
        reply = _call(args, "Get", policy_pb2.GetPolicyRequest())
    except _Unreachable as exc:
        raise _fail(str(exc)) from None
    if args.json:
        _print_json(reply)
    elif args.text:
        print(reply.text, end="")
    else:
        policy_view(reply)
    return 0


# ---------------------------------------------------------------------------------------------


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--controller", help="the API address HOST:PORT (default: state dir)")
    parser.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR), help="controller state dir")
    parser.add_argument("--admin-cert", help="admin certificate (default: STATE_DIR/admin.crt)")
    parser.add_argument("--admin-key", help="admin key (default: STATE_DIR/admin.key)")
    parser.add_argument("--ca-cert", help="controller CA (default: STATE_DIR/ca.crt)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    policy = subparsers.add_parser(
        "policy", help="network policies: check, apply, explain, show (see examples/policy.yml)"
    )
    sub = policy.add_subparsers(dest="policy_command", metavar="COMMAND")
    policy.set_defaults(handler=lambda args: _usage(policy))

    check = sub.add_parser(
        "check", help="check a policy file (syntax; names and tests at the controller)"
    )
    check.add_argument("file")
    check.add_argument("--offline", action="store_true", help="syntax only, no controller")
    _options(check)
    check.set_defaults(handler=_check)

    apply = sub.add_parser("apply", help="check a policy file and make every node enforce it")
    apply.add_argument("file")
    _options(apply)
    apply.set_defaults(handler=_apply)

    explain = sub.add_parser("explain", help="which rule decides a flow, and why")
    explain.add_argument("src", help="node name, address ([IID]ADDR) or host of the policy")
    explain.add_argument("dst")
    explain.add_argument("proto", help="tcp, udp, icmp or a protocol number")
    explain.add_argument("port", nargs="?", type=int, help="destination port (tcp, udp)")
    explain.add_argument("--file", help="explain against this policy file, not the applied one")
    _options(explain)
    explain.set_defaults(handler=_explain)

    show = sub.add_parser("show", help="the applied policy")
    show.add_argument("--text", action="store_true", help="print the policy file as applied")
    _options(show)
    show.set_defaults(handler=_show)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2
