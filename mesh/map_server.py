"""The map-server / map-resolver service: `lisp.map_server.MapServer` on the asyncio runtime.

The node process owns the UDP 4342 socket and hands every Map-Register, ECM and Map-Request to
`MapServerService.handle`; replies go out through the `send` callable it was given. This module
opens no socket. `handle` never raises: whatever a packet does to the core is counted and logged
in one line. A periodic task (`start`/`stop`) expires registrations.

Refusal log lines are rate-limited per reason (a flood of forged Map-Registers must not flood the
log); what was held back is reported in one summary line per window. Counters are never limited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from lisp.map_server import Log, MapServer, SendTo

LOG = logging.getLogger("lispmesh.map_server")

Address = tuple[str, int]


class _LogLimiter:
    """At most `burst` lines per reason per `window` seconds; counts the rest."""

    def __init__(self, burst: int, window: float) -> None:
        self.burst = burst
        self.window = window
        self.started = 0.0
        self.sent: Counter[str] = Counter()
        self.held: Counter[str] = Counter()

    def allow(self, reason: str, now: float) -> bool:
        if now - self.started >= self.window:
            self.started = now
            self.sent.clear()
        if self.sent[reason] < self.burst:
            self.sent[reason] += 1
            return True
        self.held[reason] += 1
        return False

    def take_held(self) -> Counter[str]:
        held, self.held = self.held, Counter()
        return held


class MapServerService:
    def __init__(
        self,
        core: MapServer,
        send: Callable[[bytes, Address], None],
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
        *,
        expiry_interval: float = 1.0,
        log_burst: int = 10,
        log_window: float = 60.0,
    ) -> None:
        self.core = core
        self._send = send
        self._clock = clock
        self._log = logger if logger is not None else LOG
        self.expiry_interval = expiry_interval
        self._limiter = _LogLimiter(log_burst, log_window)
        self._task: asyncio.Task[None] | None = None

    @property
    def counters(self) -> Counter[str]:
        return self.core.counters

    def handle(self, data: bytes, addr: Address) -> None:
        """One datagram received on the control port. Never raises."""
        now = self._clock()
        try:
            actions = self.core.handle(data, addr, now)
        except Exception as exc:  # a bug in the core must not stop the node
            self.core.counters["internal-error"] += 1
            self._emit(
                logging.ERROR, f"internal error on a packet from {addr}: {exc!r}", "bug", now
            )
            return
        for action in actions:
            if isinstance(action, SendTo):
                try:
                    self._send(action.data, action.address)
                except (OSError, ValueError) as exc:
                    self.core.counters["send-error"] += 1
                    self._emit(
                        logging.WARNING, f"send to {action.address} failed: {exc}", "send", now
                    )
            elif isinstance(action, Log):
                self._emit(action.level, action.message, action.reason, now)

    def _emit(self, level: int, message: str, reason: str, now: float) -> None:
        if self._limiter.allow(reason, now):
            self._log.log(level, "%s", message)

    def expire(self) -> int:
        """Expire due registrations now; returns how many went. Never raises."""
        now = self._clock()
        try:
            expired = self.core.expire(now)
        except Exception as exc:
            self.core.counters["internal-error"] += 1
            self._log.error("map-server expiry failed: %r", exc)
            return 0
        for reg in expired:
            line = f"registration expired: site {reg.site.name} [{reg.iid}]{reg.prefix}"
            self._emit(logging.INFO, line, "expired", now)
        held = self._limiter.take_held()
        if held:
            summary = ", ".join(f"{reason} x{n}" for reason, n in sorted(held.items()))
            self._log.warning("map-server: log lines held back (rate limit): %s", summary)
        return len(expired)

    async def start(self) -> None:
        """Start the periodic expiry task (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="map-server")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.expiry_interval)
            self.expire()

    def status(self) -> dict[str, Any]:
        """JSON-serialisable: counters and every registration."""
        now = self._clock()
        regs = self.core.registrations()
        return {
            "counters": dict(sorted(self.core.counters.items())),
            "registration_count": len(regs),
            "registrations": [reg.status(now) for reg in regs],
        }
