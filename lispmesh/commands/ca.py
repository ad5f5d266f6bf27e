"""`lispmesh controller ca`: rotate the controller CA (a new CA cross-signed by the old one,
both trusted during the switch) and see how far the switch is.

    lispmesh controller ca rotate            # new CA; it issues once every node trusts it
    lispmesh controller ca status            # the CAs, which one issues, nodes still on the old
    lispmesh controller ca rotate --finish   # drop the old CA (refused while nodes hold it)
"""

from __future__ import annotations

import argparse
from typing import Any

from lispmesh.commands.options import Subparsers, add_controller_target, group
from lispmesh.commands.output import print_json
from lispmesh.commands.rpc import ask_controller

_PHASES = {
    "stable": "one CA",
    "distributing": "new CA trusted, not issuing yet: waiting for connected nodes to take it",
    "switching": "new CA issues; nodes on the old CA are renewing",
}


def _show(reply: Any) -> None:
    print(f"phase: {reply.phase} ({_PHASES.get(reply.phase, '?')})")
    for ca in reply.cas:
        roles = [r for r, on in (("issuing", ca.issuing), ("tls", ca.serves_tls)) if on]
        print(f"  {ca.fingerprint[:16]}  {ca.subject:<48} until {ca.not_after}  "
              f"{ca.nodes} node(s)  {','.join(roles) or '-'}")  # fmt: skip
        if ca.cross_signed_by:
            print(f"      cross-signed by {ca.cross_signed_by[:16]}")
    if reply.phase != "stable":
        print(f"nodes on another CA than the issuer: {reply.nodes_on_old_ca}")
        print(f"connected nodes without the bundle: {reply.nodes_without_bundle}")
    if reply.distributing_since:
        print(f"distributing since {reply.distributing_since}, abandoned at "
              f"{reply.distribute_deadline} unless every live node takes the bundle")  # fmt: skip
        for line in reply.waiting_for:
            print(f"  waiting for {line}")
    if reply.last_outcome:
        print(f"last unfinished rotation: {reply.last_outcome}")


def _status(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import admin_pb2

    reply = ask_controller(args, "GetCaStatus", admin_pb2.CaStatusRequest())
    if args.json:
        print_json(reply)
    else:
        _show(reply)
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import admin_pb2

    request = admin_pb2.RotateCaRequest(finish=args.finish, force=args.force)
    reply = ask_controller(args, "RotateCa", request)
    if args.json:
        print_json(reply)
    else:
        _show(reply)
    return 0


def register(sub: Subparsers) -> None:
    """Under `lispmesh controller`."""
    _, ca = group(sub, "ca", "the controller CA: rotate it, see the switch")
    rotate = ca.add_parser("rotate", help="start a CA rotation (or --finish it)")
    rotate.add_argument("--finish", action="store_true", help="drop the old CA")
    rotate.add_argument(
        "--force", action="store_true", help="finish although live nodes still hold old-CA certs"
    )
    add_controller_target(rotate)
    rotate.set_defaults(handler=_rotate)
    status = ca.add_parser("status", help="the CAs, which one issues, nodes on the old CA")
    add_controller_target(status)
    status.set_defaults(handler=_status)
