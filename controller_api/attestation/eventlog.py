"""The measured-boot event log in the TCG crypto-agile format (PC Client Platform Firmware Profile,
TCG_PCR_EVENT2), decoded, encoded and replayed to the PCR values it claims.

Layout, little-endian: one legacy TCG_PCR_EVENT header (SHA-1 sized, EV_NO_ACTION) carrying the
"Spec ID Event03" structure that lists the digest algorithms and sizes, then TCG_PCR_EVENT2 records:
pcrIndex u32, eventType u32, digest count u32, (algId u16, digest)*, eventSize u32, event bytes.
This is what Linux exposes as /sys/kernel/security/tpm0/binary_bios_measurements.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from controller_api.attestation.errors import AttestationRefused

ALG_SHA1 = 0x0004
ALG_SHA256 = 0x000B

EV_NO_ACTION = 0x00000003
EV_SEPARATOR = 0x00000004
EV_ACTION = 0x00000005
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
EV_EFI_ACTION = 0x80000007

SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
STARTUP_LOCALITY = b"StartupLocality\x00"
PCR_COUNT = 24

# Events whose digest is by definition the hash of their data: for them a changed data field is
# detectable even though the PCR still replays (firmware writes these; Keylime checks them too).
SELF_DESCRIBING = {EV_SEPARATOR, EV_ACTION, EV_EFI_ACTION, EV_EFI_VARIABLE_DRIVER_CONFIG}

_MAX_EVENT = 1 << 24  # a single event above 16 MiB is corruption, not firmware


class EventLogError(AttestationRefused):
    """The event log is not well formed; the message names the byte offset."""

    def __init__(self, message: str, event: int | None = None) -> None:
        super().__init__(message, "event-log", event=event)


@dataclass(frozen=True)
class Event:
    pcr: int
    event_type: int
    digests: dict[int, bytes]
    data: bytes

    def encode(self) -> bytes:
        out = struct.pack("<III", self.pcr, self.event_type, len(self.digests))
        for alg, digest in self.digests.items():
            out += struct.pack("<H", alg) + digest
        return out + struct.pack("<I", len(self.data)) + self.data


@dataclass(frozen=True)
class EventLog:
    """The algorithms the log records (id -> digest size) and its events, header excluded."""

    algorithms: dict[int, int]
    events: tuple[Event, ...]

    def encode(self) -> bytes:
        spec = SPEC_ID_SIGNATURE + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(self.algorithms))
        spec += b"".join(struct.pack("<HH", a, n) for a, n in self.algorithms.items()) + b"\x00"
        header = (
            struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(spec)) + spec
        )
        return header + b"".join(e.encode() for e in self.events)

    @classmethod
    def decode(cls, data: bytes) -> EventLog:
        reader = _Reader(data)
        pcr, event_type = reader.unpack("<II", "header")
        reader.take(20, "header digest")
        spec = reader.take(reader.unpack("<I", "header size")[0], "Spec ID event")
        if pcr != 0 or event_type != EV_NO_ACTION or not spec.startswith(SPEC_ID_SIGNATURE):
            raise EventLogError(
                "event log: not crypto-agile (no Spec ID Event03 header at offset 0)"
            )
        algorithms = _spec_algorithms(spec)
        events: list[Event] = []
        while not reader.done():
            index = len(events)
            where = f"event {index}"
            pcr, event_type, count = reader.unpack("<III", where)
            if pcr >= PCR_COUNT:
                raise EventLogError(f"event log: {where} at offset {reader.last}: PCR {pcr}", index)
            digests: dict[int, bytes] = {}
            for _ in range(count):
                (alg,) = reader.unpack("<H", where)
                if alg not in algorithms:
                    raise EventLogError(
                        f"event log: {where}: digest algorithm {alg:#06x} not in the header", index
                    )
                digests[alg] = reader.take(algorithms[alg], f"{where} digest")
            (size,) = reader.unpack("<I", where)
            if size > _MAX_EVENT:
                raise EventLogError(f"event log: {where}: event size {size} is implausible", index)
            events.append(Event(pcr, event_type, digests, reader.take(size, f"{where} data")))
        return cls(algorithms, tuple(events))

    def replay(self) -> dict[int, bytes]:
        """The SHA-256 PCR values the log claims: each PCR starts at zero (PCR 0 at the startup
        locality when the log records one) and is extended with every event's digest except
        EV_NO_ACTION's. PCRs without events are absent."""
        pcrs: dict[int, bytes] = {}
        for index, event in enumerate(self.events):
            if event.event_type == EV_NO_ACTION:
                if (
                    event.pcr == 0
                    and event.data.startswith(STARTUP_LOCALITY)
                    and len(event.data) > 16
                ):
                    pcrs[0] = bytes(31) + event.data[16:17]
                continue
            digest = event.digests.get(ALG_SHA256)
            if digest is None:
                raise EventLogError(f"event log: event {index} has no SHA-256 digest", index)
            pcrs[event.pcr] = hashlib.sha256(pcrs.get(event.pcr, bytes(32)) + digest).digest()
        return pcrs

    def check_self_describing(self) -> None:
        """Refuse an event whose digest must be the SHA-256 of its data and is not (its data was
        edited after it was measured)."""
        for index, event in enumerate(self.events):
            digest = event.digests.get(ALG_SHA256)
            if event.event_type not in SELF_DESCRIBING or digest is None:
                continue
            if hashlib.sha256(event.data).digest() != digest:
                raise AttestationRefused(
                    f"event log: event {index} (PCR {event.pcr}, type {event.event_type:#x}): "
                    "digest is not the SHA-256 of its data (edited after measurement)",
                    "event-log",
                    pcr=event.pcr,
                    event=index,
                )


def _spec_algorithms(spec: bytes) -> dict[int, int]:
    reader = _Reader(spec)
    reader.take(len(SPEC_ID_SIGNATURE), "Spec ID signature")
    _, _, major, _, _, count = reader.unpack("<IBBBBI", "Spec ID event")
    if major != 2:
        raise EventLogError(f"event log: Spec ID event: spec version {major}, expected 2")
    algorithms: dict[int, int] = {}
    for _ in range(count):
        alg, size = reader.unpack("<HH", "Spec ID algorithm list")
        algorithms[alg] = size
    if ALG_SHA256 not in algorithms or algorithms[ALG_SHA256] != 32:
        raise EventLogError("event log: no SHA-256 digests recorded (Spec ID event)")
    return algorithms


class _Reader:
    """Bounds-checked reading; every overrun becomes an EventLogError with the offset."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0
        self.last = 0

    def done(self) -> bool:
        return self._at >= len(self._data)

    def take(self, n: int, what: str) -> bytes:
        if self._at + n > len(self._data):
            raise EventLogError(f"event log: {what} at offset {self._at}: truncated")
        self.last = self._at
        self._at += n
        return self._data[self.last : self._at]

    def unpack(self, fmt: str, what: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))
