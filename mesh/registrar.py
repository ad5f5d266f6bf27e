"""ETR registering: periodic Map-Registers to our map-servers and their Map-Notifies."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lisp import EidRecord, MapNotify, MapRegister, RlocRecord
from lisp.auth import sign, verify
from lisp.registration import Registration
from mesh.config import MapServerRef
from mesh.keys import random_nonce

if TYPE_CHECKING:
    from mesh.xtr import Xtr


def register(xtr: Xtr, ms: MapServerRef, registration: Registration) -> None:
    local = xtr._local_for(ms.address.version)
    if local is None:
        return
    rlocs = tuple(
        RlocRecord(r.address, r.priority, r.weight, local=True, reachable=r.up) for r in xtr.locals
    )
    records = tuple(
        EidRecord(
            xtr._eid_address(prefix.network_address),
            prefix.prefixlen,
            rlocs,
            ttl=xtr.timers.register_ttl_minutes,
            authoritative=True,
        )
        for prefix in xtr.xcfg.eid_prefixes
    )
    nonce = random_nonce()
    message = MapRegister(
        nonce=nonce,
        records=records,
        key_id=ms.key_id,
        want_map_notify=True,
        ttl_timeout=True,
        xtr_id=xtr.xtr_id,
    )
    registration.sent(nonce, xtr.now)
    xtr.stats["map-registers"] += 1
    xtr.transport.send_control(local, sign(message.encode(), ms.key), (str(ms.address), ms.port))


def on_map_notify(xtr: Xtr, notify: MapNotify, raw: bytes, source: tuple[str, int]) -> None:
    entry = xtr.registrations.get(source[0])
    if entry is None:
        xtr.drops["map-notify-unknown-source"] += 1
        return
    ms, registration = entry
    if not verify(raw, ms.key):
        xtr.drops["bad-auth"] += 1
        xtr._error(f"Map-Notify from {source[0]} failed authentication")
        return
    if registration.notified(notify.nonce, xtr.now):
        xtr.stats["map-notifies"] += 1
    else:
        xtr.drops["map-notify-stale"] += 1
