"""The operator's view of attestation: `controller attestation policy set|show` changes the golden
values at runtime (stored, so a restarted controller keeps them), a node quarantined by a PCR the
policy does not allow recovers once the operator allows it, bad policy files are one line, and
`node describe` names the EK certificate and the last attestation. The agent's periodic
re-attestation catches a PCR extended while it is connected."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from controller_api.client import aio_channel
from controller_api.gen.lispmesh.v1 import admin_pb2
from lispmesh.cli import main
from node.agent import Agent, AgentOptions, AttestationFailed
from node.node_key import NodeKey
from node.state import StateDir
from node.tpm import Tpm
from tests.controller_harness import Running
from tests.swtpm import ManufacturerCA, Swtpm
from tests.unit.tpm.conftest import controller_trusting
from tests.unit.tpm.test_tpm_join import _attestation_round, _node

# PCR 9 is quoted but outside the boot event log: pinned by golden values only.
APP_PCR = 9
ZERO = bytes(32)
UPDATE = hashlib.sha256(b"agent update 2.1").digest()
AFTER_UPDATE = hashlib.sha256(ZERO + UPDATE).digest()


def _policy(*golden: bytes) -> dict[str, Any]:
    return {
        "pcrs": [*range(8), APP_PCR],
        "log_pcrs": list(range(8)),
        "golden": {str(APP_PCR): [g.hex() for g in golden]},
    }


def _cli(ctl: Running, *argv: str) -> int:
    args = [*argv, "--state-dir", str(ctl.state_dir)]
    return int(ctl.loop.run_until_complete(asyncio.to_thread(main, args)))


def _set(ctl: Running, tmp_path: Path, policy: dict[str, Any]) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    assert _cli(ctl, "controller", "attestation", "policy", "set", str(path)) == 0


def _show(ctl: Running, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert _cli(ctl, "controller", "attestation", "policy", "show", "--json") == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def test_a_policy_set_at_runtime_quarantines_and_then_releases_a_node(
    loop: asyncio.AbstractEventLoop,
    ca: ManufacturerCA,
    swtpm: Swtpm,
    booted: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for ctl in controller_trusting(loop, tmp_path, ca):
        shown = _show(ctl, capsys)
        assert shown["source"] == "default" and shown["policy"]["pcrs"] == list(range(8))
        _set(ctl, tmp_path, _policy(ZERO))
        shown = _show(ctl, capsys)
        assert (shown["source"], shown["set_by"]) == ("set", "admin")
        assert shown["policy"]["golden"] == {"9": [ZERO.hex()]}
        assert _cli(ctl, "controller", "attestation", "policy", "show") == 0
        text = capsys.readouterr().out
        assert "set by admin at" in text and f"  PCR 9: {ZERO.hex()}" in text, text
        assert "TPM nodes attest every 300 s" in text

        state = StateDir(tmp_path / "node")
        ctl.enroll(state, ctl.token(), tpm=swtpm.tcti, event_log=booted, name="edge")
        detail = ctl.admin("DescribeNode", admin_pb2.DescribeNodeRequest(node="edge"))
        assert "TPM manufacturer id:00001014, model swtpm" in detail.node.ek_certificate_subject
        assert detail.node.attestation == "ok" and detail.node.attested_at

        # An update measured into PCR 9 that the policy does not know: quarantined, naming it.
        with Tpm.open(swtpm.tcti) as tpm:
            tpm.pcr_extend(APP_PCR, UPDATE)
        result = _attestation_round(ctl, state, swtpm.tcti, booted)
        assert not result.ok and f"PCR 9 is {AFTER_UPDATE.hex()}, not a golden value" in (
            result.reason
        )
        assert _node(ctl, "edge").state == "quarantined"
        capsys.readouterr()
        assert _cli(ctl, "controller", "node", "describe", "edge") == 0
        described = capsys.readouterr().out
        assert "attestation failed: attestation policy: PCR 9" in described
        assert "EK certificate: CN=unknown; TPM manufacturer" in described

    # A restarted controller still holds the operator's policy (it is in the store) ...
    for ctl in controller_trusting(loop, tmp_path, ca):
        assert _show(ctl, capsys)["policy"]["golden"] == {"9": [ZERO.hex()]}
        # ... and once the operator allows the new value, the node's next round releases it.
        moved = replace(state.load_enrollment(), api_address=ctl.controller.api_address)
        state.save_enrollment(moved)  # the restarted controller listens on other ports
        _set(ctl, tmp_path, _policy(ZERO, AFTER_UPDATE))
        result = _attestation_round(ctl, state, swtpm.tcti, booted)
        assert result.ok, result.reason
        assert _node(ctl, "edge").state != "quarantined"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "bad.json: Expecting property name"),
        ('{"pcrs": [0], "golden_values": {}}', "bad.json: unknown key 'golden_values'"),
        ('{"pcrs": [0, 24]}', "PCRs [24] out of range"),
        ('{"pcrs": [0], "golden": {"0": ["abcd"]}}', "PCR 0: 'abcd' is not a SHA-256 digest"),
        ('{"log_pcrs": [0]}', 'no "pcrs"'),
    ],
)
def test_a_bad_policy_file_is_one_line_and_changes_nothing(
    ctl: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    capsys.readouterr()
    assert _cli(ctl, "controller", "attestation", "policy", "set", str(bad)) != 0
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    # The controller makes the same check (an older or foreign client sends it unchecked).
    with pytest.raises(grpc.RpcError) as refused:
        ctl.admin(
            "SetAttestationPolicy",
            admin_pb2.SetAttestationPolicyRequest(policy_json=content, filename="bad.json"),
        )
    assert "\n" not in str(refused.value.details()) and message in str(refused.value.details())
    assert _show(ctl, capsys)["source"] == "default"
    missing = tmp_path / "missing.json"
    assert _cli(ctl, "controller", "attestation", "policy", "set", str(missing)) != 0
    assert "missing.json: No such file or directory" in capsys.readouterr().err


def test_the_agent_attests_again_while_connected_and_stops_at_a_failed_round(
    ctl: Running, swtpm: Swtpm, booted: Path, tmp_path: Path
) -> None:
    state = StateDir(tmp_path / "node")
    enrollment = ctl.enroll(state, ctl.token(), tpm=swtpm.tcti, event_log=booted, name="edge")
    key = NodeKey.open(state, swtpm.tcti)
    try:
        options = AgentOptions(state_dir=state.path, run_dir=tmp_path / "run", event_log=booted)
        agent = Agent(state, enrollment, options, key)
        creds = key.channel_credentials(state.ca.read_bytes(), state.cert.read_bytes())

        async def session() -> tuple[float, str]:
            async with aio_channel(enrollment.api_address, creds) as channel:
                interval = await agent._attest(channel)
                first = agent.attestation
                with Tpm.open(swtpm.tcti) as tpm:
                    tpm.pcr_extend(7, b"\x66" * 32)  # at runtime, behind the event log's back
                with pytest.raises(AttestationFailed, match="PCR 7"):
                    await agent._attest_every(channel, 0.05)
                return interval, first

        interval, first = ctl.loop.run_until_complete(asyncio.wait_for(session(), 30))
    finally:
        key.close()
    assert interval == 300.0 and first.startswith("ok at")  # the controller's default
    assert agent.attestation.startswith("failed at") and "PCR 7" in agent.attestation
    assert _node(ctl, "edge").state == "quarantined"
