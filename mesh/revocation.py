"""Revocation: refusing, and dropping every key shared with, nodes the controller revoked."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mesh.xtr import Xtr

log = logging.getLogger("lispmesh.xtr")


def refuse_revoked(xtr: Xtr, peer_name: str) -> bool:
    if peer_name not in xtr.revoked:
        return False
    xtr._error(f"key exchange from revoked node {peer_name} refused")
    xtr.drops["kx-revoked-peer"] += 1
    return True


def apply_revocations(xtr: Xtr, revoked: frozenset[str]) -> None:
    """Drop every key shared with a revoked node; later packets under them are `no-key`."""
    xtr.revoked = frozenset(revoked)
    if not xtr.revoked:
        return
    gone = [k for k, s in xtr.keys.encap.items() if s.peer_name in xtr.revoked]
    for k in gone:
        del xtr.keys.encap[k]
    entries = [k for k, s in xtr.entry_encap.items() if s.peer_name in xtr.revoked]
    for iid, prefix in entries:
        xtr._forget_prefix(iid, prefix)
        xtr.map_cache.remove(iid, prefix)  # re-resolving meets refuse_revoked
    slots = [k for k, s in xtr.keys.decap.items() if s.peer_name in xtr.revoked]
    for slot in slots:
        del xtr.keys.decap[slot]
    for name in xtr.revoked:
        xtr.peers.pop(name, None)
    if slots and xtr.fast is not None:
        xtr.fast.sync_decap(xtr.keys.decap)
    if gone or entries:
        xtr._recompute_paths()
    if gone or entries or slots:
        log.warning(
            "revoked %s: dropped %d encap, %d decap keys",
            ", ".join(sorted(xtr.revoked)),
            len(gone),
            len(slots),
        )
