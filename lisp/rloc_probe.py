"""RLOC reachability (RFC 9301 §7.1), probing only what is in use, as a clock-free state machine.

An RLOC must prove it is alive only when we depend on it: when we sent it something (data or a
probe) and have heard nothing from it since. Anything heard from it (a probe reply, or data
packets it sent us: WireGuard's passive keepalive) is that proof. So:
  - a path carrying traffic both ways is never probed (the peer's packets vouch for it);
  - a path we send on without hearing back is probed every `interval` until it answers, and is
    down once it has been waited on for `dead_after` seconds (the failover time);
  - an idle RLOC is probed every `idle_interval` seconds (math.inf: never), so it is not
    found dead only when traffic starts; a down RLOC is probed with exponential backoff from
    `interval` up to `idle_interval`, so it is seen when it comes back.
A new RLOC is presumed up (the first packets are not held back) and is probed once it is used
and stays silent; `dead_after` seconds without a sign of life after that, it is down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DEFAULT_IDLE_INTERVAL = 300.0


@dataclass(slots=True)
class ProbeState:
    tracked_since: float
    last_sent: float = -math.inf  # our last probe
    last_reply: float = -math.inf  # last time we heard from it (probe reply or data)
    rtt: float | None = None
    up: bool = True
    # Since when we wait for a sign of life: the first probe or data sent to it after we last
    # heard from it (None: we heard from it after everything we sent).
    waiting_since: float | None = None
    misses: int = 0  # probes sent since we last heard from it (the backoff of a down RLOC)


@dataclass(slots=True)
class RlocProber:
    interval: float
    dead_after: float
    idle_interval: float = DEFAULT_IDLE_INTERVAL
    _states: dict[str, ProbeState] = field(default_factory=dict)
    _outstanding: dict[int, tuple[str, float]] = field(default_factory=dict)

    def track(self, rloc: str, now: float) -> None:
        if rloc not in self._states:
            self._states[rloc] = ProbeState(tracked_since=now)

    def untrack(self, rloc: str) -> None:
        self._states.pop(rloc, None)

    def tracked(self) -> list[str]:
        return list(self._states)

    # ------------------------------------------------------------------ what happened

    def used(self, rloc: str, now: float) -> None:
        """We sent data to `rloc` (at or before `now`): from now on it owes us a sign of life."""
        state = self._states.get(rloc)
        if state is not None and state.waiting_since is None:
            state.waiting_since = now

    def heard(self, rloc: str, now: float) -> None:
        """Packets from `rloc` opened with its key: it is alive (no probe needed)."""
        state = self._states.get(rloc)
        if state is not None:
            self._alive(state, now)

    def sent(self, rloc: str, nonce: int, now: float) -> None:
        state = self._states.get(rloc)
        if state is None:
            return
        state.last_sent = now
        state.misses += 1
        if state.waiting_since is None:
            state.waiting_since = now
        self._outstanding[nonce] = (rloc, now)
        # Bound memory: forget probes far older than the dead interval.
        if len(self._outstanding) > 4 * max(1, len(self._states)) + 64:
            horizon = now - 2 * self.dead_after
            self._outstanding = {n: v for n, v in self._outstanding.items() if v[1] >= horizon}

    def replied(self, nonce: int, now: float) -> str | None:
        """A probe reply with `nonce` arrived; returns the RLOC it vouches for (or None)."""
        entry = self._outstanding.pop(nonce, None)
        if entry is None:
            return None
        rloc, sent_at = entry
        state = self._states.get(rloc)
        if state is None:
            return None
        self._alive(state, now)
        state.rtt = now - sent_at
        return rloc

    @staticmethod
    def _alive(state: ProbeState, now: float) -> None:
        state.last_reply = max(state.last_reply, now)
        state.waiting_since = None
        state.misses = 0

    # ------------------------------------------------------------------ what to do, and when

    def _next_probe(self, state: ProbeState, now: float) -> float:
        """When `state`'s RLOC is to be probed next."""
        if state.waiting_since is None:
            # Heard from after all we sent: only the idle keepalive (if any).
            return max(state.last_reply, state.last_sent, state.tracked_since) + self.idle_interval
        if self._compute_up(state, now):
            # Waited on: probe every interval until it answers (data it sends back first makes
            # the probe unnecessary).
            return max(state.waiting_since, state.last_sent) + self.interval
        backoff = self.interval * 2.0 ** min(state.misses, 30)
        return state.last_sent + min(max(self.interval, self.idle_interval), backoff)

    def due(self, now: float) -> list[str]:
        """RLOCs whose next probe is due; the caller sends them and calls `sent`."""
        return [r for r, s in self._states.items() if self._next_probe(s, now) <= now]

    def next_deadline(self, now: float) -> float:
        """When something next changes here (a probe due, an RLOC turning down): when to call
        `due` and `transitions` again, with no other event before (math.inf: never)."""
        soonest = math.inf
        for state in self._states.values():
            soonest = min(soonest, self._next_probe(state, now))
            if state.waiting_since is not None and state.up:
                soonest = min(soonest, state.waiting_since + self.dead_after)
        return soonest

    def is_up(self, rloc: str, now: float) -> bool:
        state = self._states.get(rloc)
        if state is None:
            return True
        return self._compute_up(state, now)

    def _compute_up(self, state: ProbeState, now: float) -> bool:
        return state.waiting_since is None or now - state.waiting_since <= self.dead_after

    def transitions(self, now: float) -> list[tuple[str, bool]]:
        """RLOCs whose up/down state changed since the last call: (rloc, now_up)."""
        changed = []
        for rloc, state in self._states.items():
            up = self._compute_up(state, now)
            if up != state.up:
                state.up = up
                changed.append((rloc, up))
        return changed

    def state(self, rloc: str) -> ProbeState | None:
        return self._states.get(rloc)
