"""The one exception every check in this package raises: what failed, and where (PCR, event)."""

from __future__ import annotations


class AttestationRefused(Exception):
    """Evidence failed a check. `check` is a short stable name for the check (for metrics and the
    operator view); `pcr` and `event` (an index into the event log) say where, when known."""

    def __init__(
        self, message: str, check: str, pcr: int | None = None, event: int | None = None
    ) -> None:
        super().__init__(message)
        self.check = check
        self.pcr = pcr
        self.event = event
