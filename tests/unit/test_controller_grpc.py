"""The controller over real gRPC/TLS on 127.0.0.1 (no root): pinned first contact, mutual TLS,
admin authentication, the Watch stream and its revocation, readable connection errors."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from controller_api.client import (
    ControllerRefused,
    ControllerUnreachable,
    aio_channel,
    credentials,
    explain,
    fetch_pinned_ca,
)
from controller_api.gen.lispmesh.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    config_pb2,
    config_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
)
from controller_api.server import Controller
from controller_api.settings import ControllerSettings
from node.enroll import EnrollError, enroll
from node.state import StateDir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


class Running:
    def __init__(self, loop: asyncio.AbstractEventLoop, state_dir: Path) -> None:
        self.loop = loop
        self.state_dir = state_dir
        port = _free_port()
        self.controller = Controller(
            ControllerSettings(
                state_dir=state_dir, listen_host="127.0.0.1", listen_port=port,
                api_port=_free_port(), map_server_port=0, config_cycle=0.2,
            )
        )  # fmt: skip
        loop.run_until_complete(self.controller.start())

    def admin_creds(self) -> grpc.ChannelCredentials:
        d = self.state_dir
        return credentials(
            (d / "ca.crt").read_bytes(),
            (d / "admin.crt").read_bytes(),
            (d / "admin.key").read_bytes(),
        )

    def admin(self, rpc: str, request: Any, creds: grpc.ChannelCredentials | None = None) -> Any:
        async def call() -> Any:
            async with aio_channel(self.controller.api_address, creds or self.admin_creds()) as ch:
                return await getattr(admin_pb2_grpc.AdminStub(ch), rpc)(request, timeout=5)

        return self.loop.run_until_complete(call())

    def token(self, uses: int = 1, ttl: float = 600) -> str:
        reply = self.admin(
            "CreateToken", admin_pb2.CreateTokenRequest(ttl_seconds=ttl, max_uses=uses)
        )
        return str(reply.token_secret)

    def enroll(self, state: StateDir, token: str) -> Any:
        return self.loop.run_until_complete(
            asyncio.to_thread(enroll, state, self.controller.address, token)
        )

    def stop(self) -> None:
        self.loop.run_until_complete(self.controller.stop())


@pytest.fixture
def ctl(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> Iterator[Running]:
    running = Running(loop, tmp_path / "ctl")
    yield running
    running.stop()


def test_join_with_a_pinned_token_stores_the_identity(ctl: Running, tmp_path: Path) -> None:
    state = StateDir(tmp_path / "node")
    enrollment = ctl.enroll(state, ctl.token())
    assert enrollment.api_address == ctl.controller.api_address
    assert state.key.stat().st_mode & 0o777 == 0o600
    assert state.ca.read_bytes() == (ctl.state_dir / "ca.crt").read_bytes()
    nodes = ctl.admin("ListNodes", admin_pb2.ListNodesRequest()).nodes
    assert [n.name for n in nodes] == [enrollment.name] and nodes[0].state == "enrolled"


def test_a_wrong_pin_is_refused_before_the_secret_is_sent(ctl: Running, tmp_path: Path) -> None:
    with pytest.raises(ControllerRefused, match="does not present the CA the token pins"):
        fetch_pinned_ca(ctl.controller.address, "0" * 64)
    token = ctl.token()
    forged = ".".join([*token.split(".")[:3], "1" * 64])
    with pytest.raises(EnrollError, match="does not present the CA"):
        enroll(StateDir(tmp_path / "n"), ctl.controller.address, forged)


def test_unreachable_controller_is_one_clear_line(tmp_path: Path) -> None:
    port = _free_port()
    with pytest.raises(ControllerUnreachable) as err:
        fetch_pinned_ca(f"127.0.0.1:{port}", "0" * 64)
    assert str(err.value) == f"cannot reach the controller at 127.0.0.1:{port}: connection refused"
    with pytest.raises(EnrollError) as err2:
        enroll(
            StateDir(tmp_path / "n"),
            f"127.0.0.1:{port}",
            "lmj1.0123456789ab." + "A" * 22 + "." + "0" * 64,
        )
    assert err2.value.retry and "connection refused" in str(err2.value)


def test_admin_needs_the_admin_certificate(ctl: Running, tmp_path: Path) -> None:
    # A node certificate is not an admin certificate.
    state = StateDir(tmp_path / "node")
    ctl.enroll(state, ctl.token())
    node_creds = credentials(state.ca.read_bytes(), state.cert.read_bytes(), state.key.read_bytes())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        ctl.admin("ListNodes", admin_pb2.ListNodesRequest(), node_creds)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # No client certificate: the mutual-TLS port does not even finish the handshake.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        ctl.admin("CreateToken", admin_pb2.CreateTokenRequest(), credentials(state.ca.read_bytes()))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # And nothing changed state.
    tokens = ctl.admin("ListTokens", admin_pb2.ListTokensRequest()).tokens
    assert len(tokens) == 1


def test_watch_streams_the_desired_state_then_revocation(ctl: Running, tmp_path: Path) -> None:
    state = StateDir(tmp_path / "node")
    enrollment = ctl.enroll(state, ctl.token())
    creds = credentials(state.ca.read_bytes(), state.cert.read_bytes(), state.key.read_bytes())

    async def scenario() -> tuple[list[config_pb2.DesiredState], grpc.aio.AioRpcError | None]:
        got: list[config_pb2.DesiredState] = []
        async with aio_channel(enrollment.api_address, creds) as channel:
            stub = config_pb2_grpc.NodeConfigStub(channel)
            status = status_pb2_grpc.StatusStub(channel)
            call = stub.Watch(config_pb2.WatchRequest())
            stream: AsyncIterator[config_pb2.DesiredState] = call.__aiter__()
            got.append(await stream.__anext__())
            await stub.Ack(config_pb2.AckRequest(version=got[0].version, ok=True), timeout=5)
            await status.Report(status_pb2.StatusReport(map_cache_size=3), timeout=5)
            revoke = asyncio.create_task(asyncio.to_thread(
                ctl_admin_revoke, ctl, enrollment.name))  # fmt: skip
            try:
                async for desired in stream:
                    got.append(desired)
            except grpc.aio.AioRpcError as exc:
                await revoke
                return got, exc
        return got, None

    got, error = ctl.loop.run_until_complete(asyncio.wait_for(scenario(), 20))
    first = got[0]
    assert first.node_name == enrollment.name and list(first.eid_prefixes) == list(
        enrollment.eid_prefixes
    )
    assert first.map_servers[0].site_key and not first.revoked
    assert got[-1].revoked and got[-1].version > first.version
    assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "was revoked at" in (error.details() or "")


def test_watch_with_the_current_version_still_opens_the_stream(
    ctl: Running, tmp_path: Path
) -> None:
    # A node restarted from its checkpoint asks with the version it already has: nothing to send.
    # The stream must still open (initial metadata), or the agent waits in wait_for_connection()
    # until the next change and never reports itself connected (found by a random test order).
    state = StateDir(tmp_path / "node")
    enrollment = ctl.enroll(state, ctl.token())
    creds = credentials(state.ca.read_bytes(), state.cert.read_bytes(), state.key.read_bytes())

    async def scenario() -> int:
        async with aio_channel(enrollment.api_address, creds) as channel:
            stub = config_pb2_grpc.NodeConfigStub(channel)
            first = stub.Watch(config_pb2.WatchRequest())
            current = (await first.__aiter__().__anext__()).version
            first.cancel()
            again = stub.Watch(config_pb2.WatchRequest(known_version=current))
            await asyncio.wait_for(again.wait_for_connection(), 10)
            again.cancel()
            return current

    assert ctl.loop.run_until_complete(scenario()) >= 1


def ctl_admin_revoke(ctl: Running, name: str) -> None:
    # Called once the stream has delivered its first desired state, so the stream is live.
    creds = ctl.admin_creds()
    with grpc.secure_channel(
        ctl.controller.api_address, creds,
        options=[("grpc.ssl_target_name_override", "controller.lispmesh")],
    ) as channel:  # fmt: skip
        admin_pb2_grpc.AdminStub(channel).RevokeNode(
            admin_pb2.RevokeNodeRequest(node=name), timeout=5
        )


def test_revoked_node_is_refused_everywhere(ctl: Running, tmp_path: Path) -> None:
    state = StateDir(tmp_path / "node")
    enrollment = ctl.enroll(state, ctl.token())
    ctl.admin("RevokeNode", admin_pb2.RevokeNodeRequest(node=enrollment.name))
    creds = credentials(state.ca.read_bytes(), state.cert.read_bytes(), state.key.read_bytes())

    async def report() -> None:
        async with aio_channel(enrollment.api_address, creds) as channel:
            await status_pb2_grpc.StatusStub(channel).Report(status_pb2.StatusReport(), timeout=5)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        ctl.loop.run_until_complete(report())
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    error = explain(err.value, "x")
    assert "revoked" in str(error)
    detail = ctl.admin("DescribeNode", admin_pb2.DescribeNodeRequest(node=enrollment.name))
    assert detail.node.state == "revoked"


def test_restart_keeps_ca_tokens_and_nodes(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    first = Running(loop, tmp_path / "ctl")
    token = first.token(uses=2)
    first.enroll(StateDir(tmp_path / "a"), token)
    pin = first.controller.pin
    first.stop()
    second = Running(loop, tmp_path / "ctl")
    try:
        assert second.controller.pin == pin
        second.enroll(StateDir(tmp_path / "b"), token)  # the second use of the same token
        nodes = second.admin("ListNodes", admin_pb2.ListNodesRequest()).nodes
        assert len(nodes) == 2 and len({n.eid_prefixes[0] for n in nodes}) == 2
    finally:
        second.stop()


def test_node_key_is_never_sent(ctl: Running, tmp_path: Path) -> None:
    state = StateDir(tmp_path / "node")
    ctl.enroll(state, ctl.token())
    from mesh.identity import read_private_key

    key = read_private_key(state.key)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    db = (ctl.state_dir / "controller.db").read_bytes()
    wal = ctl.state_dir / "controller.db-wal"
    blob = db + (wal.read_bytes() if wal.exists() else b"")
    assert state.key.read_bytes().split(b"\n")[1] not in blob
