"""Secrets sealed to PCR values: they open again after a reconnect and after a TPM reset with the
same boot measurements, and are refused, naming the PCR, once a measurement differs."""

from __future__ import annotations

import hashlib

import pytest

from node.tpm import SealedSecret, SealRefused, Tpm, TpmError, seal, unseal
from tests.swtpm import Measurement, Swtpm, event_log, measured_boot

SEALED_PCRS = [0, 4, 7]
SECRET = b"checkpoint key \x00\x01\x02" * 2


def boot(kernel: bytes = b"vmlinuz-6.1") -> list[Measurement]:
    return [
        Measurement(0, 0x8, b"firmware 1.0"),
        Measurement(7, 0x80000001, b"SecureBoot enabled"),
        Measurement(4, 0x80000003, b"image load", measured=kernel),
    ]


def test_opens_after_a_reconnect_with_the_same_pcrs(swtpm: Swtpm) -> None:
    with Tpm.open(swtpm.tcti) as tpm:
        measured_boot(tpm, boot())
        stored = seal(tpm, SECRET, SEALED_PCRS).to_bytes()
    with Tpm.open(swtpm.tcti) as tpm:
        assert unseal(tpm, SealedSecret.from_bytes(stored)) == SECRET


def test_opens_after_a_reset_and_the_same_boot_refuses_after_another(swtpm: Swtpm) -> None:
    with Tpm.open(swtpm.tcti) as tpm:
        measured_boot(tpm, boot())
        sealed = seal(tpm, SECRET, SEALED_PCRS)
    swtpm.restart()  # PCRs back to zero; the same measurements bring them back
    with Tpm.open(swtpm.tcti) as tpm:
        measured_boot(tpm, boot())
        assert unseal(tpm, sealed) == SECRET
    swtpm.restart()
    with Tpm.open(swtpm.tcti) as tpm:
        measured_boot(tpm, boot(kernel=b"vmlinuz-evil"))
        with pytest.raises(SealRefused, match="sealed secret refused: PCR 4 changed") as refused:
            unseal(tpm, sealed)
        assert refused.value.pcrs == (4,)


def test_refuses_after_a_pcr_extend_naming_only_the_changed_pcrs(tpm: Tpm) -> None:
    measured_boot(tpm, boot())
    sealed = seal(tpm, SECRET, SEALED_PCRS)
    tpm.pcr_extend(7, hashlib.sha256(b"SecureBoot disabled").digest())
    tpm.pcr_extend(0, hashlib.sha256(b"firmware 0.9").digest())
    with pytest.raises(SealRefused, match=r"PCR 0, 7 changed since it was sealed") as refused:
        unseal(tpm, sealed)
    assert refused.value.pcrs == (0, 7)


def test_resealed_ahead_of_an_update_opens_after_it(swtpm: Swtpm) -> None:
    """Re-sealing for a legitimate update: seal to the values the new boot will produce."""
    update = boot(kernel=b"vmlinuz-6.2")
    expected = event_log(update).replay()
    with Tpm.open(swtpm.tcti) as tpm:
        measured_boot(tpm, boot())
        sealed = seal(tpm, SECRET, SEALED_PCRS, values={i: expected[i] for i in SEALED_PCRS})
        with pytest.raises(SealRefused):
            unseal(tpm, sealed)
    swtpm.restart()
    with Tpm.open(swtpm.tcti) as tpm:
        measured_boot(tpm, update)
        assert unseal(tpm, sealed) == SECRET


def test_bad_input_is_one_clear_error(tpm: Tpm) -> None:
    with pytest.raises(TpmError, match=r"a secret is 1\.\.128 bytes, got 129"):
        seal(tpm, bytes(129), SEALED_PCRS)
    with pytest.raises(TpmError, match="values given for PCRs \\[0\\], not \\[0, 4, 7\\]"):
        seal(tpm, SECRET, SEALED_PCRS, values={0: bytes(32)})
    with pytest.raises(TpmError, match=r"checkpoint\.sealed: not a sealed secret"):
        SealedSecret.from_bytes(b"{not json", where="checkpoint.sealed")
    with pytest.raises(TpmError, match="PCR selection \\[24\\]"):
        seal(tpm, SECRET, [24])
