"""The stateful part of the policy: allowed flows by 5-tuple and direction, bounded, idling out.

Flows idle out (TCP 300 s, 10 s once a FIN or RST was seen; UDP 60 s; ICMP 30 s; others 60 s).
The table is bounded. When a new flow finds it full, one rebuild makes room for the next eighth
of the table at once: the expired flows go, then (if that freed less than an eighth) the least
recently seen flows of the peers holding more than their share (`max_flows // PEER_SHARE`), and
only then the least recently seen flows of anyone. So

- one peer cannot evict the established flows of others by opening new ones: its own flows past
  its share go first (a peer is the remote end's /24 or /64: a node's EID prefix);
- flows that expire one at a time (staggered on purpose) cannot force a rebuild per new flow:
  every rebuild frees an eighth, so there is at most one per `max_flows // 8` new flows.

The C engine's flow table (mesh/_fastpath.c) follows the same rules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from common.policy_format import EGRESS, ICMP, ICMPV6, TCP, UDP

TCP_TIMEOUT = 300.0
TCP_CLOSING_TIMEOUT = 10.0  # after a FIN or RST: the connection is going away
UDP_TIMEOUT = 60.0
ICMP_TIMEOUT = 30.0
OTHER_TIMEOUT = 60.0
MAX_FLOWS = 65536
EVICT_FRACTION = 8  # a full table frees this fraction at once, so rebuilds are rare, not per flow
PEER_SHARE = 16  # no peer's flows beyond max_flows // PEER_SHARE survive a peer with fewer


class Verdict(NamedTuple):
    allowed: bool
    rule_id: int | None
    reason: str


@dataclass
class RuleCounters:
    packets: int = 0
    bytes: int = 0
    flows: int = 0  # new flows this rule decided


FlowKey = tuple[int, bytes, bytes, int, int, int]  # direction, src, dst, protocol, sport, dport


@dataclass(slots=True)
class Flow:
    direction: int  # the direction it was opened in (its rules decide it)
    rule_index: int  # in that direction's rule list
    protocol: int
    has_ports: bool
    last_seen: float
    seq: int  # creation order: ties in last_seen evict the older flow first
    # Its rule's counters and verdicts, at hand for every packet (re-pointed by an update).
    stats: RuleCounters
    verdicts: tuple[Verdict, Verdict, Verdict]
    idle: float = 0.0  # its idle timeout (set by `close` and at creation)

    def __post_init__(self) -> None:
        self.idle = _idle_timeout(self.protocol)

    def close(self) -> None:
        """A FIN or RST was seen: the connection is going away."""
        if self.protocol == TCP:
            self.idle = TCP_CLOSING_TIMEOUT

    def expired(self, now: float) -> bool:
        return now - self.last_seen > self.idle


def _idle_timeout(protocol: int) -> float:
    if protocol == TCP:
        return TCP_TIMEOUT
    if protocol == UDP:
        return UDP_TIMEOUT
    if protocol in (ICMP, ICMPV6):
        return ICMP_TIMEOUT
    return OTHER_TIMEOUT


def peer_of(key: FlowKey) -> bytes:
    """Who a flow counts against: the remote end's /24 (IPv4) or /64 (IPv6), the destination
    of an egress flow and the source of an ingress one."""
    direction, src, dst = key[0], key[1], key[2]
    remote = dst if direction == EGRESS else src
    return remote[:3] if len(remote) == 4 else remote[:8]


class FlowTable:
    """Allowed flows by 5-tuple and direction, bounded, with idle expiry on lookup."""

    def __init__(self, max_flows: int = MAX_FLOWS) -> None:
        if max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        self.max_flows = max_flows
        self.quota = max(1, max_flows // PEER_SHARE)
        self.flows: dict[FlowKey, Flow] = {}
        self.seq = 0

    def __len__(self) -> int:
        return len(self.flows)

    def find(self, key: FlowKey, now: float) -> Flow | None:
        flow = self.flows.get(key)
        if flow is not None and now - flow.last_seen > flow.idle:
            del self.flows[key]
            return None
        return flow

    def add(self, key: FlowKey, flow: Flow, now: float) -> None:
        if len(self.flows) >= self.max_flows:
            self._make_room(now)
        self.seq += 1
        flow.seq = self.seq
        self.flows[key] = flow

    def _make_room(self, now: float) -> None:
        live = {k: f for k, f in self.flows.items() if not f.expired(now)}
        self.flows = live
        need = len(live) - (self.max_flows - max(1, self.max_flows // EVICT_FRACTION))
        if need <= 0:
            return
        oldest = sorted(live.items(), key=lambda kf: (kf[1].last_seen, kf[1].seq))
        held = Counter(peer_of(key) for key in live)
        quota = self.quota
        for key, _ in oldest:  # first the flows of peers past their share, oldest first
            if need == 0:
                return
            peer = peer_of(key)
            if held[peer] > quota:
                held[peer] -= 1
                del live[key]
                need -= 1
        for key, _ in oldest:  # still short: the oldest of anyone
            if need == 0:
                return
            if key in live:
                del live[key]
                need -= 1

    def live(self, now: float) -> int:
        return sum(1 for f in self.flows.values() if not f.expired(now))

    def items(self) -> Iterator[tuple[FlowKey, Flow]]:
        return iter(list(self.flows.items()))

    def remove(self, key: FlowKey) -> None:
        del self.flows[key]

    def clear(self) -> None:
        self.flows.clear()
