"""`lispmesh controller ...`: run the controller, and administer it (tokens, nodes, topology)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

from controller_api.settings import DEFAULT_PORT, DEFAULT_STATE_DIR

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)\Z")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _fail(message: str) -> Exception:
    from lispmesh.errors import CliError

    return CliError(message)


def parse_duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90s, 30m, 1h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _listen(text: str) -> tuple[str, int]:
    from controller_api.client import split_address

    try:
        return split_address(text, DEFAULT_PORT)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# serve


def _serve(args: argparse.Namespace) -> int:
    from controller_api.server import Controller, ControllerError
    from controller_api.settings import ControllerSettings

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(asctime)s controller %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    host, port = args.listen
    try:
        settings = ControllerSettings(
            state_dir=Path(args.state_dir),
            listen_host=host,
            listen_port=port,
            api_port=args.api_port,
            advertise=args.advertise,
            instance_id=args.instance_id,
            pool4=IPv4Network(args.eid_pool4) if args.eid_pool4 else None,
            prefix_len4=args.eid_prefix_len4,
            pool6=IPv6Network(args.eid_pool6) if args.eid_pool6 else None,
            prefix_len6=args.eid_prefix_len6,
            token_ttl=args.token_ttl,
            map_server_port=args.map_server_port,
            onboarding_ca=Path(args.onboarding_ca) if args.onboarding_ca else None,
            config_cycle=args.config_cycle,
            rekey_after_seconds=args.rekey_after,
        )
    except ValueError as exc:
        raise _fail(f"bad EID pool: {exc}") from None
    try:
        asyncio.run(Controller(settings).serve())
    except ControllerError as exc:
        raise _fail(f"controller: {exc}") from None
    return 0


# ---------------------------------------------------------------------------------------------
# admin commands


def _target(args: argparse.Namespace) -> Any:
    from controller_api.admin_client import AdminError, resolve_target

    try:
        return resolve_target(
            Path(args.state_dir), args.controller, args.admin_cert, args.admin_key, args.ca_cert
        )
    except AdminError as exc:
        raise _fail(str(exc)) from None


def _call(args: argparse.Namespace, rpc: str, request: Any) -> Any:
    from controller_api.admin_client import AdminError, call

    try:
        return call(_target(args), lambda stub: getattr(stub, rpc), request)
    except AdminError as exc:
        raise _fail(str(exc)) from None


def _print_json(message: Any) -> None:
    from google.protobuf import json_format

    doc = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    print(json.dumps(doc, indent=2, sort_keys=True))


def _token_tags(args: argparse.Namespace) -> list[str]:
    tags = list(args.tag or [])
    if args.instance_id is not None:
        if not 0 <= args.instance_id < 1 << 24:
            raise _fail(f"instance-id {args.instance_id} is not in 0..16777215")
        tags.append(f"iid:{args.instance_id}")
    return tags


def _token_create(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import admin_pb2

    args.tag = _token_tags(args)
    if args.offline:
        return _token_create_offline(args)
    request = admin_pb2.CreateTokenRequest(
        ttl_seconds=args.ttl or 0,
        max_uses=args.uses,
        tags=args.tag or [],
        description=args.description or "",
    )
    reply = _call(args, "CreateToken", request)
    if args.json:
        _print_json(reply)
    else:
        t = reply.token
        print(reply.token_secret)
        print(
            f"# token lmj1.{t.token_id}… expires {t.expires_at}, {t.max_uses} use(s)"
            + (f", tags {','.join(t.tags)}" if t.tags else ""),
            file=sys.stderr,
        )
    return 0


def _token_create_offline(args: argparse.Namespace) -> int:
    from controller_api.offline import create_token
    from controller_api.settings import rfc3339
    from controller_api.store import StoreError
    from mesh.identity import IdentityError

    try:
        token, row = create_token(
            Path(args.state_dir),
            args.ttl or 86400.0,
            args.uses,
            tuple(args.tag or ()),
            args.description or "",
        )
    except (StoreError, IdentityError, OSError) as exc:
        raise _fail(f"cannot create a token in {args.state_dir}: {exc}") from None
    if args.json:
        print(
            json.dumps(
                {
                    "token_secret": str(token),
                    "token_id": row.token_id,
                    "expires_at": rfc3339(row.expires_at),
                    "max_uses": row.max_uses,
                }
            )
        )
    else:
        print(token)
    return 0


def _token_list(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import admin_pb2
    from controller_api.views import tokens_table

    reply = _call(args, "ListTokens", admin_pb2.ListTokensRequest())
    if args.json:
        _print_json(reply)
    else:
        tokens_table(reply.tokens)
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import admin_pb2

    reply = _call(args, "RevokeToken", admin_pb2.RevokeTokenRequest(token_id=args.token))
    if args.json:
        _print_json(reply)
    else:
        print(f"token lmj1.{reply.token_id}… revoked at {reply.revoked_at}")
    return 0


def _node_list(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import admin_pb2
    from controller_api.views import nodes_table

    reply = _call(args, "ListNodes", admin_pb2.ListNodesRequest(include_revoked=args.all))
    if args.json:
        _print_json(reply)
    else:
        nodes_table(reply.nodes)
    return 0


def _node_describe(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import admin_pb2
    from controller_api.views import node_detail

    reply = _call(args, "DescribeNode", admin_pb2.DescribeNodeRequest(node=args.node))
    if args.json:
        _print_json(reply)
    else:
        node_detail(reply)
    return 0


def _node_revoke(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import admin_pb2

    reply = _call(args, "RevokeNode", admin_pb2.RevokeNodeRequest(node=args.node))
    if args.json:
        _print_json(reply)
    else:
        print(f"node {reply.name} ({reply.node_id}) revoked at {reply.revoked_at}")
    return 0


def _topology(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import admin_pb2
    from controller_api.views import topology_view

    reply = _call(args, "GetTopology", admin_pb2.GetTopologyRequest())
    if args.json:
        _print_json(reply)
    else:
        topology_view(reply)
    return 0


# ---------------------------------------------------------------------------------------------
# wiring


def _admin_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--controller", help="the API address HOST:PORT (default: from the state dir)"
    )
    parser.add_argument(
        "--state-dir", default=str(DEFAULT_STATE_DIR), help="the controller's state dir"
    )
    parser.add_argument("--admin-cert", help="admin certificate (default: STATE_DIR/admin.crt)")
    parser.add_argument("--admin-key", help="admin key (default: STATE_DIR/admin.key)")
    parser.add_argument("--ca-cert", help="controller CA (default: STATE_DIR/ca.crt)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _group(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    parser = sub.add_parser(name, help=help_text)
    inner = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND")
    parser.set_defaults(handler=lambda args: _usage(parser))
    return inner


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    controller = subparsers.add_parser(
        "controller", help="run the lispmesh controller and administer it"
    )
    sub = controller.add_subparsers(dest="controller_command", metavar="COMMAND")
    controller.set_defaults(handler=lambda args: _usage(controller))

    serve = sub.add_parser("serve", help="run the controller (foreground)")
    serve.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR))
    serve.add_argument(
        "--listen",
        type=_listen,
        default=("0.0.0.0", DEFAULT_PORT),
        help=f"join address: TLS, enrollment (default 0.0.0.0:{DEFAULT_PORT})",
    )
    serve.add_argument("--api-port", type=int, help="mutual-TLS API port (default: join + 1)")
    serve.add_argument(
        "--advertise",
        help="address nodes use for the map-server (default: "
        "the listen address, or this host's first global address)",
    )
    serve.add_argument("--instance-id", type=int, default=0, help="fixed at first start")
    serve.add_argument("--eid-pool4", help="IPv4 EID pool (fixed at first start; 10.250.0.0/16)")
    serve.add_argument("--eid-prefix-len4", type=int, help="IPv4 EID prefix per node (24)")
    serve.add_argument("--eid-pool6", help="IPv6 EID pool (fixed at first start; a random ULA)")
    serve.add_argument("--eid-prefix-len6", type=int, help="IPv6 EID prefix per node (64)")
    serve.add_argument("--map-server-port", type=int, default=4342)
    serve.add_argument("--onboarding-ca", help="PEM CA(s) whose device certificates may enroll")
    serve.add_argument(
        "--token-ttl", type=parse_duration, default=86400.0, help="default token lifetime (24h)"
    )
    serve.add_argument(
        "--config-cycle",
        type=float,
        default=2.0,
        help="seconds between each node stream's re-check (2)",
    )
    serve.add_argument(
        "--rekey-after",
        type=parse_duration,
        default=120.0,
        help="node key lifetime (2m); also bounds the outage after a peer reboots",
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--config", help=argparse.SUPPRESS)
    serve.set_defaults(handler=_serve)

    tokens = _group(sub, "token", "join tokens: create, list, revoke")
    create = tokens.add_parser("create", help="create a join token (printed once)")
    create.add_argument("--ttl", type=parse_duration, help="lifetime, e.g. 1h (default 24h)")
    create.add_argument("--uses", type=int, default=1, help="how many nodes may join (1)")
    create.add_argument("--tag", action="append", help="tag given to nodes (repeatable)")
    create.add_argument(
        "--instance-id",
        type=int,
        help="put the nodes in this instance-id (virtual network; adds the tag iid:N)",
    )
    create.add_argument("--description")
    create.add_argument(
        "--offline",
        action="store_true",
        help="write it straight into --state-dir (the controller need not run)",
    )
    _admin_options(create)
    create.set_defaults(handler=_token_create)
    tlist = tokens.add_parser("list", help="list join tokens (never their secrets)")
    _admin_options(tlist)
    tlist.set_defaults(handler=_token_list)
    trevoke = tokens.add_parser("revoke", help="revoke a join token")
    trevoke.add_argument("token", help="token id (or the whole token)")
    _admin_options(trevoke)
    trevoke.set_defaults(handler=_token_revoke)

    nodes = _group(sub, "node", "enrolled nodes: list, describe, revoke")
    nlist = nodes.add_parser("list", help="list nodes")
    nlist.add_argument("--all", action="store_true", help="include revoked nodes")
    _admin_options(nlist)
    nlist.set_defaults(handler=_node_list)
    describe = nodes.add_parser("describe", help="one node in detail")
    describe.add_argument("node", help="name or id")
    _admin_options(describe)
    describe.set_defaults(handler=_node_describe)
    revoke = nodes.add_parser("revoke", help="revoke a node: cut off, registrations withdrawn")
    revoke.add_argument("node", help="name or id")
    _admin_options(revoke)
    revoke.set_defaults(handler=_node_revoke)

    topology = sub.add_parser("topology", help="nodes, EIDs, RLOCs and registrations")
    _admin_options(topology)
    topology.set_defaults(handler=_topology)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2
