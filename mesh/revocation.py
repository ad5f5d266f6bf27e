"""Revocation: refusing, and dropping every key shared with, nodes the controller revoked."""

from __future__ import annotations

import logging

from mesh.paths import PathTable
from mesh.peer_stats import PeerTable
from mesh.xtr_context import XtrContext

log = logging.getLogger("lispmesh.xtr")


class Revocation:
    """The node names the controller revoked: no key from them is kept or accepted."""

    def __init__(self, ctx: XtrContext, paths: PathTable, peers: PeerTable) -> None:
        self.ctx = ctx
        self.paths = paths
        self.peers = peers
        self.revoked: frozenset[str] = frozenset()

    def apply(self, revoked: frozenset[str]) -> None:
        """Drop every key shared with a revoked node; later packets under them are `no-key`."""
        ctx, paths = self.ctx, self.paths
        self.revoked = frozenset(revoked)
        ctx.exchange.revoked = self.revoked  # their key exchanges are refused from now on
        if not self.revoked:
            return
        keys = ctx.keys
        gone = [k for k, s in keys.encap.items() if s.peer_name in self.revoked]
        for k in gone:
            del keys.encap[k]
        entries = [k for k, s in paths.entry_encap.items() if s.peer_name in self.revoked]
        for iid, prefix in entries:
            paths.forget(iid, prefix)
            paths.map_cache.remove(iid, prefix)  # re-resolving is refused
        slots = [k for k, s in keys.decap.items() if s.peer_name in self.revoked]
        for slot in slots:
            del keys.decap[slot]
        for name in self.revoked:
            self.peers.forget(name)
        if slots:
            ctx.datapath.install_decap(keys.decap)
        if gone or entries:
            paths.recompute()
        if gone or entries or slots:
            log.warning(
                "revoked %s: dropped %d encap, %d decap keys",
                ", ".join(sorted(self.revoked)),
                len(gone),
                len(slots),
            )
