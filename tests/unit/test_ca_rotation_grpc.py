"""A CA rotation through the real controller over gRPC/TLS on 127.0.0.1 (no root): the bundle
reaches every connected node before the new CA issues, renewed and new nodes get new-CA
certificates, a token made before the rotation still joins, and the finish is refused while a
live node holds an old-CA certificate, then drops the old CA everywhere (mTLS included)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from certs.files import read_ca_bundle
from common.ca_trust import ca_fingerprint
from controller_api.client import ControllerRefused, aio_channel, credentials, fetch_pinned_ca
from controller_api.gen.lispmesh.v1 import admin_pb2, config_pb2, config_pb2_grpc
from controller_api.offline import create_token
from controller_api.tokens import parse_token
from node import trust
from node.renewal import renew_certificate
from node.state import StateDir
from tests.controller_harness import Running


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


def _creds(state: StateDir) -> Any:
    return credentials(state.ca.read_bytes(), state.cert.read_bytes(), state.key.read_bytes())


class Stream:
    """A node's Watch stream, read one desired state at a time (bounded waits)."""

    def __init__(self, ctl: Running, state: StateDir) -> None:
        self.ctl, self.state = ctl, state

    async def open(self) -> config_pb2.DesiredState:
        self.channel = aio_channel(self.ctl.controller.api_address, _creds(self.state))
        await self.channel.__aenter__()
        self.stub = config_pb2_grpc.NodeConfigStub(self.channel)
        self.call = self.stub.Watch(config_pb2.WatchRequest())
        self.it: AsyncIterator[config_pb2.DesiredState] = self.call.__aiter__()
        return await self.next()

    async def next(self) -> config_pb2.DesiredState:
        return await asyncio.wait_for(self.it.__anext__(), 10)

    async def take(self, desired: config_pb2.DesiredState) -> None:
        """What the agent does: take the bundle, then acknowledge the version."""
        trust.update_bundle(self.state, desired)
        await self.stub.Ack(config_pb2.AckRequest(version=desired.version, ok=True), timeout=5)

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.__aexit__(None, None, None)


def _status(ctl: Running) -> admin_pb2.CaStatus:
    return ctl.admin("GetCaStatus", admin_pb2.CaStatusRequest())


def _rotate(ctl: Running, **kw: bool) -> admin_pb2.CaStatus:
    return ctl.admin("RotateCa", admin_pb2.RotateCaRequest(**kw))


def _issuer(state: StateDir) -> str:
    cert = x509.load_pem_x509_certificate(state.cert.read_bytes())
    ca = trust.issued_by_any(cert, read_ca_bundle(state.ca))
    assert ca is not None
    return ca_fingerprint(ca)


def _ack_code(ctl: Running, creds: Any) -> grpc.StatusCode:
    async def call() -> None:
        async with aio_channel(ctl.controller.api_address, creds) as channel:
            stub = config_pb2_grpc.NodeConfigStub(channel)
            await stub.Ack(config_pb2.AckRequest(version=0, ok=True), timeout=5)

    try:
        ctl.loop.run_until_complete(call())
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_rotate_switch_renew_finish(ctl: Running, tmp_path: Path) -> None:
    run = ctl.loop.run_until_complete
    a, b = StateDir(tmp_path / "a"), StateDir(tmp_path / "b")
    ctl.enroll(a, ctl.token())
    ctl.enroll(b, ctl.token())
    early_token = ctl.token()  # made before the rotation: pins the old CA
    (old_fp,) = [c.fingerprint for c in _status(ctl).cas]
    assert parse_token(early_token).ca_pin == old_fp
    streams = [Stream(ctl, a), Stream(ctl, b)]
    first = [run(s.open()) for s in streams]
    for s, d in zip(streams, first, strict=True):
        assert d.issuing_ca == old_fp and d.ca_bundle_pem.count(b"BEGIN") == 1
        run(s.take(d))
    old_cert_b, old_key_b = b.cert.read_bytes(), b.key.read_bytes()

    # Rotate: the new CA is trusted by every desired state, but does not issue yet.
    reply = _rotate(ctl)
    assert reply.phase == "distributing" and reply.nodes_without_bundle == 2
    new_fp = next(c.fingerprint for c in reply.cas if c.fingerprint != old_fp)
    assert [c.cross_signed_by for c in reply.cas if c.fingerprint == new_fp] == [old_fp]
    assert [c.serves_tls for c in reply.cas] == [True, False]  # the old CA serves TLS
    with pytest.raises(grpc.RpcError, match="does not issue yet: 2 connected node"):
        _rotate(ctl, finish=True)
    bundles = [run(s.next()) for s in streams]
    for d in bundles:
        assert d.issuing_ca == old_fp and d.ca_bundle_pem.count(b"BEGIN") == 2
    run(streams[0].take(bundles[0]))
    assert _status(ctl).phase == "distributing"  # b has not taken it yet
    run(streams[1].take(bundles[1]))
    # Every connected node trusts the new CA: it issues now, and every node is told.
    status = _status(ctl)
    assert status.phase == "switching" and status.nodes_on_old_ca == 2
    switched = [run(s.next()) for s in streams]
    assert all(d.issuing_ca == new_fp for d in switched)
    assert all(
        trust.renew_for_new_issuer(s.state, d.issuing_ca)
        for s, d in zip(streams, switched, strict=True)
    )
    for s in streams:
        run(s.close())
    with pytest.raises(grpc.RpcError, match="2 live node"):
        _rotate(ctl, finish=True)

    # A renewal gives a new-CA certificate, accepted over mTLS at once.
    run(renew_certificate(a, "a", ctl.controller.api_address))
    assert _issuer(a) == new_fp and _ack_code(ctl, _creds(a)) == grpc.StatusCode.OK
    assert not trust.renew_for_new_issuer(a, new_fp)
    # A token made before the rotation still joins (it pins the old CA, which serves TLS), and
    # the node trusts both CAs (the new one through its cross-certificate).
    c = StateDir(tmp_path / "c")
    ctl.enroll(c, early_token)
    assert _issuer(c) == new_fp
    assert [ca_fingerprint(x) for x in read_ca_bundle(c.ca)] == [new_fp, old_fp]
    assert _status(ctl).nodes_on_old_ca == 1  # b
    run(renew_certificate(b, "b", ctl.controller.api_address))
    assert _status(ctl).nodes_on_old_ca == 0

    # Finish: the old CA is dropped; the controller's TLS certificate and the admin
    # certificate move to the new CA, and old-CA client certificates are refused.
    done = _rotate(ctl, finish=True)
    assert done.phase == "stable" and [c.fingerprint for c in done.cas] == [new_fp]
    assert [ca_fingerprint(x) for x in read_ca_bundle(ctl.state_dir / "ca.crt")] == [new_fp]
    assert _status(ctl).cas[0].serves_tls  # the admin channel works with the new files
    trust.update_bundle(a, switched[0])  # still both
    stream = Stream(ctl, a)
    final = run(stream.open())
    run(stream.take(final))
    run(stream.close())
    assert [ca_fingerprint(x) for x in read_ca_bundle(a.ca)] == [new_fp]
    assert _ack_code(ctl, _creds(a)) == grpc.StatusCode.OK
    old_b = credentials(a.ca.read_bytes(), old_cert_b, old_key_b)
    assert _ack_code(ctl, old_b) != grpc.StatusCode.OK
    # A token pinning the old CA no longer finds it (make new tokens after the finish).
    late_token = ctl.token()
    assert parse_token(late_token).ca_pin == new_fp
    with pytest.raises(ControllerRefused):
        fetch_pinned_ca(ctl.controller.address, old_fp)
    d = StateDir(tmp_path / "d")
    ctl.enroll(d, late_token)
    assert _issuer(d) == new_fp


