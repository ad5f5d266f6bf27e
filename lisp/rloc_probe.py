"""RLOC reachability by probing (RFC 9301 §7.1), as a clock-free state machine.

The ITR probes every RLOC it encapsulates to; an RLOC that has not answered for `dead_after`
seconds is down and traffic moves to the next usable RLOC. A new RLOC is presumed up until it
has had `dead_after` seconds to answer, so the first packets are not held back.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ProbeState:
    tracked_since: float
    last_sent: float = float("-inf")
    last_reply: float = float("-inf")
    rtt: float | None = None
    up: bool = True


@dataclass(slots=True)
class RlocProber:
    interval: float
    dead_after: float
    _states: dict[str, ProbeState] = field(default_factory=dict)
    _outstanding: dict[int, tuple[str, float]] = field(default_factory=dict)

    def track(self, rloc: str, now: float) -> None:
        if rloc not in self._states:
            self._states[rloc] = ProbeState(tracked_since=now)

    def untrack(self, rloc: str) -> None:
        self._states.pop(rloc, None)

    def tracked(self) -> list[str]:
        return list(self._states)

    def due(self, now: float) -> list[str]:
        """RLOCs whose next probe is due; the caller sends them and calls `sent`."""
        return [r for r, s in self._states.items() if now - s.last_sent >= self.interval]

    def sent(self, rloc: str, nonce: int, now: float) -> None:
        state = self._states.get(rloc)
        if state is None:
            return
        state.last_sent = now
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
        state.last_reply = now
        state.rtt = now - sent_at
        return rloc

    def is_up(self, rloc: str, now: float) -> bool:
        state = self._states.get(rloc)
        if state is None:
            return True
        return self._compute_up(state, now)

    def _compute_up(self, state: ProbeState, now: float) -> bool:
        if now - state.last_reply <= self.dead_after:
            return True
        # Never answered yet: give a fresh RLOC the benefit of the doubt for dead_after.
        return state.last_reply == float("-inf") and now - state.tracked_since <= self.dead_after

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
