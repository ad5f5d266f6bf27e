"""The TCG crypto-agile event log codec: round trips, replays, and refuses bad input with one
EventLogError naming where (never another exception)."""

from __future__ import annotations

import contextlib
import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller_api.attestation import AttestationPolicy, Event, EventLog, EventLogError
from controller_api.attestation.eventlog import (
    ALG_SHA1,
    ALG_SHA256,
    EV_NO_ACTION,
    EV_SEPARATOR,
)

ALGS = {ALG_SHA1: 20, ALG_SHA256: 32}


def _event(pcr: int, data: bytes, kind: int = 0x0D) -> Event:
    return Event(
        pcr,
        kind,
        {ALG_SHA1: hashlib.sha1(data).digest(), ALG_SHA256: hashlib.sha256(data).digest()},
        data,
    )


LOG = EventLog(
    ALGS,
    (
        _event(0, b"crtm"),
        _event(4, b"grub"),
        _event(4, b"linux"),
        _event(7, bytes(4), EV_SEPARATOR),
    ),
)


def test_round_trip_and_replay() -> None:
    data = LOG.encode()
    assert EventLog.decode(data) == LOG
    pcr4 = hashlib.sha256(bytes(32) + hashlib.sha256(b"grub").digest()).digest()
    pcr4 = hashlib.sha256(pcr4 + hashlib.sha256(b"linux").digest()).digest()
    assert LOG.replay()[4] == pcr4
    assert sorted(LOG.replay()) == [0, 4, 7]


def test_no_action_events_are_not_extended_but_startup_locality_sets_pcr0() -> None:
    locality = Event(
        0, EV_NO_ACTION, {ALG_SHA1: bytes(20), ALG_SHA256: bytes(32)}, b"StartupLocality\x00\x03"
    )
    log = EventLog(ALGS, (locality, _event(0, b"crtm")))
    start = bytes(31) + b"\x03"
    assert log.replay()[0] == hashlib.sha256(start + hashlib.sha256(b"crtm").digest()).digest()


def test_every_truncation_is_an_event_log_error() -> None:
    data = LOG.encode()
    for cut in range(1, len(data)):
        try:
            log = EventLog.decode(data[:cut])
        except EventLogError as exc:
            assert str(exc).startswith("event log:")
        else:  # a cut on an event boundary is a shorter valid log
            assert log.events == LOG.events[: len(log.events)]


def test_bad_headers_and_fields_are_named() -> None:
    data = LOG.encode()
    with pytest.raises(EventLogError, match="not crypto-agile"):
        EventLog.decode(struct.pack("<II", 0, 1) + data[8:])
    with pytest.raises(EventLogError, match="PCR 99"):
        EventLog.decode(data + struct.pack("<III", 99, 1, 0) + struct.pack("<I", 0))
    with pytest.raises(EventLogError, match="digest algorithm 0x0012 not in the header"):
        EventLog.decode(data + struct.pack("<IIIH", 1, 1, 1, 0x12))
    with pytest.raises(EventLogError, match="no SHA-256 digests"):
        EventLog.decode(EventLog({ALG_SHA1: 20}, ()).encode())


@given(st.binary(max_size=400))
def test_garbage_raises_only_event_log_errors(data: bytes) -> None:
    header = EventLog(ALGS, ()).encode()
    with contextlib.suppress(EventLogError):
        EventLog.decode(header + data)


def test_policy_rejects_a_malformed_document() -> None:
    with pytest.raises(ValueError, match=r"policy\.json: "):
        AttestationPolicy.from_json('{"pcrs": [0], "golden": {"0": ["zz"]}}', where="policy.json")
