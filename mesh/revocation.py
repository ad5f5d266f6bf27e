"""Revocation: refusing, and dropping every key shared with, nodes the controller revoked and
certificates a renewal retired."""

from __future__ import annotations

import logging

from mesh.paths import PathTable
from mesh.peer_stats import PeerTable
from mesh.xtr_context import XtrContext

log = logging.getLogger("lispmesh.xtr")


class Revocation:
    """The node names the controller revoked, and the certificates renewals retired: no key
    from them is kept or accepted."""

    def __init__(self, ctx: XtrContext, paths: PathTable, peers: PeerTable) -> None:
        self.ctx = ctx
        self.paths = paths
        self.peers = peers
        self.revoked: frozenset[str] = frozenset()
        self.retired: frozenset[str] = frozenset()

    def apply(self, revoked: frozenset[str], retired: frozenset[str] = frozenset()) -> None:
        """Drop every key shared with a revoked node, or agreed under a retired certificate
        (one a renewal replaced: whoever still holds its private key is not that node any
        more); later packets under them are `no-key`, and their key exchanges are refused."""
        ctx, paths = self.ctx, self.paths
        self.revoked = frozenset(revoked)
        self.retired = frozenset(retired)
        ctx.exchange.revoked = self.revoked  # their key exchanges are refused from now on
        ctx.exchange.retired = self.retired
        if not self.revoked and not self.retired:
            return

        def cut(peer_name: str, certificate: str) -> bool:
            return peer_name in self.revoked or certificate in self.retired

        keys = ctx.keys
        gone = [k for k, s in keys.encap.items() if cut(s.peer_name, s.certificate)]
        for k in gone:
            del keys.encap[k]
        entries = [k for k, s in paths.entry_encap.items() if cut(s.peer_name, s.certificate)]
        for iid, prefix in entries:
            paths.forget(iid, prefix)
            paths.map_cache.remove(iid, prefix)  # re-resolving is refused
        slots = [k for k, s in keys.decap.items() if cut(s.peer_name, s.certificate)]
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
                "revoked %s, %d retired certificates: dropped %d encap, %d decap keys",
                ", ".join(sorted(self.revoked)) or "no node",
                len(self.retired),
                len(gone),
                len(slots),
            )
