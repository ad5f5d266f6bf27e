"""When an ETR (re-)registers with one map-server, as a clock-free state machine.

Registers every `interval` seconds; when a Map-Notify does not come back within `retry`
seconds, retries with exponential backoff (capped at the interval), so a map-server that
restarts and lost its state gets our mappings back quickly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Registration:
    interval: float
    retry: float = 1.0
    next_send: float = 0.0
    pending_nonce: int | None = None
    backoff: float = 0.0
    last_notify: float | None = None
    sent_count: int = 0
    notify_count: int = 0

    def due(self, now: float) -> bool:
        return now >= self.next_send

    def sent(self, nonce: int, now: float) -> None:
        self.sent_count += 1
        if self.pending_nonce is not None:
            # The previous one was never acknowledged: back off, up to the refresh interval.
            self.backoff = min(self.interval, max(self.retry, self.backoff * 2))
            self.next_send = now + self.backoff
        else:
            self.next_send = now + self.retry
        self.pending_nonce = nonce

    def notified(self, nonce: int, now: float) -> bool:
        """A Map-Notify with `nonce` arrived; True if it acknowledges our last Map-Register."""
        if nonce != self.pending_nonce:
            return False
        self.pending_nonce = None
        self.backoff = 0.0
        self.last_notify = now
        self.notify_count += 1
        self.next_send = now + self.interval
        return True

    def refresh_now(self, now: float) -> None:
        """Something changed (an uplink went down or up): register again at once."""
        self.next_send = now
        self.pending_nonce = None
        self.backoff = 0.0

    @property
    def registered(self) -> bool:
        return self.last_notify is not None and self.pending_nonce is None
