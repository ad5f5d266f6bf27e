"""The controller over real gRPC/TLS on 127.0.0.1 (no root): pinned first contact, mutual TLS,
admin authentication, the Watch stream and its revocation, readable connection errors."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs.format import EID_EXTENSION_OID
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
from controller_api.pki import make_csr
from controller_api.settings import rfc3339
from node.agent import Agent, AgentOptions
from node.enroll import EnrollError, enroll
from node.node_key import NodeKey
from node.renewal import RenewalError, renew_certificate
from node.state import StateDir
from tests.controller_harness import Running, free_port


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


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
    port = free_port()
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


def test_a_node_cannot_pile_up_watch_streams(ctl: Running, tmp_path: Path) -> None:
    # The attack: one enrolled node (or a thief of its key) opens Watch stream after stream,
    # each holding a server task that rebuilds its desired state every config cycle. Only the
    # newest max_watch_streams (2) stay; the older ones are ended, and the newest still work.
    state = StateDir(tmp_path / "node")
    enrollment = ctl.enroll(state, ctl.token())
    creds = credentials(state.ca.read_bytes(), state.cert.read_bytes(), state.key.read_bytes())
    core = ctl.controller.core
    assert core is not None

    async def scenario() -> tuple[list[grpc.StatusCode], int, bool]:
        async with aio_channel(enrollment.api_address, creds) as channel:
            stub = config_pb2_grpc.NodeConfigStub(channel)
            calls = []
            for _ in range(6):
                call = stub.Watch(config_pb2.WatchRequest())
                await call.__aiter__().__anext__()  # its first desired state: the stream is live
                calls.append(call)
            ended = []
            for call in calls[:4]:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await asyncio.wait_for(call.__aiter__().__anext__(), 10)
                ended.append(err.value.code())
            open_now = core.streams[enrollment.node_id]
            # The two newest are still served: a revocation reaches them.
            await asyncio.to_thread(ctl_admin_revoke, ctl, enrollment.name)
            newest = await asyncio.wait_for(calls[-1].__aiter__().__anext__(), 10)
            for call in calls[4:]:
                call.cancel()
            return ended, open_now, newest.revoked

    ended, open_now, revoked_seen = ctl.loop.run_until_complete(scenario())
    assert ended == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 4
    assert open_now == 2 and revoked_seen


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
    from certs.files import read_private_key

    key = read_private_key(state.key)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    db = (ctl.state_dir / "controller.db").read_bytes()
    wal = ctl.state_dir / "controller.db-wal"
    blob = db + (wal.read_bytes() if wal.exists() else b"")
    assert state.key.read_bytes().split(b"\n")[1] not in blob


# ---------------------------------------------------------------------------- renewal


def _node_creds(state: StateDir, cert: bytes | None = None, key: bytes | None = None) -> Any:
    return credentials(
        state.ca.read_bytes(), cert or state.cert.read_bytes(), key or state.key.read_bytes()
    )


def _ack(ctl: Running, creds: Any) -> grpc.StatusCode:
    """One authenticated node call: OK or the code it was refused with."""

    async def call() -> None:
        async with aio_channel(ctl.controller.api_address, creds) as channel:
            stub = config_pb2_grpc.NodeConfigStub(channel)
            await stub.Ack(config_pb2.AckRequest(version=0, ok=True), timeout=5)

    try:
        ctl.loop.run_until_complete(call())
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_renewal_gives_a_new_key_and_retires_the_old_certificate_after_the_grace(
    ctl: Running, tmp_path: Path
) -> None:
    state = StateDir(tmp_path / "node")
    enrollment = ctl.enroll(state, ctl.token())
    old_cert, old_key = state.cert.read_bytes(), state.key.read_bytes()
    old = x509.load_pem_x509_certificate(old_cert)
    new = ctl.loop.run_until_complete(
        renew_certificate(state, enrollment.name, enrollment.api_address)
    )
    # A new key (0600) and its certificate, for the same node, in place.
    assert state.key.read_bytes() != old_key and state.key.stat().st_mode & 0o777 == 0o600
    assert state.cert.read_bytes() == new.public_bytes(serialization.Encoding.PEM)
    assert new.public_key() != old.public_key() and new.subject == old.subject
    eids = [c.extensions.get_extension_for_oid(EID_EXTENSION_OID).value for c in (new, old)]
    assert eids[0] == eids[1]  # the same EID prefixes and instance-id
    assert not state.new_key.exists() and not state.new_cert.exists()
    nodes = ctl.admin("ListNodes", admin_pb2.ListNodesRequest()).nodes
    assert nodes[0].cert_not_after == rfc3339(new.not_valid_after_utc.timestamp())
    topology = ctl.admin("GetTopology", admin_pb2.GetTopologyRequest())
    assert topology.nodes[0].node.cert_not_after == nodes[0].cert_not_after
    # The new pair works; the old one still does during the grace period (a node whose answer
    # was lost asks again with it), and is refused once the grace period is over.
    assert _ack(ctl, _node_creds(state)) == grpc.StatusCode.OK
    assert _ack(ctl, _node_creds(state, old_cert, old_key)) == grpc.StatusCode.OK
    core = ctl.controller.core
    assert core is not None
    (row,) = core.store.list_nodes()
    assert list(core.desired_state(row).retired_certificates) == []  # the grace period
    ctl.clock_offset = 601.0
    assert _ack(ctl, _node_creds(state, old_cert, old_key)) == grpc.StatusCode.UNAUTHENTICATED
    assert _ack(ctl, _node_creds(state)) == grpc.StatusCode.OK
    # From then on the peers refuse it too: every node's desired state lists it until it
    # expires (the key exchange refuses it: tests/unit/test_retired_certificate.py).
    old_fp = hashlib.sha256(old.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert list(core.desired_state(row).retired_certificates) == [old_fp]
    ctl.clock_offset = old.not_valid_after_utc.timestamp() - time.time() + 1
    assert list(core.desired_state(row).retired_certificates) == []


def test_renewal_refuses_the_old_key_and_a_revoked_node(ctl: Running, tmp_path: Path) -> None:
    state = StateDir(tmp_path / "node")
    enrollment = ctl.enroll(state, ctl.token())
    key = serialization.load_pem_private_key(state.key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)

    async def renew_with(csr: bytes) -> None:
        async with aio_channel(enrollment.api_address, _node_creds(state)) as channel:
            stub = config_pb2_grpc.NodeConfigStub(channel)
            await stub.Renew(config_pb2.RenewRequest(csr_der=csr), timeout=5)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        ctl.loop.run_until_complete(renew_with(make_csr(key, enrollment.name)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs a new key" in (err.value.details() or "")
    ctl.admin("RevokeNode", admin_pb2.RevokeNodeRequest(node=enrollment.name))
    cert_before = state.cert.read_bytes()
    with pytest.raises(RenewalError, match="revoked"):
        ctl.loop.run_until_complete(
            renew_certificate(state, enrollment.name, enrollment.api_address)
        )
    assert state.cert.read_bytes() == cert_before and not state.new_key.exists()


def test_the_agent_renews_when_due_and_reconnects_with_the_new_certificate(
    loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    # Certificates are back-dated 5 minutes for clock skew, so a 152 s lifetime is due for
    # renewal (2/3 of [now - 300 s, now + 152 s]) about a second after it was issued.
    ctl = Running(loop, tmp_path / "ctl", cert_lifetime=152.0)
    try:
        state = StateDir(tmp_path / "node")
        enrollment = ctl.enroll(state, ctl.token())
        first = state.cert.read_bytes()
        agent = Agent(
            state, enrollment, AgentOptions(state.path, tmp_path / "run"), NodeKey.open(state, None)
        )

        async def until_renewed() -> None:
            task = asyncio.create_task(agent._renewal_loop())
            try:
                await asyncio.wait_for(agent.credentials_changed.wait(), 20)
            finally:
                task.cancel()

        loop.run_until_complete(until_renewed())
        assert state.cert.read_bytes() != first
        renewed = x509.load_pem_x509_certificate(state.cert.read_bytes())
        status = agent.status()
        assert status["cert_not_after"] == rfc3339(renewed.not_valid_after_utc.timestamp())
        assert status["cert_renewal_error"] == ""
        assert _ack(ctl, _node_creds(state)) == grpc.StatusCode.OK
    finally:
        ctl.stop()


def test_the_agent_keeps_retrying_a_renewal_the_controller_refuses(
    loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    ctl = Running(loop, tmp_path / "ctl", cert_lifetime=152.0)
    try:
        state = StateDir(tmp_path / "node")
        enrollment = ctl.enroll(state, ctl.token())
        ctl.admin("RevokeNode", admin_pb2.RevokeNodeRequest(node=enrollment.name))
        first = state.cert.read_bytes()
        options = AgentOptions(state.path, tmp_path / "run", renew_backoff_base=0.05)
        agent = Agent(state, enrollment, options, NodeKey.open(state, None))

        async def until_failed_twice() -> None:
            task = asyncio.create_task(agent._renewal_loop())
            try:
                deadline = loop.time() + 20  # bounded poll on the agent's own state
                while agent.renewal is None or agent.renewal.backoff.attempts < 2:
                    assert loop.time() < deadline, "the agent never retried its renewal"
                    await asyncio.sleep(0.02)
            finally:
                task.cancel()

        loop.run_until_complete(until_failed_twice())
        assert "revoked" in agent.status()["cert_renewal_error"]
        assert state.cert.read_bytes() == first and not agent.credentials_changed.is_set()
    finally:
        ctl.stop()
