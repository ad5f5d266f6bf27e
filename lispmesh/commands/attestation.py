"""`lispmesh controller attestation policy set FILE | show`: the golden values TPM nodes are
appraised against, changed at runtime (stored by the controller, so every replica and restart
uses them; they win over `controller serve --attestation-policy`).

The file is the policy document `show --json` prints under "policy":

    {"pcrs": [0, 1, 2, 3, 4, 5, 6, 7],          the PCRs quoted (SHA-256 bank)
     "log_pcrs": [0, 1, 2, 3, 4, 5, 6, 7],      those that must replay from the event log
     "golden": {"7": ["<64 hex>", ...]},        allowed values per PCR
     "allowed_events": {"4": ["<64 hex>"]}}     allowed event digests per PCR

A node quarantined by a measurement the new policy allows recovers at its next attestation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lispmesh.commands.options import Subparsers, add_controller_target, group
from lispmesh.commands.output import print_json
from lispmesh.commands.rpc import ask_controller
from lispmesh.errors import CliError


def _as_doc(info: Any) -> dict[str, Any]:
    return {
        "policy": json.loads(info.policy_json),
        "source": info.source,
        "set_at": info.set_at,
        "set_by": info.set_by,
        "filename": info.filename,
        "interval_seconds": info.interval_seconds,
    }


def _show_text(info: Any) -> None:
    policy = json.loads(info.policy_json)
    origin = {
        "set": f"set by {info.set_by} at {info.set_at}"
        + (f" ({info.filename})" if info.filename else ""),
        "file": f"from --attestation-policy {info.filename}",
        "default": "the default (no policy set)",
    }.get(info.source, info.source)
    print(f"attestation policy: {origin}")
    print(f"quoted PCRs: {_indexes(policy['pcrs'])}   replayed from the event log: "
          f"{_indexes(policy['log_pcrs'])}")  # fmt: skip
    for title, table in (
        ("golden values", policy["golden"]),
        ("allowed events", policy["allowed_events"]),
    ):
        if not table:
            print(f"{title}: none")
            continue
        print(f"{title}:")
        for pcr, digests in table.items():
            for digest in digests:
                print(f"  PCR {pcr}: {digest}")
    every = f"every {info.interval_seconds:g} s" if info.interval_seconds else "on each connection"
    print(f"TPM nodes attest {every}")


def _indexes(values: list[int]) -> str:
    return ",".join(str(v) for v in values) or "none"


def _policy_show(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import admin_pb2

    info = ask_controller(args, "GetAttestationPolicy", admin_pb2.GetAttestationPolicyRequest())
    if args.json:
        print_json(_as_doc(info))
    else:
        _show_text(info)
    return 0


def _policy_set(args: argparse.Namespace) -> int:
    from controller_api.attestation import AttestationPolicy
    from controller_api.gen.lispmesh.v1 import admin_pb2

    path = Path(args.file)
    try:
        text = path.read_text()
    except OSError as exc:
        raise CliError(f"attestation policy {path}: {exc.strerror}") from None
    except ValueError:
        raise CliError(f"attestation policy {path}: not UTF-8 text") from None
    try:
        AttestationPolicy.from_json(text, str(path))  # the same check the controller makes
    except ValueError as exc:
        raise CliError(str(exc)) from None
    request = admin_pb2.SetAttestationPolicyRequest(policy_json=text, filename=str(path))
    info = ask_controller(args, "SetAttestationPolicy", request)
    if args.json:
        print_json(_as_doc(info))
    else:
        policy = json.loads(info.policy_json)
        golden = ",".join(str(p) for p in policy["golden"]) or "none"
        print(f"attestation policy set from {path}: PCRs {_indexes(policy['pcrs'])} quoted, "
              f"golden values for PCRs {golden}")  # fmt: skip
    return 0


def register(sub: Subparsers) -> None:
    """Under `lispmesh controller`."""
    _, attestation = group(sub, "attestation", "TPM attestation: the policy nodes are held to")
    _, policy = group(attestation, "policy", "golden PCR values and allowed events: set, show")
    show = policy.add_parser("show", help="the policy in force, and where it comes from")
    add_controller_target(show)
    show.set_defaults(handler=_policy_show)
    set_ = policy.add_parser("set", help="replace the policy (JSON file; stored by the controller)")
    set_.add_argument("file", help="the policy document (see `show --json`, key policy)")
    add_controller_target(set_)
    set_.set_defaults(handler=_policy_set)
