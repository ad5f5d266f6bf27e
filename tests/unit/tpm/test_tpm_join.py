"""Enrollment bound to the TPM and attestation rounds, node (swtpm) against a real controller on
127.0.0.1: the EK chain, credential activation, the certified mesh key and a quote at the join;
a token that requires a TPM; a name bound to another TPM; an EK from another manufacturer; a PCR
extended after boot quarantines the node until it attests again; renewal keeps the TPM key."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from controller_api.client import aio_channel
from controller_api.gen.lispmesh.v1 import (
    admin_pb2,
    attestation_pb2,
    attestation_pb2_grpc,
    config_pb2,
    config_pb2_grpc,
)
from controller_api.pki import make_csr
from node.enroll import EnrollError
from node.node_key import NodeKey
from node.renewal import RenewalError, renew_certificate
from node.state import StateDir
from node.tpm import Tpm
from node.tpm_evidence import TpmWitness
from tests.controller_harness import Running
from tests.swtpm import ManufacturerCA, Swtpm, boot
from tests.unit.tpm.conftest import controller_trusting

REQUIRE_TPM = ("tpm:required",)


def _node(ctl: Running, name: str) -> Any:
    nodes = ctl.admin("ListNodes", admin_pb2.ListNodesRequest(include_revoked=True)).nodes
    return next(n for n in nodes if n.name == name)


def _attestation_round(ctl: Running, state: StateDir, tcti: str, log_file: Path) -> Any:
    """What the agent does on each connection: Challenge, quote, Attest (mutual TLS)."""
    key = NodeKey.open(state, tcti)
    try:
        witness = TpmWitness(key.tpm, key.mesh, log_file)
        creds = key.channel_credentials(state.ca.read_bytes(), state.cert.read_bytes())

        async def attest() -> Any:
            address = state.load_enrollment().api_address
            async with aio_channel(address, creds) as channel:
                stub = attestation_pb2_grpc.AttestationStub(channel)
                challenge = await stub.Challenge(attestation_pb2.AttestationChallengeRequest())
                quote = await asyncio.to_thread(witness.quote, challenge.nonce, challenge.pcrs)
                return await stub.Attest(quote, timeout=10)

        return ctl.loop.run_until_complete(asyncio.wait_for(attest(), 20))
    finally:
        key.close()


def _watch_error(ctl: Running, state: StateDir, tcti: str) -> grpc.aio.AioRpcError | None:
    key = NodeKey.open(state, tcti)
    try:
        creds = key.channel_credentials(state.ca.read_bytes(), state.cert.read_bytes())

        async def watch() -> grpc.aio.AioRpcError | None:
            async with aio_channel(state.load_enrollment().api_address, creds) as channel:
                call = config_pb2_grpc.NodeConfigStub(channel).Watch(config_pb2.WatchRequest())
                try:
                    await call.__aiter__().__anext__()
                except grpc.aio.AioRpcError as exc:
                    return exc
                call.cancel()
                return None

        return ctl.loop.run_until_complete(asyncio.wait_for(watch(), 20))
    finally:
        key.close()


def test_a_tpm_node_joins_attested_and_a_pcr_extended_later_quarantines_it(
    ctl: Running, swtpm: Swtpm, booted: Path, tmp_path: Path
) -> None:
    state = StateDir(tmp_path / "node")
    enrollment = ctl.enroll(
        state, ctl.token(tags=REQUIRE_TPM), tpm=swtpm.tcti, event_log=booted, name="edge"
    )
    node = _node(ctl, enrollment.name)
    assert (node.identity, node.attestation, node.state) == ("tpm", "ok", "enrolled")
    assert "swtpm-localca" in node.ek_subject and node.attested_at
    # The agent's round on connection: accepted, and the desired state flows.
    result = _attestation_round(ctl, state, swtpm.tcti, booted)
    assert result.ok, result.reason
    assert _watch_error(ctl, state, swtpm.tcti) is None

    # Something extends PCR 7 behind the event log's back (a changed Secure Boot state, a
    # bootkit): the next round fails, naming the PCR, and the node is quarantined.
    with Tpm.open(swtpm.tcti) as tpm:
        tpm.pcr_extend(7, b"\x66" * 32)
    result = _attestation_round(ctl, state, swtpm.tcti, booted)
    assert not result.ok and "PCR 7" in result.reason and "event log replays" in result.reason
    node = _node(ctl, enrollment.name)
    assert node.state == "quarantined" and node.attestation.startswith("failed: PCR 7")
    error = _watch_error(ctl, state, swtpm.tcti)
    assert error is not None and error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "quarantined" in (error.details() or "")
    # The other nodes drop its keys as they do a revoked node's.
    other = StateDir(tmp_path / "other")
    ctl.enroll(other, ctl.token())
    other_key = NodeKey.open(other, None)
    creds = other_key.channel_credentials(other.ca.read_bytes(), other.cert.read_bytes())

    async def first_state() -> config_pb2.DesiredState:
        async with aio_channel(other.load_enrollment().api_address, creds) as channel:
            call = config_pb2_grpc.NodeConfigStub(channel).Watch(config_pb2.WatchRequest())
            desired: config_pb2.DesiredState = await call.__aiter__().__anext__()
            call.cancel()
            return desired

    desired = ctl.loop.run_until_complete(asyncio.wait_for(first_state(), 20))
    assert enrollment.name in desired.revoked_nodes

    # Once the TPM is healthy again (a reboot with the same measurements) it attests and is out.
    swtpm.restart()
    boot(swtpm.tcti, booted)
    result = _attestation_round(ctl, state, swtpm.tcti, booted)
    assert result.ok, result.reason
    assert _node(ctl, enrollment.name).attestation == "ok"
    assert _watch_error(ctl, state, swtpm.tcti) is None


def test_a_token_for_tpm_nodes_refuses_a_node_without_one(ctl: Running, tmp_path: Path) -> None:
    with pytest.raises(EnrollError, match="enrolls TPM-backed nodes only"):
        ctl.enroll(StateDir(tmp_path / "node"), ctl.token(tags=REQUIRE_TPM))
    assert ctl.admin("ListNodes", admin_pb2.ListNodesRequest()).nodes == []


def test_an_instance_id_for_tpm_nodes_refuses_a_node_without_one_whatever_its_token(
    loop: asyncio.AbstractEventLoop,
    swtpm: Swtpm,
    booted: Path,
    ca: ManufacturerCA,
    tmp_path: Path,
) -> None:
    ca_file = tmp_path / "tpm-ca.pem"
    ca_file.write_bytes(ca.pem())
    ctl = Running(loop, tmp_path / "ctl", tpm_ca=ca_file, tpm_required_iids=(7,))
    try:
        token = ctl.token(uses=3, tags=("iid:7",))  # the token itself does not ask for a TPM
        with pytest.raises(EnrollError, match="instance-id 7 admits TPM-backed nodes only"):
            ctl.enroll(StateDir(tmp_path / "file-node"), token, name="plain")
        assert ctl.admin("ListNodes", admin_pb2.ListNodesRequest()).nodes == []
        enrollment = ctl.enroll(
            StateDir(tmp_path / "tpm-node"), token, tpm=swtpm.tcti, event_log=booted, name="edge"
        )
        node = _node(ctl, enrollment.name)
        assert (node.identity, node.instance_id) == ("tpm", 7)
        # Other instance-ids are not affected: a file-key node joins the default one.
        other = ctl.enroll(StateDir(tmp_path / "other"), ctl.token(), name="office")
        assert _node(ctl, other.name).identity == "file"
    finally:
        ctl.stop()


def test_a_name_bound_to_one_tpm_is_refused_from_another_and_kept_by_its_own(
    ctl: Running, swtpm: Swtpm, booted: Path, ca: ManufacturerCA, tmp_path: Path
) -> None:
    token = ctl.token(uses=5, tags=REQUIRE_TPM)
    first = ctl.enroll(
        StateDir(tmp_path / "a"), token, tpm=swtpm.tcti, event_log=booted, name="edge"
    )
    with Swtpm.start(tmp_path / "other-tpm", ca) as other:
        other_log = tmp_path / "other.log"
        boot(other.tcti, other_log)
        with pytest.raises(EnrollError, match="node edge is bound to another TPM"):
            ctl.enroll(
                StateDir(tmp_path / "b"), token, tpm=other.tcti, event_log=other_log, name="edge"
            )
    # The same TPM joining again (its disk wiped) gets its node back, with a new certificate.
    again = ctl.enroll(StateDir(tmp_path / "c"), token, tpm=swtpm.tcti, event_log=booted)
    assert (again.node_id, again.name) == (first.node_id, "edge")
    nodes = ctl.admin("ListNodes", admin_pb2.ListNodesRequest()).nodes
    assert [n.name for n in nodes] == ["edge"]


def test_an_ek_certificate_from_another_manufacturer_is_refused(
    loop: asyncio.AbstractEventLoop, swtpm: Swtpm, booted: Path, tmp_path: Path
) -> None:
    stranger = ManufacturerCA.create(tmp_path / "other-ca")
    for running in controller_trusting(loop, tmp_path, stranger):
        with pytest.raises(EnrollError, match="does not chain to a trusted TPM manufacturer CA"):
            running.enroll(
                StateDir(tmp_path / "node"), running.token(), tpm=swtpm.tcti, event_log=booted
            )


def test_a_node_without_an_event_log_fails_the_default_policy(
    ctl: Running, swtpm: Swtpm, tmp_path: Path
) -> None:
    with pytest.raises(EnrollError, match="sent no event log"):
        ctl.enroll(
            StateDir(tmp_path / "node"), ctl.token(), tpm=swtpm.tcti, event_log=tmp_path / "none"
        )


def test_a_tpm_node_renews_keeping_its_tpm_key_and_never_onto_another_key(
    ctl: Running, swtpm: Swtpm, booted: Path, tmp_path: Path
) -> None:
    state = StateDir(tmp_path / "node")
    enrollment = ctl.enroll(
        state, ctl.token(tags=REQUIRE_TPM), tpm=swtpm.tcti, event_log=booted, name="edge"
    )
    first = x509.load_pem_x509_certificate(state.cert.read_bytes())
    address = enrollment.api_address

    def renew(tpm_key: NodeKey) -> x509.Certificate:
        return ctl.loop.run_until_complete(
            asyncio.wait_for(renew_certificate(state, "edge", address, tpm_key), 20)
        )

    key = NodeKey.open(state, swtpm.tcti)
    try:
        renewed = renew(key)
        # A new certificate for the same TPM-resident key, installed; no key file appears.
        assert renewed.serial_number != first.serial_number
        assert renewed.public_key() == first.public_key() == key.private_key.public_key()
        assert x509.load_pem_x509_certificate(state.cert.read_bytes()) == renewed
        assert not state.key.exists()
        assert _node(ctl, enrollment.name).identity == "tpm"

        # The attack: code on the node asks for a certificate for a key of its own (one it
        # could carry away), over the TPM key's mutual TLS. Refused: the TPM never certified it.
        stolen = ec.generate_private_key(ec.SECP256R1())
        creds = key.channel_credentials(state.ca.read_bytes(), state.cert.read_bytes())

        async def renew_onto(other: ec.EllipticCurvePrivateKey) -> None:
            async with aio_channel(address, creds) as channel:
                stub = config_pb2_grpc.NodeConfigStub(channel)
                await stub.Renew(config_pb2.RenewRequest(csr_der=make_csr(other, "edge")))

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            ctl.loop.run_until_complete(asyncio.wait_for(renew_onto(stolen), 20))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "must keep its TPM mesh key" in (refused.value.details() or "")

        # A quarantined node (a PCR extended behind the event log's back) renews nothing.
        with Tpm.open(swtpm.tcti) as tpm:
            tpm.pcr_extend(7, b"\x66" * 32)
        assert not _attestation_round(ctl, state, swtpm.tcti, booted).ok
        with pytest.raises(RenewalError, match="quarantined"):
            renew(key)
    finally:
        key.close()
