"""A node behind a NAT, reached through an RTR (mesh.rtr describes the whole scheme).

While NAT detection (mesh.nat_check) says an uplink is behind a NAT and RTRs are configured,
each such uplink sends every RTR of its address family a signed keepalive from its data socket:
every `xtr.rtr_keepalive` seconds once the RTR answered (holding the NAT's mapping open), every
RETRY seconds until then. The first RTR (in configuration order) whose signed answer is at most
three keepalives old is the one we are reached through (`ctx.via_rtr`); when that changes, the
xTR re-registers and recomputes its paths (`changed`).

Failover (several RTRs): every RTR that answers is registered (`ctx.rtrs_up`, priority 254 after
the one we send through), so a peer whose RTR dies moves to the next by its own RLOC-probing,
within its probe dead time, with no new key exchange (the RTR is only a hop: keys are between the
ends, the next RTR holds our binding already). We see an RTR die by its keepalive answers: a
keepalive unanswered for RETRY is sent again, and an RTR with two unanswered for `dead` seconds
is down; while relayed traffic flows the keepalives go every ACTIVE_KEEPALIVE seconds, so we
move our own sending to the next RTR within about two seconds of its death (at idle, within a
keepalive period and two seconds).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from ipaddress import ip_address
from typing import Any

from certs.format import IdentityError
from lisp.address import DistinguishedName
from lisp.info import InfoMessage
from lisp.nat_detect import ENDPOINT_DEPENDENT, ENDPOINT_INDEPENDENT
from lisp.relay import control_frame
from mesh.config import RtrRef
from mesh.keys import random_nonce
from mesh.rtr_proof import reply_subject, request_subject, sign, verify
from mesh.xtr_context import XtrContext
from mesh.xtr_types import DATA_PORT, LocalRloc

log = logging.getLogger("lispmesh.rtr")
RETRY = 1.0
ACTIVE_KEEPALIVE = 0.5  # while relayed traffic flows
ACTIVE_FOR = 2.0  # seconds relayed traffic counts as flowing


class RtrClient:
    def __init__(
        self, ctx: XtrContext, behind_nat: Callable[[str], bool], changed: Callable[[], None]
    ) -> None:
        self.ctx = ctx
        self.behind_nat = behind_nat
        self.changed = changed
        self.outstanding: dict[int, tuple[str, str, float]] = {}  # nonce -> (rtr, uplink, sent)
        self.next_at: dict[tuple[str, str], float] = {}
        self.confirmed: dict[str, tuple[float, str]] = {}  # rtr address -> (when, seen as)
        # rtr address -> (first keepalive since its last answer: when, how many since)
        self.waiting: dict[str, tuple[float, int]] = {}
        self.last_sent: dict[tuple[str, str], float] = {}
        self._relayed = 0  # the relayed-packet counters, last look
        self._active_until = float("-inf")

    def _natted(self) -> list[LocalRloc]:
        return [r for r in self.ctx.locals if r.up and self.behind_nat(r.key)]

    def tick(self) -> None:
        ctx = self.ctx
        if ctx.kx is None or not ctx.xcfg.rtrs:
            self._choose([])
            return
        natted = self._natted()
        relayed = ctx.stats["relayed-out"] + ctx.stats["relayed-in"]
        if relayed != self._relayed:
            self._relayed, self._active_until = relayed, ctx.now + ACTIVE_FOR
        pace = ctx.xcfg.rtr_keepalive
        if ctx.now < self._active_until:
            pace = min(pace, ACTIVE_KEEPALIVE)
        for local in natted:
            for rtr in ctx.xcfg.rtrs:
                if rtr.address.version != local.address.version:
                    continue
                address = str(rtr.address)
                key = (address, local.key)
                last = self.last_sent.get(key, float("-inf"))
                due = min(self.next_at.get(key, float("-inf")), last + pace)
                if address in self.waiting:  # unanswered: again after RETRY
                    due = min(due, last + RETRY)
                if ctx.now >= due:
                    up = self._fresh(address)
                    self._send(rtr, local)
                    self.next_at[key] = ctx.now + (pace if up else RETRY)
        horizon = 4 * ctx.xcfg.rtr_keepalive
        for nonce, (_, _, sent) in list(self.outstanding.items()):
            if ctx.now - sent > horizon:
                del self.outstanding[nonce]
        self._choose(natted)

    def _send(self, rtr: RtrRef, local: LocalRloc) -> None:
        ctx = self.ctx
        assert ctx.kx is not None
        nonce = random_nonce()
        proof = sign(ctx.kx, nonce, request_subject(rtr.name, local.key))
        request = InfoMessage(nonce, eid=DistinguishedName(local.key), payload=proof)
        address = str(rtr.address)
        self.outstanding[nonce] = (address, local.key, ctx.now)
        self.last_sent[(address, local.key)] = ctx.now
        since, count = self.waiting.get(address, (ctx.now, 0))
        self.waiting[address] = (since, count + 1)
        ctx.stats["rtr-keepalives-sent"] += 1
        ctx.transport.send_data(
            local, control_frame(request.encode()), (str(rtr.address), DATA_PORT)
        )

    def on_info_reply(self, message: InfoMessage, source: tuple[str, int]) -> None:
        ctx = self.ctx
        pending = self.outstanding.get(message.nonce)
        rtr = ctx.rtrs.get(source[0])
        if pending is None or rtr is None or pending[0] != source[0] or ctx.kx is None:
            ctx.drops["rtr-reply-unsolicited"] += 1
            return
        if not isinstance(message.eid, DistinguishedName):
            ctx.drops["rtr-reply-malformed"] += 1
            return
        seen = message.eid.name
        try:
            peer, _ = verify(
                ctx.kx, message.payload, message.nonce, reply_subject(rtr.name, pending[1], seen)
            )
        except IdentityError as exc:
            ctx.drops["rtr-reply-refused"] += 1
            ctx.error(f"RTR {rtr.name} ({source[0]}): answer refused: {exc}")
            return
        if peer.name != rtr.name:
            ctx.drops["rtr-reply-refused"] += 1
            ctx.error(f"RTR at {source[0]} answered as {peer.name}, configured as {rtr.name}")
            return
        del self.outstanding[message.nonce]
        was_up = self._fresh(source[0])
        self.confirmed[source[0]] = (ctx.now, seen)
        self.waiting.pop(source[0], None)
        if not was_up:
            # Keep the mapping open from now on at the keepalive pace.
            self.next_at[(source[0], pending[1])] = ctx.now + ctx.xcfg.rtr_keepalive
        self._choose(self._natted())

    def _fresh(self, address: str) -> bool:
        found = self.confirmed.get(address)
        ctx = self.ctx
        horizon = 3 * ctx.xcfg.rtr_keepalive + RETRY
        if found is None or ctx.now - found[0] > horizon:
            return False
        since, count = self.waiting.get(address, (ctx.now, 0))
        dead = max(ctx.timers.probe_dead_after, RETRY)
        return not (count >= 2 and ctx.now - since > dead)

    def _choose(self, natted: list[LocalRloc]) -> None:
        ctx = self.ctx
        up: tuple[RtrRef, ...] = ()
        if natted:
            up = tuple(r for r in ctx.xcfg.rtrs if self._fresh(str(r.address)))
        active = up[0] if up else None
        seen = None
        if active is not None:
            text = self.confirmed[str(active.address)][1].rsplit(":", 1)[0]
            with contextlib.suppress(ValueError):
                seen = ip_address(text.strip("[]"))
        if active != ctx.via_rtr or seen != ctx.via_seen or up != ctx.rtrs_up:
            if active != ctx.via_rtr:
                what = f"RTR {active.name}" if active else "our own RLOCs"
                log.info("reached through %s", what)
            ctx.via_rtr, ctx.via_seen, ctx.rtrs_up = active, seen, up
            self.changed()

    def mapping(self) -> str | None:
        """The NAT's mapping of our data port as the RTRs see it (what hole punching needs):
        two or more RTRs that answer seeing one outside address:port, endpoint-independent;
        different ones, endpoint-dependent (symmetric: only a relay reaches us); None with
        fewer than two answering."""
        seen = {self.confirmed[str(r.address)][1] for r in self.ctx.rtrs_up}
        if len(self.ctx.rtrs_up) < 2:
            return None
        return ENDPOINT_INDEPENDENT if len(seen) == 1 else ENDPOINT_DEPENDENT

    def status(self) -> dict[str, Any]:
        ctx = self.ctx
        return {
            "via": ctx.via_rtr.name if ctx.via_rtr is not None else None,
            "data_mapping": self.mapping(),
            "rtrs": [
                {
                    "name": r.name,
                    "address": str(r.address),
                    "up": self._fresh(str(r.address)),
                    "seen_as": self.confirmed.get(str(r.address), (0.0, None))[1],
                }
                for r in ctx.xcfg.rtrs
            ],
        }
