"""`lispmesh controller ...`: run the controller, and administer it (tokens, nodes, topology).

`controller topology` is the old spelling of `lispmesh topology` (kept for scripts): the same
verb, flags and output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from ipaddress import IPv4Network, IPv6Network, ip_address
from pathlib import Path
from typing import TYPE_CHECKING

from lispmesh.commands import attestation, ca, ops
from lispmesh.commands.options import (
    Subparsers,
    add_controller_target,
    group,
    parse_duration,
    parse_instance_id,
)
from lispmesh.commands.output import console, print_json
from lispmesh.commands.rpc import ask_controller
from lispmesh.errors import CliError

if TYPE_CHECKING:
    from controller_api.settings import StoreSettings


def _listen(text: str) -> tuple[str, int]:
    from controller_api.client import split_address
    from controller_api.settings import DEFAULT_PORT

    try:
        return split_address(text, DEFAULT_PORT)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# where the state is


def _add_store_options(parser: argparse.ArgumentParser, choose: bool = True) -> None:
    from controller_api.settings import BACKENDS, StoreSettings

    if choose:
        parser.add_argument(
            "--store",
            choices=BACKENDS,
            default="sqlite",
            help="sqlite: one file in the state dir (default); etcd: shared by replicas",
        )
    parser.add_argument("--etcd-endpoints", help="the etcd members, HOST:PORT[,HOST:PORT...]")
    parser.add_argument(
        "--etcd-prefix", default=StoreSettings.etcd_prefix, help="key prefix in etcd (/lispmesh/)"
    )
    parser.add_argument("--etcd-ca", help="PEM CA of the etcd members (TLS to etcd)")
    parser.add_argument("--etcd-cert", help="client certificate for etcd (PEM)")
    parser.add_argument("--etcd-key", help="client key for etcd (PEM)")


def _store_settings(args: argparse.Namespace, backend: str | None = None) -> StoreSettings:
    from controller_api.settings import StoreSettings

    def path(value: str | None) -> Path | None:
        return Path(value) if value else None

    endpoints = tuple(e for e in (args.etcd_endpoints or "").split(",") if e.strip())
    chosen = backend or args.store
    if chosen == "etcd" and not endpoints:
        raise CliError("the etcd store needs --etcd-endpoints HOST:PORT[,HOST:PORT...]")
    if not args.etcd_prefix.startswith("/") or not args.etcd_prefix.endswith("/"):
        raise CliError(f"--etcd-prefix {args.etcd_prefix!r}: must start and end with '/'")
    return StoreSettings(
        chosen, endpoints, args.etcd_prefix, path(args.etcd_ca), path(args.etcd_cert),
        path(args.etcd_key),
    )  # fmt: skip


def _migrate(args: argparse.Namespace) -> int:
    from controller_api.migrate import migrate_to_etcd
    from controller_api.store import StoreError

    try:
        done = migrate_to_etcd(Path(args.state_dir), _store_settings(args, backend=args.to))
    except (StoreError, OSError) as exc:
        raise CliError(f"migrate: {exc}") from None
    if args.json:
        counts = {c.kind: {"sqlite": c.source, "etcd": c.target} for c in done.counts}
        print(json.dumps({"source": done.source, "target": done.target,
                          "keys_written": done.written, "counts": counts}))  # fmt: skip
        return 0
    state = f"{done.written} keys written" if done.written else "already migrated, nothing written"
    print(f"{done.source} -> {done.target}: {state}; verified:")
    for c in done.counts:
        print(f"  {c.kind:<18} {c.source:>6} in SQLite, {c.target:>6} in etcd")
    return 0


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
            tpm_ca=Path(args.tpm_ca) if args.tpm_ca else None,
            tpm_allow_uncertified=tuple(args.tpm_allow_ek or ()),
            tpm_required_iids=tuple(args.require_tpm_iid or ()),
            attestation_policy=Path(args.attestation_policy) if args.attestation_policy else None,
            attestation_interval=args.attestation_interval,
            config_cycle=args.config_cycle,
            app_interval=args.app_interval,
            node_timeout=args.node_timeout,
            rekey_after_seconds=args.rekey_after,
            cert_lifetime=args.cert_lifetime,
            cert_grace=args.cert_grace,
            ca_distribute_timeout=args.ca_distribute_timeout,
            metrics_listen=args.metrics_listen,
            store=_store_settings(args),
            leader_ttl=args.leader_ttl,
            replica_name=args.replica_name,
            rtrs=tuple(args.rtr or _env_rtrs()),
        )
    except ValueError as exc:
        raise CliError(f"bad EID pool: {exc}") from None
    try:
        asyncio.run(Controller(settings).serve())
    except ControllerError as exc:
        raise CliError(f"controller: {exc}") from None
    return 0


# ---------------------------------------------------------------------------------------------
# admin commands


def _token_tags(args: argparse.Namespace) -> list[str]:
    tags = list(args.tag or [])
    if args.instance_id is not None:
        if not 0 <= args.instance_id < 1 << 24:
            raise CliError(f"instance-id {args.instance_id} is not in 0..16777215")
        tags.append(f"iid:{args.instance_id}")
    if args.require_tpm:
        tags.append("tpm:required")
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
    reply = ask_controller(args, "CreateToken", request)
    if args.json:
        print_json(reply)
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
    from certs.format import IdentityError
    from controller_api.offline import create_token
    from controller_api.settings import rfc3339
    from controller_api.store import StoreError

    try:
        token, row = create_token(
            Path(args.state_dir),
            args.ttl or 86400.0,
            args.uses,
            tuple(args.tag or ()),
            args.description or "",
            _store_settings(args),
        )
    except (StoreError, IdentityError, OSError) as exc:
        raise CliError(f"cannot create a token in {args.state_dir}: {exc}") from None
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


def _status(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import admin_pb2

    reply = ask_controller(args, "ControllerStatus", admin_pb2.ControllerStatusRequest())
    if args.json:
        print_json(reply)
        return 0
    print(f"store:    {reply.store} (revision {reply.store_revision}): {reply.store_health}")
    leader = f"{reply.leader} (term {reply.leader_term})" if reply.leader else "none right now"
    if reply.leader_last_round:
        leader += f", last round {reply.leader_last_round}"
    print(f"leader:   {leader}")
    print(f"answered: {reply.replica}")
    for r in reply.replicas:
        print(f"  {'*' if r.leader else ' '} {r.name:<24} {r.api_address}")
    return 0


def _token_list(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import admin_pb2
    from lispmesh.views import controller as view

    reply = ask_controller(args, "ListTokens", admin_pb2.ListTokensRequest())
    if args.json:
        print_json(reply)
    else:
        view.tokens(reply.tokens, console())
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import admin_pb2

    reply = ask_controller(args, "RevokeToken", admin_pb2.RevokeTokenRequest(token_id=args.token))
    if args.json:
        print_json(reply)
    else:
        print(f"token lmj1.{reply.token_id}… revoked at {reply.revoked_at}")
    return 0


def _node_list(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import admin_pb2
    from lispmesh.views import controller as view

    reply = ask_controller(args, "ListNodes", admin_pb2.ListNodesRequest(include_revoked=args.all))
    if args.json:
        print_json(reply)
    else:
        view.nodes(reply.nodes, console())
    return 0


def _node_describe(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import admin_pb2
    from lispmesh.views import controller as view

    reply = ask_controller(args, "DescribeNode", admin_pb2.DescribeNodeRequest(node=args.node))
    if args.json:
        print_json(reply)
    else:
        view.node_detail(reply, console())
    return 0


def _node_revoke(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import admin_pb2

    reply = ask_controller(args, "RevokeNode", admin_pb2.RevokeNodeRequest(node=args.node))
    if args.json:
        print_json(reply)
    else:
        print(f"node {reply.name} ({reply.node_id}) revoked at {reply.revoked_at}")
    return 0


def _rtr(text: str) -> tuple[str, str]:
    """NAME=ADDRESS of an RTR (argparse type: a bad one is one line naming it)."""
    name, sep, address = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, str(ip_address(address))
    except ValueError:
        raise argparse.ArgumentTypeError(f"RTR {text!r} is not NAME=ADDRESS") from None


def _env_rtrs() -> list[tuple[str, str]]:
    text = os.environ.get("LISPMESH_RTRS", "")
    try:
        return [_rtr(item.strip()) for item in text.split(",") if item.strip()]
    except argparse.ArgumentTypeError as exc:
        raise CliError(f"$LISPMESH_RTRS: {exc}") from None


# ---------------------------------------------------------------------------------------------
# wiring


def register(subparsers: Subparsers) -> None:
    from controller_api.settings import DEFAULT_PORT, DEFAULT_STATE_DIR

    _, sub = group(subparsers, "controller", "run the lispmesh controller and administer it")

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
    serve.add_argument(
        "--rtr",
        action="append",
        type=_rtr,
        help="NAME=ADDRESS: node NAME at public RLOC ADDRESS relays for nodes behind NATs (it "
        "runs the RTR role); repeatable; default $LISPMESH_RTRS (comma-separated)",
    )
    serve.add_argument("--onboarding-ca", help="PEM CA(s) whose device certificates may enroll")
    serve.add_argument(
        "--tpm-ca", help="PEM: TPM manufacturer CAs (roots, intermediates) EK certificates chain to"
    )
    serve.add_argument(
        "--tpm-allow-ek",
        action="append",
        help="hex EK name of a TPM without an EK certificate that may enroll (repeatable)",
    )
    serve.add_argument(
        "--attestation-policy",
        help="JSON attestation policy at first start (default: PCRs 0-7 quoted and replayed "
        "from the event log); `controller attestation policy set` replaces it at runtime",
    )
    serve.add_argument(
        "--require-tpm-iid",
        type=parse_instance_id,
        action="append",
        metavar="IID",
        help="only TPM-backed nodes may join this instance-id, with any token (repeatable)",
    )
    serve.add_argument(
        "--attestation-interval",
        type=parse_duration,
        default=300.0,
        help="TPM nodes attest again this often while connected (5m; 0: on connection only)",
    )
    serve.add_argument(
        "--token-ttl", type=parse_duration, default=86400.0, help="default token lifetime (24h)"
    )
    serve.add_argument(
        "--node-timeout",
        type=parse_duration,
        default=45.0,
        help="a node unheard this long is disconnected (45s; its apps' lost_after then runs)",
    )
    serve.add_argument(
        "--config-cycle",
        type=float,
        default=2.0,
        help="seconds between each node stream's re-check (2)",
    )
    # For tests: the leader's app rounds (placement, rolling updates) this often.
    serve.add_argument("--app-interval", type=float, default=2.0, help=argparse.SUPPRESS)
    serve.add_argument(
        "--rekey-after",
        type=parse_duration,
        default=120.0,
        help="node key lifetime (2m); also bounds the outage after a peer reboots",
    )
    serve.add_argument(
        "--cert-lifetime",
        type=parse_duration,
        default=365 * 86400.0,
        help="node certificate lifetime (365d); nodes renew at 2/3 of it",
    )
    serve.add_argument(
        "--ca-distribute-timeout",
        type=parse_duration,
        default=3600.0,
        help="a CA rotation is abandoned if a live node has not taken the new CA by then (1h)",
    )
    serve.add_argument(
        "--cert-grace",
        type=parse_duration,
        default=86400.0,
        help="how long a renewed node's old certificate is still accepted (1d)",
    )
    serve.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus /metrics there (off by default; a bare :PORT is loopback only)",
    )
    _add_store_options(serve)
    serve.add_argument(
        "--leader-ttl",
        type=int,
        default=10,
        help="replicas on etcd: seconds before a silent leader is replaced (10)",
    )
    serve.add_argument("--replica-name", help="this replica's name (default: its API address)")
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--config", help=argparse.SUPPRESS)
    serve.set_defaults(handler=_serve)

    _, tokens = group(sub, "token", "join tokens: create, list, revoke")
    create = tokens.add_parser("create", help="create a join token (printed once)")
    create.add_argument("--ttl", type=parse_duration, help="lifetime, e.g. 1h (default 24h)")
    create.add_argument("--uses", type=int, default=1, help="how many nodes may join (1)")
    create.add_argument("--tag", action="append", help="tag given to nodes (repeatable)")
    create.add_argument(
        "--instance-id",
        type=int,
        help="put the nodes in this instance-id (virtual network; adds the tag iid:N)",
    )
    create.add_argument(
        "--require-tpm",
        action="store_true",
        help="only TPM-backed nodes may join with it (adds the tag tpm:required)",
    )
    create.add_argument("--description")
    create.add_argument(
        "--offline",
        action="store_true",
        help="write it straight into --state-dir (the controller need not run)",
    )
    add_controller_target(create)
    _add_store_options(create)
    create.set_defaults(handler=_token_create)
    tlist = tokens.add_parser("list", help="list join tokens (never their secrets)")
    add_controller_target(tlist)
    tlist.set_defaults(handler=_token_list)
    trevoke = tokens.add_parser("revoke", help="revoke a join token")
    trevoke.add_argument("token", help="token id (or the whole token)")
    add_controller_target(trevoke)
    trevoke.set_defaults(handler=_token_revoke)

    _, nodes = group(sub, "node", "enrolled nodes: list, describe, revoke")
    nlist = nodes.add_parser("list", help="list nodes")
    nlist.add_argument("--all", action="store_true", help="include revoked nodes")
    add_controller_target(nlist)
    nlist.set_defaults(handler=_node_list)
    describe = nodes.add_parser("describe", help="one node in detail")
    describe.add_argument("node", help="name or id")
    add_controller_target(describe)
    describe.set_defaults(handler=_node_describe)
    revoke = nodes.add_parser("revoke", help="revoke a node: cut off, registrations withdrawn")
    revoke.add_argument("node", help="name or id")
    add_controller_target(revoke)
    revoke.set_defaults(handler=_node_revoke)

    status = sub.add_parser("status", help="replicas, the leader, the store's health and revision")
    add_controller_target(status)
    status.set_defaults(handler=_status)

    migrate = sub.add_parser(
        "migrate", help="copy a SQLite controller's state into etcd (stop the controller first)"
    )
    migrate.add_argument("--to", choices=("etcd",), required=True)
    migrate.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR))
    migrate.add_argument("--json", action="store_true")
    _add_store_options(migrate, choose=False)
    migrate.set_defaults(handler=_migrate)

    attestation.register(sub)
    ca.register(sub)

    ops.add_topology(sub, "topology", "nodes, EIDs, RLOCs and registrations (= lispmesh topology)")
