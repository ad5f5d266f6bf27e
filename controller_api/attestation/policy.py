"""What a healthy node measured: golden values per PCR and allowed event digests, and the
evaluation that says which PCR or which event is not allowed.

Stored and shown as JSON (hex digests) so `controller attestation policy set|show` can pass it
through unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller_api.attestation.eventlog import ALG_SHA256, EV_NO_ACTION, EventLog

# PCRs the firmware and boot loader measure into the boot event log (PC Client profile).
BOOT_LOG_PCRS = tuple(range(8))
PCR_COUNT = 24  # a PC Client TPM's PCRs


@dataclass(frozen=True)
class Failure:
    """One measurement the policy does not allow: a PCR value (event None) or an event."""

    pcr: int | None
    event: int | None
    message: str


@dataclass(frozen=True)
class Verdict:
    failures: tuple[Failure, ...]

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        return "; ".join(f.message for f in self.failures) or "all measurements allowed"


@dataclass(frozen=True)
class AttestationPolicy:
    """`pcrs` are quoted; `log_pcrs` (a subset) must replay from the event log; `golden` maps a PCR
    to its allowed values; `allowed_events` maps a PCR to the event digests allowed on it."""

    pcrs: tuple[int, ...]
    log_pcrs: tuple[int, ...] = BOOT_LOG_PCRS
    golden: Mapping[int, frozenset[bytes]] = field(default_factory=dict)
    allowed_events: Mapping[int, frozenset[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        quoted = set(self.pcrs)
        if not quoted:
            raise ValueError("attestation policy: pcrs names no PCR to quote")
        out_of_range = sorted(i for i in quoted if not 0 <= i < PCR_COUNT)
        if out_of_range:
            raise ValueError(
                f"attestation policy: PCRs {out_of_range} out of range (0..{PCR_COUNT - 1})"
            )
        for pcr, values in {**self.golden, **self.allowed_events}.items():
            short = sorted(v.hex() for v in values if len(v) != 32)
            if short:
                raise ValueError(
                    f"attestation policy: PCR {pcr}: {short[0]!r} is not a SHA-256 digest"
                )
        for what, indexes in (
            ("log_pcrs", self.log_pcrs),
            ("golden", self.golden),
            ("allowed_events", self.allowed_events),
        ):
            extra = sorted(set(indexes) - quoted)
            if extra:
                raise ValueError(
                    f"attestation policy: {what} names PCRs {extra} that are not quoted"
                )

    def to_json(self) -> str:
        return json.dumps(
            {
                "pcrs": list(self.pcrs),
                "log_pcrs": list(self.log_pcrs),
                "golden": {
                    str(i): sorted(v.hex() for v in vs) for i, vs in sorted(self.golden.items())
                },
                "allowed_events": {
                    str(i): sorted(v.hex() for v in vs)
                    for i, vs in sorted(self.allowed_events.items())
                },
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str, where: str = "attestation policy") -> AttestationPolicy:
        try:
            doc: dict[str, Any] = json.loads(text)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            unknown = sorted(set(doc) - {"pcrs", "log_pcrs", "golden", "allowed_events"})
            if unknown:
                # A misspelt key would otherwise leave the PCRs it meant to pin unchecked.
                raise ValueError(f"unknown key {unknown[0]!r}")
            if "pcrs" not in doc:
                raise ValueError('no "pcrs" (the PCRs to quote)')

            def digests(table: dict[str, list[str]]) -> dict[int, frozenset[bytes]]:
                return {int(i): frozenset(bytes.fromhex(v) for v in vs) for i, vs in table.items()}

            return cls(
                pcrs=tuple(int(i) for i in doc["pcrs"]),
                log_pcrs=tuple(int(i) for i in doc.get("log_pcrs", BOOT_LOG_PCRS)),
                golden=digests(doc.get("golden", {})),
                allowed_events=digests(doc.get("allowed_events", {})),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{where}: {exc}") from None

    def evaluate(self, pcrs: Mapping[int, bytes], log: EventLog | None) -> Verdict:
        """Every PCR whose value is not golden and every event whose digest is not allowed."""
        failures: list[Failure] = []
        for pcr, allowed in sorted(self.golden.items()):
            value = pcrs.get(pcr)
            if value is None or value not in allowed:
                shown = value.hex() if value is not None else "missing"
                failures.append(Failure(pcr, None, f"PCR {pcr} is {shown}, not a golden value"))
        if self.allowed_events:
            if log is None:
                return Verdict(
                    (*failures, Failure(None, None, "no event log to check events against"))
                )
            for index, event in enumerate(log.events):
                permitted = self.allowed_events.get(event.pcr)
                if permitted is None or event.event_type == EV_NO_ACTION:
                    continue
                digest = event.digests.get(ALG_SHA256, b"")
                if digest not in permitted:
                    failures.append(
                        Failure(
                            event.pcr,
                            index,
                            f"event {index} (PCR {event.pcr}, type {event.event_type:#x}) "
                            f"digest {digest.hex()} is not allowed",
                        )
                    )
        return Verdict(tuple(failures))
