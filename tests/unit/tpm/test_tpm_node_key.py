"""The node's identity in the TPM, end to end against a real controller on 127.0.0.1: the join
(CSR signed by the TPM), mutual TLS to the controller's API signed through the TPM, key-exchange
proofs, and a state dir copied to a machine with another TPM. Without a TPM: the 0600 file key,
and one warning."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import grpc
import pytest

from certs.files import read_certificate
from controller_api.client import aio_channel
from controller_api.gen.lispmesh.v1 import config_pb2, config_pb2_grpc
from mesh.kx import KxAuthority
from node.node_key import NodeKey, NodeKeyError, tpm_for
from node.state import StateDir
from tests.controller_harness import Running
from tests.swtpm import ManufacturerCA, Swtpm


def _first_desired_state(
    ctl: Running, address: str, creds: grpc.ChannelCredentials
) -> config_pb2.DesiredState:
    async def watch() -> config_pb2.DesiredState:
        async with aio_channel(address, creds) as channel:
            call = config_pb2_grpc.NodeConfigStub(channel).Watch(config_pb2.WatchRequest())
            first: config_pb2.DesiredState = await call.__aiter__().__anext__()
            call.cancel()
            return first

    return ctl.loop.run_until_complete(asyncio.wait_for(watch(), 15))


def test_a_tpm_node_joins_and_signs_tls_and_key_exchanges_in_the_tpm(
    ctl: Running, swtpm: Swtpm, booted: Path, tmp_path: Path
) -> None:
    state = StateDir(tmp_path / "node")
    enrollment = ctl.enroll(state, ctl.token(), tpm=swtpm.tcti, event_log=booted)
    assert (enrollment.identity, enrollment.tpm) == ("tpm", swtpm.tcti)
    # No private key anywhere on disk: the only one that matches the certificate is in the TPM.
    assert not state.key.exists()
    assert state.load_enrollment() == enrollment

    key = NodeKey.open(state, tpm_for(enrollment, None))
    try:
        key.check_certificate(state)
        # Mutual TLS to the controller's API: the handshake's CertificateVerify is the TPM's.
        creds = key.channel_credentials(state.ca.read_bytes(), state.cert.read_bytes())
        desired = _first_desired_state(ctl, enrollment.api_address, creds)
        assert desired.node_name == enrollment.name
        # A key-exchange proof made by the TPM verifies, in software, against the mesh CA.
        kx = KxAuthority.from_files(
            enrollment.name, str(state.key), str(state.cert), str(state.ca), key.private_key
        )
        proof = kx.request_proof(7, 5, 1, b"\x01" * 32, ())
        peer = kx.verify_request(proof, 7, 5, b"\x01" * 32, (), time.monotonic())  # the xTR clock
        assert peer.name == enrollment.name
    finally:
        key.close()


def test_a_state_dir_copied_to_another_tpm_is_refused(
    ctl: Running, swtpm: Swtpm, booted: Path, ca: ManufacturerCA, tmp_path: Path
) -> None:
    state = StateDir(tmp_path / "node")
    enrollment = ctl.enroll(state, ctl.token(), tpm=swtpm.tcti, event_log=booted)
    with Swtpm.start(tmp_path / "other-tpm", ca) as other:
        clone = NodeKey.open(state, other.tcti)
        try:
            with pytest.raises(NodeKeyError, match="certificate of another key than the mesh key"):
                clone.check_certificate(state)
            # A clone that skips the check: its TPM cannot sign for the certificate, so the
            # controller's API does not finish the handshake.
            creds = clone.channel_credentials(state.ca.read_bytes(), state.cert.read_bytes())
            with pytest.raises(grpc.aio.AioRpcError) as err:
                _first_desired_state(ctl, enrollment.api_address, creds)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            clone.close()


def test_without_a_tpm_the_key_is_a_0600_file_and_the_node_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = StateDir(tmp_path / "node")
    state.prepare()
    with caplog.at_level(logging.WARNING, "lispmesh.agent"):
        key = NodeKey.open(state, None, create=True)
    assert key.origin == "file" and state.key.stat().st_mode & 0o777 == 0o600
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no TPM configured" in warnings[0]
    assert NodeKey.open(state, None).public_der() == key.public_der()


def test_a_file_key_node_cannot_silently_switch_to_a_tpm(tmp_path: Path, ctl: Running) -> None:
    state = StateDir(tmp_path / "node")
    enrollment = ctl.enroll(state, ctl.token())
    assert enrollment.identity == "file" and tpm_for(enrollment, None) is None
    with pytest.raises(NodeKeyError, match="joined with a file key: join again"):
        tpm_for(enrollment, "swtpm:port=2321")
    assert (
        read_certificate(state.cert).public_key()
        == NodeKey.open(state, None).private_key.public_key()
    )
