"""Remote attestation, swtpm against the software verifier: a quote over the boot PCRs plus a
synthetic measured-boot event log (written here with the matching PCR extends), appraised against
a policy; each attack below is a clear refusal naming what failed."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from controller_api.attestation import (
    AttestationPolicy,
    AttestationRefused,
    EventLog,
    PolicyViolation,
    Quote,
    VerifiedQuote,
    appraise,
    check_attestation_key,
)
from controller_api.attestation.eventlog import EV_EFI_VARIABLE_DRIVER_CONFIG, EV_SEPARATOR
from lispmesh.waiting import wait_until
from node.tpm import AttestationKey, Tpm
from tests.swtpm import Measurement, event_log, measured_boot

EV_S_CRTM_VERSION = 0x00000008
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
BOOT_APPS = (b"shimx64.efi", b"grubx64.efi", b"vmlinuz-6.1.0")
BOOT_PCRS = list(range(8))


EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")


def uefi_variable(name: str, value: bytes) -> bytes:
    """UEFI_VARIABLE_DATA, the event data of EV_EFI_VARIABLE_DRIVER_CONFIG."""
    unicode_name = name.encode("utf-16-le")
    return (
        EFI_GLOBAL_VARIABLE.bytes_le
        + struct.pack("<QQ", len(name), len(value))
        + unicode_name
        + value
    )


def image_load_event() -> bytes:
    """UEFI_IMAGE_LOAD_EVENT with an empty device path (just the end node)."""
    return struct.pack("<QQQQ", 0x7E000000, 0x100000, 0, 4) + b"\x7f\xff\x04\x00"


def boot_measurements(
    apps: tuple[bytes, ...] = BOOT_APPS, secure_boot: bytes = b"\x01"
) -> list[Measurement]:
    """A UEFI-like boot: CRTM version, the Secure Boot state in PCR 7, separators on PCRs 0-7 and
    the boot applications (their images measured) in PCR 4."""
    measurements = [
        Measurement(0, EV_S_CRTM_VERSION, "1.0".encode("utf-16-le")),
        Measurement(7, EV_EFI_VARIABLE_DRIVER_CONFIG, uefi_variable("SecureBoot", secure_boot)),
    ]
    measurements += [Measurement(pcr, EV_SEPARATOR, bytes(4)) for pcr in BOOT_PCRS]
    measurements += [
        Measurement(4, EV_EFI_BOOT_SERVICES_APPLICATION, image_load_event(), measured=app)
        for app in apps
    ]
    return measurements


def known_good_policy() -> AttestationPolicy:
    """What an operator records from a known-good boot: the Secure Boot configuration (PCR 7) as
    a golden value, and the boot applications allowed in PCR 4."""
    log = event_log(boot_measurements())
    allowed = {hashlib.sha256(a).digest() for a in (*BOOT_APPS, bytes(4))}
    return AttestationPolicy(
        pcrs=tuple(BOOT_PCRS),
        golden={7: frozenset({log.replay()[7]})},
        allowed_events={4: frozenset(allowed)},
    )


class Node:
    """The node's side of a round: quote the boot PCRs for the verifier's nonce."""

    def __init__(self, tpm: Tpm, measurements: list[Measurement]) -> None:
        self.tpm = tpm
        self.ak = AttestationKey(tpm)
        self.log = measured_boot(tpm, measurements).encode()

    def answer(self, nonce: bytes) -> Quote:
        return self.ak.quote(BOOT_PCRS, nonce)


@pytest.fixture
def node(tpm: Tpm) -> Node:
    return Node(tpm, boot_measurements())


def _round(
    node: Node, policy: AttestationPolicy, previous: VerifiedQuote | None = None
) -> VerifiedQuote:
    nonce = os.urandom(20)
    ak = check_attestation_key(node.ak.public())
    clock = previous.clock if previous else None
    return appraise(node.answer(nonce), ak, nonce, clock, node.log, policy)


def test_a_healthy_boot_attests(node: Node, tmp_path: Path) -> None:
    log = EventLog.decode(node.log)
    appraisal = _round(node, known_good_policy())
    assert appraisal.pcrs == node.tpm.pcr_read(BOOT_PCRS)
    assert appraisal.pcrs[4] == log.replay()[4]
    # tpm2-tools parses the same log to the same PCR values (an independent implementation).
    (tmp_path / "log.bin").write_bytes(node.log)
    out = subprocess.run(
        ["tpm2_eventlog", str(tmp_path / "log.bin")], capture_output=True, check=True, timeout=30
    )
    theirs = yaml.safe_load(out.stdout)["pcrs"]["sha256"]
    assert {int(i): f"{v:064x}" for i, v in theirs.items()} == {
        i: v.hex() for i, v in log.replay().items()
    }


def test_each_round_must_be_newer_than_the_last(node: Node) -> None:
    policy = known_good_policy()
    first = _round(node, policy)
    # Wait (bounded) for the TPM clock to tick past the first quote, as periodic rounds do.
    wait_until(
        lambda: node.tpm.esapi.read_clock().clockInfo.clock > first.clock.clock,
        timeout=5,
        what="the TPM clock to advance",
        interval=0.005,
    )
    second = _round(node, policy, previous=first)
    assert second.clock > first.clock


def test_wrong_nonce_is_refused(node: Node) -> None:
    policy = known_good_policy()
    quote = node.answer(os.urandom(20))
    ak = check_attestation_key(node.ak.public())
    with pytest.raises(AttestationRefused, match="made for another nonce") as refused:
        appraise(quote, ak, os.urandom(20), None, node.log, policy)
    assert refused.value.check == "nonce"


def test_a_replayed_quote_is_refused(node: Node) -> None:
    """Captured evidence answered again, even to a verifier that re-sent the same nonce."""
    policy = known_good_policy()
    nonce = os.urandom(20)
    ak = check_attestation_key(node.ak.public())
    captured = node.answer(nonce)
    accepted = appraise(captured, ak, nonce, None, node.log, policy)
    with pytest.raises(AttestationRefused, match="not after the last accepted quote") as refused:
        appraise(captured, ak, nonce, accepted.clock, node.log, policy)
    assert refused.value.check == "replay"


def test_one_tampered_event_log_entry_is_refused(node: Node) -> None:
    """Hiding a measurement: the log claims the golden digest for an application the TPM measured
    differently."""
    log = EventLog.decode(node.log)
    policy = known_good_policy()
    grub = hashlib.sha256(b"grubx64.efi").digest()
    index = next(i for i, e in enumerate(log.events) if e.digests[0x000B] == grub)
    events = list(log.events)
    digests = dict(events[index].digests)
    digests[0x000B] = hashlib.sha256(b"grubx64.efi signed by us").digest()
    events[index] = dataclasses.replace(events[index], digests=digests)
    node.log = EventLog(log.algorithms, tuple(events)).encode()
    with pytest.raises(
        AttestationRefused, match=r"PCR 4: the TPM quoted .* the event log"
    ) as refused:
        _round(node, policy)
    assert (refused.value.check, refused.value.pcr) == ("event-log-replay", 4)


def test_an_edited_self_describing_event_is_refused_by_index(node: Node) -> None:
    log = EventLog.decode(node.log)
    policy = known_good_policy()
    index = next(
        i for i, e in enumerate(log.events) if e.event_type == EV_EFI_VARIABLE_DRIVER_CONFIG
    )
    events = list(log.events)
    events[index] = dataclasses.replace(events[index], data=uefi_variable("SecureBoot", b"\x00"))
    node.log = EventLog(log.algorithms, tuple(events)).encode()
    with pytest.raises(
        AttestationRefused, match=f"event {index} .*PCR 7.*not the SHA-256 of its data"
    ) as refused:
        _round(node, policy)
    assert (refused.value.pcr, refused.value.event) == (7, index)


def test_a_pcr_extended_after_boot_is_refused(node: Node) -> None:
    policy = known_good_policy()
    node.tpm.pcr_extend(5, hashlib.sha256(b"rootkit").digest())
    with pytest.raises(AttestationRefused, match="PCR 5: the TPM quoted") as refused:
        _round(node, policy)
    assert refused.value.pcr == 5


def test_a_pcr_that_is_not_golden_is_named(tpm: Tpm) -> None:
    node = Node(tpm, boot_measurements(secure_boot=b"\x00"))
    with pytest.raises(PolicyViolation, match=r"PCR 7 is [0-9a-f]+, not a golden") as refused:
        _round(node, known_good_policy())
    assert (refused.value.pcr, refused.value.event) == (7, None)


def test_an_event_not_allowed_is_named(tpm: Tpm) -> None:
    node = Node(tpm, boot_measurements(apps=(*BOOT_APPS, b"evil.efi")))
    log = EventLog.decode(node.log)
    policy = known_good_policy()
    evil_digest = hashlib.sha256(b"evil.efi").digest()
    evil = next(i for i, e in enumerate(log.events) if e.digests[0x000B] == evil_digest)
    with pytest.raises(
        PolicyViolation, match=f"event {evil} \\(PCR 4, type 0x80000003\\)"
    ) as refused:
        _round(node, policy)
    assert (refused.value.pcr, refused.value.event) == (4, evil)
    assert len(refused.value.verdict.failures) == 1


def test_policy_round_trips_through_json(node: Node) -> None:
    policy = known_good_policy()
    assert AttestationPolicy.from_json(policy.to_json()) == policy
    with pytest.raises(ValueError, match="golden names PCRs \\[9\\] that are not quoted"):
        AttestationPolicy(pcrs=(7,), log_pcrs=(), golden={9: frozenset()})
