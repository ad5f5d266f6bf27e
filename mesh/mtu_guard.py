"""The ITR's side of path MTU (RFC 9300 §7.2): what happens to an inner packet that does not fit,
and the padded probes and ICMP signals that keep each RLOC's MTU (mesh.pmtu) true.

- An IPv4 packet without DF is fragmented to fit (as a router on the path would);
- any other is dropped and its sender gets an ICMP "fragmentation needed" / ICMPv6 "packet too
  big" with the inner MTU of the path (rate-limited per sender), so its TCP lowers its MSS;
- with `mss_clamp`, TCP SYNs leave with their MSS lowered to what the path carries.
Every case is counted (stats mtu-*, drops mtu-*).
"""

from __future__ import annotations

import logging

from lisp.map_cache import MapCacheEntry
from mesh import lispers_peer as lispers
from mesh.paths import PathTable
from mesh.pmtu import RAISE_AFTER
from mesh.rate_limit import TokenBuckets
from mesh.rloc_probing import Prober
from mesh.too_big import clamp_mss, dont_fragment, fragment_v4, icmp_too_big
from mesh.xtr_context import XtrContext
from mesh.xtr_types import Path

log = logging.getLogger("lispmesh.xtr")
ICMP_RATE = 10.0  # ICMP errors per second per inner sender
ICMP_BURST = 20.0
TCP_HEADER = 20


class MtuGuard:
    def __init__(self, ctx: XtrContext, paths: PathTable, prober: Prober) -> None:
        self.ctx = ctx
        self.paths = paths
        self.prober = prober
        self.icmp_limit = TokenBuckets(ICMP_RATE, ICMP_BURST)

    # ------------------------------------------------------------------ packets that do not fit

    def too_big(self, path: Path, packet: bytes) -> None:
        ctx = self.ctx
        datapath = ctx.datapath
        if not dont_fragment(packet):
            fragments = fragment_v4(packet, path.mtu)
            if fragments:
                ctx.stats["mtu-fragmented"] += 1
                for fragment in fragments:
                    if not datapath.send(path, fragment):
                        ctx.drops["no-path"] += 1
                return
        ctx.drops["mtu-too-big"] += 1
        version = packet[0] >> 4
        sender = packet[12:16] if version == 4 else packet[8:24]
        if not self.icmp_limit.allow(sender.hex(), ctx.now):
            ctx.drops["mtu-icmp-rate-limited"] += 1
            return
        # From the address the packet was going to, as if it said so itself: a sender on this
        # node drops an error from one of its own addresses (a martian source on the TUN).
        source = packet[16:20] if version == 4 else packet[24:40]
        error = icmp_too_big(packet, path.mtu, source)
        if error is None:
            ctx.drops["mtu-no-icmp"] += 1  # an ICMP error, a fragment, a multicast source
            return
        ctx.stats["mtu-icmp-sent"] += 1
        ctx.transport.write_inside(error)

    def clamp(self, path: Path, packet: bytes) -> bytes:
        header = 20 if packet[0] >> 4 == 4 else 40
        clamped = clamp_mss(packet, path.mtu - header - TCP_HEADER)
        if clamped is None:
            return packet
        self.ctx.stats["mtu-mss-clamped"] += 1
        return clamped

    # ------------------------------------------------------------------ keeping the MTU true

    def signal(self, rloc: str, mtu: int) -> None:
        ctx = self.ctx
        if ctx.pmtu.on_icmp(rloc, mtu, ctx.now):
            log.info("path MTU to %s is now %d (ICMP)", rloc, ctx.pmtu.mtu(rloc, ctx.now))
            self.paths.recompute()

    def tick(self, mappings_expired: bool) -> None:
        ctx = self.ctx
        pmtu = ctx.pmtu
        now = ctx.now
        pmtu.expire(now, self._answers_probes)
        due = pmtu.due(now)
        if due or mappings_expired:
            targets: dict[str, MapCacheEntry] = {}
            for entry in self.paths.map_cache:
                if not entry.negative:
                    for record in entry.rlocs:
                        targets.setdefault(str(record.address), entry)
            for rloc in [r for r in pmtu.rlocs if r not in targets]:
                pmtu.untrack(rloc)
            in_use = self._in_use(now)
            companions: dict[str, MapCacheEntry] = {}
            for rloc, size, search in due:
                if lispers.is_lispers(rloc, ctx.lispers_peers):
                    continue  # a keyless probe makes lispers.net drop our key
                target = targets.get(rloc)
                if target is None or rloc not in in_use:
                    continue  # an idle path's MTU is found when it carries traffic again
                nonce = self.prober.send_padded_probe(target, rloc, size)
                if nonce is not None:
                    pmtu.sent(nonce, rloc, size, search, now)
                    companions[rloc] = target
            for rloc, target in companions.items():
                # An ordinary probe beside the padded ones: a fresh sign of life, so a lost
                # padded probe can be judged (idle RLOCs are not probed otherwise).
                self.prober.send_probe(target, rloc, with_key=False)
        if pmtu.changed(now):
            for rloc, mtu in pmtu.status(now).items():
                log.debug("path MTU to %s: %d", rloc, mtu)
            self.paths.recompute()

    def _in_use(self, now: float) -> set[str]:
        """RLOCs of paths that carried data lately: only their MTU is worth probing for."""
        last_used = self.paths.last_used
        return {
            path.remote[0]
            for key, path in self.paths.paths.items()
            if now - last_used.get(key, float("-inf")) < RAISE_AFTER
        }

    def _answers_probes(self, rloc: str) -> bool:
        """Did `rloc` answer an ordinary probe lately (so a lost padded probe means the size)?"""
        ctx = self.ctx
        state = ctx.prober.state(rloc)
        return state is not None and ctx.now - state.last_reply <= ctx.timers.probe_dead_after
