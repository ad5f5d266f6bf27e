"""Mobility: an uplink's address changed (a DHCP renew, a new LTE attach) and the node stays in
the mesh, its EIDs (and the sessions on them) unchanged (issue 15 item 4).

The runtime sees the change (mesh.netlink.AddressWatch), rebinds the uplink's sockets to the new
address and calls `Xtr.readdress`, which moves the uplink and then:
1. registers the new RLOC set at once (the map-server replaces the old one: same xTR-ID);
2. re-keys from the new address with every RLOC it sends to (keyed RLOC-probes, as a rekey): a
   peer's ETR indexes our key by our RLOC, so it holds a key for the new address before our
   next packets, and opens them; the old address's keys lapse idle;
3. once a map-server confirmed the new registration (a Map-Notify; after NOTIFY_WAIT seconds
   without one, anyway) sends a Solicit-Map-Request to every peer that holds a key from us or
   that we send to, SMR_ROUNDS times SMR_GAP apart (UDP may lose one): RFC 9301 §6.1, each peer
   asks the mapping system about our EIDs again (mesh.rloc_probing.Prober.on_smr) and installs
   the new RLOC set with a fresh key from our signed answer.
So a move costs one key exchange each way (a bounded re-exchange, no new certificates): RFC 8061
keys are per pair of RLOCs, and a key seen from an address it was not agreed for is not taken
(that would let anyone replay a sealed packet from anywhere). A peer behind an RTR is told through
its RTR (a relay frame naming it), since no packet of ours reaches it at an address of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mesh.config import IpAddress
from mesh.xtr_context import XtrContext

log = logging.getLogger("lispmesh.xtr")
NOTIFY_WAIT = 2.0  # seconds to wait for the map-server's confirmation before telling peers
SMR_ROUNDS = 2
SMR_GAP = 1.1  # past a receiver's SMR rate limit (mesh.xtr_types.SMR_INTERVAL)


class Mobility:
    def __init__(
        self,
        ctx: XtrContext,
        registered_since: Callable[[float], bool],
        peer_rlocs: Callable[[], set[str]],
        smr: Callable[[str], None],
    ) -> None:
        self.ctx = ctx
        self.registered_since = registered_since  # has a map-server confirmed us since then?
        self.peer_rlocs = peer_rlocs  # the RLOCs to tell
        self.smr = smr  # send one Solicit-Map-Request to an RLOC
        self.moved_at: float | None = None
        self.targets: set[str] = set()
        self.rounds_left = 0
        self.next_round = 0.0
        self.moves: list[dict[str, object]] = []  # the last few, for status

    def moved(self, interface: str | None, old: IpAddress, new: IpAddress) -> None:
        ctx = self.ctx
        log.info("uplink %s moved from %s to %s", interface or "?", old, new)
        ctx.stats["uplink-moves"] += 1
        self.moved_at = ctx.now
        # Whom we told about the old address: peers we hold keys from or send to.
        self.targets = self.peer_rlocs()
        self.rounds_left = SMR_ROUNDS
        self.next_round = ctx.now + NOTIFY_WAIT
        self.moves = [*self.moves[-4:], {"uplink": interface, "from": str(old), "to": str(new)}]

    def unconfirmed(self) -> bool:
        """Did we move, with no map-server confirming the new address yet?"""
        return self.moved_at is not None and not self.registered_since(self.moved_at)

    def tick(self) -> None:
        ctx = self.ctx
        if self.moved_at is None or self.rounds_left == 0:
            return
        first = self.rounds_left == SMR_ROUNDS
        if first and self.registered_since(self.moved_at):
            self.next_round = min(self.next_round, ctx.now)
        if ctx.now < self.next_round:
            return
        for rloc in sorted(self.targets):
            self.smr(rloc)
        ctx.stats["mobility-smrs"] += len(self.targets)
        self.rounds_left -= 1
        self.next_round = ctx.now + SMR_GAP
        if self.rounds_left == 0:
            self.moved_at = None

    def status(self) -> list[dict[str, object]]:
        return list(self.moves)
