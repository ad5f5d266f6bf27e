"""The checkpoint of a TPM node is sealed to the PCRs the controller accepted: it opens after a
restart with the same measurements, is refused (one line naming the PCR) after a change without
stopping the node, and is sealed to the new values once the controller accepts them."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from controller_api.client import aio_channel
from controller_api.gen.lispmesh.v1 import config_pb2
from node.agent import Agent, AgentOptions
from node.checkpoint_seal import CheckpointSeal
from node.node_key import NodeKey
from node.state import StateDir
from node.tpm import Tpm
from tests.controller_harness import Running
from tests.swtpm import Swtpm, boot

SITE_KEY = "site-key-" + "k" * 23
BOOT_PCRS = range(8)


def _desired(version: int = 4) -> config_pb2.DesiredState:
    return config_pb2.DesiredState(
        version=version, node_name="edge", instance_id=7, eid_prefixes=["10.250.3.0/24"],
        map_servers=[config_pb2.MapServer(address="10.77.0.1", port=4342, site_key=SITE_KEY)],
    )  # fmt: skip


def _load(tcti: str, path: Path) -> config_pb2.DesiredState | None:
    """What a freshly started agent gets from its state dir (a new TPM connection)."""
    with Tpm.open(tcti) as tpm:
        return StateDir(path, CheckpointSeal(tpm)).load_checkpoint()


def test_opens_after_a_restart_with_the_same_pcrs_refuses_after_a_change_then_reseals(
    swtpm: Swtpm, booted: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "node"
    with Tpm.open(swtpm.tcti) as tpm:
        state = StateDir(path, CheckpointSeal(tpm))
        state.prepare()
        # Not attested yet: there is no key to seal with, and nothing is written in plain text.
        state.save_checkpoint(_desired())
        assert not state.sealed_checkpoint_file.exists() and not state.checkpoint_file.exists()
        assert state.cipher is not None
        seal = state.cipher
        assert isinstance(seal, CheckpointSeal)
        assert seal.reseal(tpm.pcr_read(BOOT_PCRS)) is True
        assert seal.reseal(tpm.pcr_read(BOOT_PCRS)) is False  # same values: nothing to do
        state.save_checkpoint(_desired())
    blob = state.sealed_checkpoint_file.read_bytes()
    assert state.sealed_checkpoint_file.stat().st_mode & 0o777 == 0o600
    assert SITE_KEY.encode() not in blob and b"10.77.0.1" not in blob

    # A reboot with the same measurements: the checkpoint opens.
    swtpm.restart()
    boot(swtpm.tcti, booted)
    assert _load(swtpm.tcti, path) == _desired()

    # A PCR extended since: refused with one line naming it; the agent goes on without it.
    with Tpm.open(swtpm.tcti) as tpm:
        tpm.pcr_extend(7, b"\x66" * 32)
    with caplog.at_level(logging.WARNING):
        assert _load(swtpm.tcti, path) is None
    lines = [r.getMessage() for r in caplog.records if "checkpoint not opened" in r.getMessage()]
    assert len(lines) == 1 and "PCR 7 changed" in lines[0] and "PCR 0" not in lines[0], lines
    assert "starting without it" in lines[0] and "\n" not in lines[0]
    assert state.sealed_checkpoint_file.exists()  # kept: the old measurements may come back

    # The controller accepted the new measurements: sealed to them, it opens again.
    with Tpm.open(swtpm.tcti) as tpm:
        seal = CheckpointSeal(tpm)
        state = StateDir(path, seal)
        assert seal.reseal(tpm.pcr_read(BOOT_PCRS)) is True
        state.save_checkpoint(_desired(5))
    assert _load(swtpm.tcti, path) == _desired(5)


def test_an_altered_or_planted_checkpoint_is_refused_not_trusted(
    swtpm: Swtpm, booted: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "node"
    with Tpm.open(swtpm.tcti) as tpm:
        seal = CheckpointSeal(tpm)
        state = StateDir(path, seal)
        state.prepare()
        seal.reseal(tpm.pcr_read(BOOT_PCRS))
        state.save_checkpoint(_desired())
    sealed = state.sealed_checkpoint_file
    text = sealed.read_text()
    position = text.index('"ciphertext": "') + len('"ciphertext": "') + 4
    flipped = "0" if text[position] != "0" else "1"
    sealed.write_text(text[:position] + flipped + text[position + 1 :])
    with caplog.at_level(logging.WARNING):
        assert _load(swtpm.tcti, path) is None
    assert "does not decrypt" in caplog.text
    # Whoever can write the disk cannot choose the node's configuration with a plain file.
    sealed.unlink()
    StateDir(path).save_checkpoint(_desired())
    assert _load(swtpm.tcti, path) is None
    assert not state.checkpoint_file.exists() and "plain checkpoint ignored" in caplog.text


def test_the_agent_seals_its_checkpoint_to_the_pcrs_the_controller_accepted(
    ctl: Running, swtpm: Swtpm, booted: Path, tmp_path: Path
) -> None:
    state = StateDir(tmp_path / "node")
    enrollment = ctl.enroll(state, ctl.token(), tpm=swtpm.tcti, event_log=booted, name="edge")
    key = NodeKey.open(state, swtpm.tcti)
    try:
        options = AgentOptions(state_dir=state.path, run_dir=tmp_path / "run", event_log=booted)
        agent = Agent(state, enrollment, options, key)
        agent.desired = _desired()  # as if applied from the controller before this round
        creds = key.channel_credentials(state.ca.read_bytes(), state.cert.read_bytes())

        async def attest() -> None:
            async with aio_channel(enrollment.api_address, creds) as channel:
                await agent._attest(channel)

        ctl.loop.run_until_complete(asyncio.wait_for(attest(), 20))
        assert agent.attestation.startswith("ok at")
        with Tpm.open(swtpm.tcti) as tpm:
            assert agent.seal.sealed_pcrs == tpm.pcr_read(BOOT_PCRS)
    finally:
        key.close()
    assert not state.checkpoint_file.exists()
    assert _load(swtpm.tcti, state.path) == _desired()
