"""The checked-in stubs (controller_api/gen) are exactly what the .proto files generate."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller_api import codegen

pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) regenerates the stubs")


def test_generated_stubs_match_the_proto_files(tmp_path: Path) -> None:
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in codegen.generate(tmp_path)}
    checked_in = {
        p.relative_to(codegen.GEN_ROOT): p.read_bytes()
        for p in codegen.GEN_ROOT.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    stale = sorted(
        str(p) for p in set(fresh) | set(checked_in) if fresh.get(p) != checked_in.get(p)
    )
    assert not stale, (
        f"controller_api/gen is out of date with controller_api/proto ({', '.join(stale)}): "
        f"run `{codegen.REGENERATE}` and commit the result"
    )


def test_every_service_is_generated() -> None:
    from controller_api.gen.lispmesh.v1 import (
        admin_pb2_grpc,
        config_pb2_grpc,
        enrollment_pb2_grpc,
        status_pb2_grpc,
    )

    for module, service in [(enrollment_pb2_grpc, "Enrollment"), (config_pb2_grpc, "NodeConfig"),
                            (status_pb2_grpc, "Status"), (admin_pb2_grpc, "Admin")]:  # fmt: skip
        assert hasattr(module, f"{service}Stub") and hasattr(module, f"{service}Servicer")
