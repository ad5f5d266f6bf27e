"""The xTR's NAT detection: lisp.nat_detect fed with the xTR's uplinks and map-servers, its
Info-Requests sent from each uplink's control socket (so the map-server sees the mapping of the
port Map-Notifies and Map-Requests come back to), its Info-Replies taken from the control plane.

The detector re-checks an uplink at once when it comes back up or its map-servers change, and
every INTERVAL seconds (which also keeps the NAT's mapping of the control port alive).
"""

from __future__ import annotations

from typing import Any

from lisp.address import NO_ADDRESS
from lisp.nat_detect import NAT, NO_NAT, InfoServer, NatDetector, Uplink
from mesh.xtr_context import XtrContext
from mesh.xtr_types import CONTROL_PORT

INTERVAL = 15.0  # lispers.net's Info-Request period; below the 30 s conntrack UDP default
RETRY = 1.0
ATTEMPTS = 3


class NatCheck:
    def __init__(self, ctx: XtrContext) -> None:
        self.ctx = ctx
        self.detector = NatDetector(
            NO_ADDRESS, 0, interval=INTERVAL, retry=RETRY, attempts=ATTEMPTS
        )

    def tick(self) -> None:
        """Feed the detector what changed (uplinks, map-servers, our EID) and send what it asks
        for. The EID names our site to the map-server, which picks the key by it."""
        ctx, det = self.ctx, self.detector
        prefixes = ctx.xcfg.eid_prefixes
        if prefixes:
            det.eid, det.mask_len = (
                ctx.eid_address(prefixes[0].network_address),
                prefixes[0].prefixlen,
            )
        servers = [
            InfoServer(str(m.address), m.port, m.key_id, m.key) for m in ctx.xcfg.map_servers
        ]
        det.set_servers(servers if prefixes else (), ctx.now)
        det.set_uplinks((Uplink(r.key, r.key, CONTROL_PORT, r.up) for r in ctx.locals), ctx.now)
        self._send()

    def rename(self, old: str, new: str) -> None:
        """An uplink moved to another address (mesh.mobility): check it again at once."""
        self.detector.rename(old, new, new, self.ctx.now)
        self._send()

    def on_info_reply(self, raw: bytes, source: tuple[str, int]) -> None:
        reason = self.detector.on_reply(raw, source, self.ctx.now)
        if reason is None:
            self.ctx.stats["info-replies"] += 1
        else:
            self.ctx.drops[f"info-reply-{reason}"] += 1

    def recheck(self) -> None:
        """Check every uplink now (netcheck asks for a fresh answer)."""
        self.detector.recheck(self.ctx.now)
        self._send()

    def checking(self) -> bool:
        """Is a check of an up uplink still out?"""
        return any(self.detector.checking(r.key) for r in self.ctx.locals if r.up)

    def uplink_status(self, key: str) -> dict[str, Any]:
        """One uplink's NAT verdict as JSON-ready data (status and netcheck)."""
        result = self.detector.result(key)
        translated = result.translated
        checked = result.checked_at
        return {
            "state": result.state,
            "behind_nat": {NAT: True, NO_NAT: False}.get(result.state),
            "mapping": result.mapping,
            "translated": f"{translated[0]}:{translated[1]}" if translated else None,
            "seen_by": {ms: f"{a}:{p}" for ms, (a, p) in result.seen_by.items()},
            "checked_ago": round(self.ctx.now - checked, 1) if checked is not None else None,
        }

    def _send(self) -> None:
        ctx = self.ctx
        by_key = {r.key: r for r in ctx.locals}
        for send in self.detector.poll(ctx.now):
            local = by_key.get(send.uplink)
            if local is not None:
                ctx.stats["info-requests"] += 1
                ctx.transport.send_control(local, send.packet, send.dest)
