"""Path MTU per remote RLOC (RFC 9300 §7.2, the stateful approach), as a clock-free table.

The largest outer packet that reaches an RLOC is the least of:
- the local route's MTU (the runtime reads the kernel's: the interface, or what the kernel
  learnt from ICMP for that destination);
- what an ICMP "fragmentation needed" / "packet too big" reported for that RLOC (the runtime
  reads the underlay sockets' error queues, IP_RECVERR), held for ICMP_HOLD seconds like
  Linux's own PMTU cache, then tried again;
- what padded RLOC-probes found (RFC 8899-style datagram PLPMTUD), because ICMP is often
  filtered: a probe padded to the current MTU confirms it; two unanswered (while the RLOC answers
  ordinary probes) make it a black hole, and one round of SEARCH_PROBES probes of sizes between the
  largest confirmed size and the failing one finds the new MTU (repeated until the two are within
  SEARCH_GRANULARITY). A lowered MTU is probed upwards again after RAISE_AFTER seconds.
Each RLOC's MTU is used by mesh.paths for the inner packets its paths can carry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_MTU = 1500  # an RLOC whose route MTU the runtime could not read
FLOOR = {4: 576, 6: 1280}  # the least each IP version guarantees: searches go down to it
# What a path carries while a search has confirmed nothing yet (RFC 8899 BASE_PLPMTU).
BASE = {4: 1200, 6: 1280}
ICMP_HOLD = 600.0
RAISE_AFTER = 600.0
SEARCH_PROBES = 8
# The first round of a search probes the MTUs underlays commonly have (Ethernet, PPPoE, VXLAN,
# WireGuard and other tunnels, the IPv6 minimum), so it usually lands on the exact value at once:
# a sender told an MTU keeps it for minutes, so a rough first answer would stay with it.
COMMON_MTUS = (1492, 1480, 1472, 1460, 1450, 1440, 1420, 1400, 1380, 1360, 1350, 1300, 1280,
               1240, 1200, 1100, 1000, 800, 576)  # fmt: skip
SEARCH_GRANULARITY = 16
CONFIRM_MISSES = 2
OUTER_HEADERS = {4: 20 + 8, 6: 40 + 8}  # outer IP + UDP


@dataclass(slots=True)
class RlocMtu:
    version: int
    local: int = DEFAULT_MTU
    icmp: int | None = None
    icmp_until: float = 0.0
    confirmed: int = 0  # the largest padded-probe size answered (0: none yet)
    confirmed_at: float = float("-inf")
    ceiling: int | None = None  # the smallest padded-probe size that went unanswered
    ceiling_until: float = 0.0
    misses: int = 0  # unanswered confirmation probes in a row
    searching: int = 0  # search probes outstanding


@dataclass(slots=True)
class Outstanding:
    rloc: str
    size: int
    sent_at: float
    search: bool


class PathMtuTable:
    def __init__(
        self, probe_timeout: float, probing: bool = True, counters: Counter[str] | None = None
    ) -> None:
        self.probe_timeout = probe_timeout
        self.probing = probing
        self.rlocs: dict[str, RlocMtu] = {}
        self.outstanding: dict[int, Outstanding] = {}
        self.counters: Counter[str] = Counter() if counters is None else counters
        self._applied: dict[str, int] = {}

    # ------------------------------------------------------------------ what paths read

    def mtu(self, rloc: str, now: float) -> int:
        """The largest outer IP packet towards `rloc`."""
        state = self.rlocs.get(rloc)
        if state is None:
            return DEFAULT_MTU
        mtu = state.local
        if state.icmp is not None and now < state.icmp_until:
            mtu = min(mtu, state.icmp)
        if state.ceiling is not None and now < state.ceiling_until:
            if state.confirmed:
                mtu = min(mtu, state.confirmed)
            elif not state.searching:
                # A search that confirmed nothing (heavy loss): what every path carries.
                mtu = min(mtu, BASE[state.version])
            # else: the first round is out; an answer would only be a guess senders keep.
        return mtu

    def inner_limit(self, rloc: str, version: int, overhead: int, now: float) -> int:
        """The largest inner packet a path to `rloc` carries (`overhead`: LISP header and
        cipher bytes around it)."""
        return self.mtu(rloc, now) - OUTER_HEADERS[version] - overhead

    # ------------------------------------------------------------------ what the runtime tells

    def track(self, rloc: str, version: int) -> bool:
        """Start following `rloc`; True if it is new (the caller reads its route MTU)."""
        if rloc in self.rlocs:
            return False
        self.rlocs[rloc] = RlocMtu(version)
        return True

    def untrack(self, rloc: str) -> None:
        self.rlocs.pop(rloc, None)

    def set_local(self, rloc: str, mtu: int) -> bool:
        """The kernel's route MTU towards `rloc`; True if it changed."""
        state = self.rlocs.get(rloc)
        if state is None or mtu < FLOOR[state.version] or mtu == state.local:
            return False
        state.local = mtu
        return True

    def on_icmp(self, rloc: str, mtu: int, now: float) -> bool:
        """An ICMP "too big" (or the kernel's own EMSGSIZE) for a packet to `rloc` said `mtu`;
        True if that lowered what we use."""
        state = self.rlocs.get(rloc)
        if state is None:
            self.counters["mtu-icmp-unknown-rloc"] += 1
            return False
        before = self.mtu(rloc, now)
        if mtu < FLOOR[state.version]:
            # A forged or broken ICMP must not make us crawl: take the floor, as Linux does.
            self.counters["mtu-icmp-below-floor"] += 1
            mtu = FLOOR[state.version]
        if mtu >= before:
            return False
        self.counters["mtu-icmp"] += 1
        state.icmp, state.icmp_until = mtu, now + ICMP_HOLD
        state.confirmed = min(state.confirmed, mtu)
        return self.mtu(rloc, now) < before

    # ------------------------------------------------------------------ padded probes

    def due(self, now: float) -> list[tuple[str, int, bool]]:
        """The padded probes to send now: (rloc, outer size, part of a search)."""
        if not self.probing:
            return []
        busy = {o.rloc for o in self.outstanding.values()}
        wanted: list[tuple[str, int, bool]] = []
        for rloc, state in self.rlocs.items():
            if rloc in busy:
                continue
            if state.ceiling is not None and now >= state.ceiling_until:
                # Raise timer (RFC 8899 §5.1.1): the path may have grown; try the top again.
                state.ceiling, state.misses = None, 0
                state.confirmed = 0
                self.counters["mtu-raise-attempts"] += 1
            top = self.mtu(rloc, now)
            floor = FLOOR[state.version]
            if state.ceiling is not None:
                low = max(state.confirmed, floor)
                if state.ceiling - low <= SEARCH_GRANULARITY:
                    continue
                if not state.confirmed:
                    sizes = {m for m in COMMON_MTUS if floor <= m < state.ceiling}
                else:
                    step = (state.ceiling - low) / (SEARCH_PROBES + 1)
                    sizes = {int(low + step * (i + 1)) for i in range(SEARCH_PROBES)}
                wanted += [
                    (rloc, size, True)
                    for size in sorted(sizes)
                    if size > low or not state.confirmed
                ]
                continue
            if state.confirmed >= top and now - state.confirmed_at < RAISE_AFTER:
                continue
            if top <= floor:
                continue
            wanted.append((rloc, top, False))
        return wanted

    def sent(self, nonce: int, rloc: str, size: int, search: bool, now: float) -> None:
        self.outstanding[nonce] = Outstanding(rloc, size, now, search)
        self.counters["mtu-probes"] += 1
        state = self.rlocs.get(rloc)
        if state is not None and search:
            state.searching += 1

    def answered(self, nonce: int, now: float) -> bool:
        """A Map-Reply with `nonce`: True if it answers one of our padded probes."""
        probe = self.outstanding.pop(nonce, None)
        if probe is None:
            return False
        self.counters["mtu-probes-answered"] += 1
        state = self.rlocs.get(probe.rloc)
        if state is None:
            return True
        if probe.search:
            state.searching -= 1
        if probe.size >= state.confirmed and (state.ceiling is None or probe.size < state.ceiling):
            state.confirmed, state.confirmed_at = probe.size, now
        state.misses = 0
        return True

    def expire(self, now: float, alive: Callable[[str], bool]) -> None:
        """Judge the padded probes that went unanswered. A probe counts as lost to the MTU only
        if its RLOC is `alive` (it answers ordinary probes); otherwise the RLOC is down, which
        is the prober's business."""
        for nonce, probe in list(self.outstanding.items()):
            if now - probe.sent_at < self.probe_timeout:
                continue
            del self.outstanding[nonce]
            state = self.rlocs.get(probe.rloc)
            if state is None:
                continue
            if probe.search:
                state.searching -= 1
            if not alive(probe.rloc):
                continue
            self.counters["mtu-probes-lost"] += 1
            if probe.search:
                if probe.size > state.confirmed and (
                    state.ceiling is None or probe.size < state.ceiling
                ):
                    state.ceiling = probe.size
            else:
                state.misses += 1
                if state.misses < CONFIRM_MISSES:
                    continue
                state.misses = 0
                state.ceiling, state.confirmed = probe.size, 0
                self.counters["mtu-black-holes"] += 1
            state.ceiling_until = now + RAISE_AFTER

    def changed(self, now: float) -> bool:
        """Has any RLOC's MTU changed since the last call (probes, ICMP, timers)?"""
        current = {rloc: self.mtu(rloc, now) for rloc in self.rlocs}
        if current == self._applied:
            return False
        self._applied = current
        return True

    def status(self, now: float) -> dict[str, int]:
        return {rloc: self.mtu(rloc, now) for rloc in sorted(self.rlocs)}
