"""The map-server / map-resolver service: `lisp.map_server.MapServer` on the asyncio runtime.

The node process owns the UDP 4342 socket and hands every Map-Register, ECM and Map-Request to
`MapServerService.handle`; replies go out through the `send` callable it was given. This module
opens no socket. `handle` never raises: whatever a packet does to the core is counted and logged
in one line. A periodic task (`start`/`stop`) expires registrations.

Refusal log lines are rate-limited per reason (a flood of forged Map-Registers must not flood the
log); what was held back is reported in one summary line per window. Counters are never limited.

Garbage collection: 100,000 registrations are a few hundred thousand long-lived objects that every
full collection would walk again. When the registration count has grown by more than a tenth
since the last time, the expiry tick moves everything alive into the collector's permanent
generation (`gc.freeze`): they are still freed by reference counting when they go, only cycles
among objects alive at a freeze are never collected.

`status` lists at most `status_limit` registrations (with `truncated`); `registrations_page`
pages through all of them (the control socket's `registrations` command).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from lisp.map_server import Log, MapServer, SendTo

LOG = logging.getLogger("lispmesh.map_server")

Address = tuple[str, int]
STATUS_LIMIT = 100  # registrations listed by `status`
PAGE_LIMIT = 1000  # registrations per page at most
FREEZE_GROWTH = 0.1  # gc.freeze() after the registration count grew by more than this share
FREEZE_MIN = 1000  # ... and by at least this many


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
        status_limit: int = STATUS_LIMIT,
        freeze_gc: bool = True,
    ) -> None:
        self.core = core
        self._send = send
        self._clock = clock
        self._log = logger if logger is not None else LOG
        self.expiry_interval = expiry_interval
        self._limiter = _LogLimiter(log_burst, log_window)
        self._task: asyncio.Task[None] | None = None
        self.status_limit = status_limit
        self.freeze_gc = freeze_gc
        self._frozen_at = 0  # the registration count at the last gc.freeze()

    @property
    def counters(self) -> Counter[str]:
        return self.core.counters

    def handle(
        self, data: bytes, addr: Address, reply: Callable[[bytes, Address], None] | None = None
    ) -> None:
        """One datagram received on the control port. Never raises. `reply` sends what it
        causes (default: the `send` given at construction); a map-server on several addresses
        passes the receiving socket's, so an answer leaves from the address that was asked (a
        NAT or firewall drops it from any other, and NAT detection refuses it)."""
        send = self._send if reply is None else reply
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
                    send(action.data, action.address)
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
        if self.freeze_gc:
            self._maybe_freeze()
        return len(expired)

    def _maybe_freeze(self) -> None:
        """gc.freeze() once the registrations grew by FREEZE_GROWTH since the last time (see the
        module docstring); a young collection first, so fresh garbage is not frozen with them."""
        count = self.core.registration_count()
        if count < self._frozen_at:
            self._frozen_at = count  # shrank: measure growth from here
        elif count - self._frozen_at > max(FREEZE_MIN, FREEZE_GROWTH * self._frozen_at):
            gc.collect(1)
            gc.freeze()
            self._frozen_at = count

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
        """JSON-serialisable: counters, the registration count and the first `status_limit`
        registrations (`truncated` if there are more: page with `registrations_page`)."""
        now = self._clock()
        total, regs = self.core.registrations_page(0, self.status_limit)
        return {
            "counters": dict(sorted(self.core.counters.items())),
            "registration_count": total,
            "registrations": [reg.status(now) for reg in regs],
            "truncated": total > len(regs),
        }

    def registrations_page(self, offset: Any = 0, limit: Any = STATUS_LIMIT) -> dict[str, Any]:
        """JSON-serialisable: at most `limit` (<= PAGE_LIMIT) registrations from `offset`, in the
        order of `status`; `next_offset` is None after the last page."""
        for name, value, least in (("offset", offset, 0), ("limit", limit, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                return {"error": f"{name} must be an integer >= {least}, not {value!r}"}
        limit = min(limit, PAGE_LIMIT)
        now = self._clock()
        total, regs = self.core.registrations_page(offset, limit)
        end = offset + len(regs)
        return {
            "registration_count": total,
            "offset": offset,
            "limit": limit,
            "registrations": [reg.status(now) for reg in regs],
            "next_offset": end if end < total else None,
        }
