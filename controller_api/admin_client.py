"""The admin side of the API for a person or a script: an mTLS channel with the admin
certificate, one call per command, failures as one line.

The admin certificate, the CA and the controller's address are read from the controller's state
dir (`admin.crt`, `admin.key`, `ca.crt`, `controller.json`) unless given explicitly, so on the
controller machine `lispmesh controller node list` just works.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from common.errors import LispmeshError
from controller_api.client import ControllerUnreachable, credentials, explain, sync_channel
from controller_api.gen.lispmesh.v1 import admin_pb2_grpc, apps_pb2_grpc, policy_pb2_grpc
from controller_api.server import read_info

RPC_TIMEOUT = 10.0

# The admin services, by the name a caller gives (the generated stubs are untyped).
SERVICES: dict[str, Any] = {
    "Admin": admin_pb2_grpc.AdminStub,
    "PolicyAdmin": policy_pb2_grpc.PolicyAdminStub,
    "AppAdmin": apps_pb2_grpc.AppAdminStub,
}


class AdminError(LispmeshError):
    """One line for the operator: the controller refused the call."""


class AdminUnreachable(AdminError):
    """The controller, or the admin files needed to reach it, cannot be used (one line)."""


@dataclass(frozen=True)
class AdminTarget:
    address: str
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AdminUnreachable(
            f"cannot read the {what} {path}: {exc.strerror} (run on the controller machine, "
            "or give --admin-cert/--admin-key/--ca-cert)"
        ) from None


def resolve_target(
    state_dir: Path,
    controller: str | None,
    admin_cert: str | None,
    admin_key: str | None,
    ca_cert: str | None,
) -> AdminTarget:
    info = read_info(state_dir)
    address = controller or info.get("api_address") or "127.0.0.1:7444"
    return AdminTarget(
        address=address,
        ca_pem=_read(Path(ca_cert) if ca_cert else state_dir / "ca.crt", "controller CA"),
        cert_pem=_read(Path(admin_cert) if admin_cert else state_dir / "admin.crt", "admin cert"),
        key_pem=_read(Path(admin_key) if admin_key else state_dir / "admin.key", "admin key"),
    )


def call(target: AdminTarget, service: str, rpc: str, request: Any) -> Any:
    """`service.rpc(request)` over a fresh channel: the reply, AdminUnreachable when the
    controller cannot be reached, AdminError when it refuses."""
    creds = credentials(target.ca_pem, target.cert_pem, target.key_pem)
    with sync_channel(target.address, creds) as channel:
        stub = SERVICES[service](channel)
        try:
            return getattr(stub, rpc)(request, timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            error = explain(exc, target.address)
            if isinstance(error, ControllerUnreachable):
                raise AdminUnreachable(str(error)) from None
            raise AdminError(str(error)) from None