def test_rotate_with_no_node_connected_switches_at_once_and_refuses_a_second(
    ctl: Running, tmp_path: Path
) -> None:
    a = StateDir(tmp_path / "a")
    ctl.enroll(a, ctl.token())
    reply = _rotate(ctl)
    assert reply.phase == "switching" and reply.nodes_on_old_ca == 1
    # A token made in the state dir meanwhile pins the CA the controller's TLS still shows.
    token, _ = create_token(ctl.state_dir, 600, 1)
    assert token.ca_pin == next(c.fingerprint for c in reply.cas if c.serves_tls)
    assert not next(c.issuing for c in reply.cas if c.serves_tls)
    b = StateDir(tmp_path / "b")
    ctl.enroll(b, str(token))
    assert _issuer(b) == next(c.fingerprint for c in reply.cas if c.issuing)
    with pytest.raises(grpc.RpcError, match="rotation is in progress"):
        _rotate(ctl)
    forced = _rotate(ctl, finish=True, force=True)
    assert forced.phase == "stable" and forced.nodes_on_old_ca == 1  # a: it must join again
    with pytest.raises(grpc.RpcError, match="no CA rotation to finish"):
        _rotate(ctl, finish=True)


def test_a_rotation_a_node_never_takes_is_abandoned_at_its_deadline(
    loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    """A node that refuses the new CA's bundle (or never acknowledges it) kept the rotation
    distributing for ever, its status saying only a count. Now the status names the node and
    why, and at the deadline the rotation is abandoned: the old CA alone, as before."""
    ctl = Running(loop, tmp_path / "ctl", ca_distribute_timeout=600.0)
    try:
        run = loop.run_until_complete
        a = StateDir(tmp_path / "a")
        name = ctl.enroll(a, ctl.token()).name
        stream = Stream(ctl, a)
        run(stream.take(run(stream.open())))
        (old_fp,) = [c.fingerprint for c in _status(ctl).cas]
        assert _rotate(ctl).phase == "distributing"
        offered = run(stream.next())
        assert offered.ca_bundle_pem.count(b"BEGIN") == 2
        refusal = "CA bundle refused: CA CN=x is not cross-signed by a CA this node trusts"
        ack = config_pb2.AckRequest(version=offered.version, ok=False, error=refusal)

        async def send_ack() -> None:  # the call object needs the loop running (grpc.aio)
            await stream.stub.Ack(ack, timeout=5)

        run(send_ack())
        waiting = _status(ctl)
        assert waiting.phase == "distributing" and waiting.distribute_deadline
        assert list(waiting.waiting_for) == [f"{name}: refused it: {refusal}"]
        with pytest.raises(grpc.RpcError, match=f"{name}: refused it.*abandoned at"):
            _rotate(ctl, finish=True)
        ctl.clock_offset = 601.0  # past the deadline, the node still connected
        after = _status(ctl)
        assert after.phase == "stable" and [c.fingerprint for c in after.cas] == [old_fp]
        assert "abandoned" in after.last_outcome and name in after.last_outcome
        back = run(stream.next())  # the node is told: the old CA alone
        assert back.ca_bundle_pem.count(b"BEGIN") == 1 and back.issuing_ca == old_fp
        run(stream.close())
    finally:
        ctl.stop()
