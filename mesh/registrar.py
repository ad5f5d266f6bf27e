"""ETR registering: periodic Map-Registers to our map-servers and their Map-Notifies."""

from __future__ import annotations

import math
import os
from typing import Any

from lisp import EidRecord, MapNotify, MapRegister, RlocRecord
from lisp.auth import sign, verify
from lisp.registration import Registration
from mesh.config import MapServerRef, XtrConfig
from mesh.keys import random_nonce
from mesh.xtr_context import XtrContext


class Registrar:
    """Our registration with each map-server (by address): when it is due, what it sent, whether
    the map-server confirmed it. Owns the xTR-ID the registrations carry."""

    def __init__(self, ctx: XtrContext) -> None:
        self.ctx = ctx
        timers = ctx.timers
        self.registrations = {
            str(ms.address): (ms, Registration(timers.register_interval))
            for ms in ctx.xcfg.map_servers
        }
        # 128 random bits (RFC 9301 §5.6), as lispers.net's: not one 64-bit value twice.
        self.xtr_id = int.from_bytes(os.urandom(16), "big")

    def tick(self) -> None:
        for ms, registration in self.registrations.values():
            if registration.due(self.ctx.now):
                self.register(ms, registration)

    def next_due(self) -> float:
        """When the next Map-Register is due (math.inf: no map-server)."""
        return min((reg.next_send for _, reg in self.registrations.values()), default=math.inf)

    def registered_since(self, when: float) -> bool:
        """Has a map-server confirmed a registration of ours at or after `when`?"""
        return any(
            reg.last_notify is not None and reg.last_notify >= when
            for _, reg in self.registrations.values()
        )

    def refresh_now(self) -> None:
        """Register again at the next tick (our RLOCs or EIDs changed)."""
        for _, registration in self.registrations.values():
            registration.refresh_now(self.ctx.now)

    def reconfigure(self, old: XtrConfig, new: XtrConfig) -> None:
        """Keep the registrations of unchanged map-servers; start the new ones."""
        registrations = {}
        for ms in new.map_servers:
            key = str(ms.address)
            kept = self.registrations.get(key)
            if kept is not None and kept[0] == ms:
                registrations[key] = kept
            else:
                registrations[key] = (ms, Registration(new.timers.register_interval))
        self.registrations = registrations
        if (old.eid_prefixes, old.instance_id) != (new.eid_prefixes, new.instance_id):
            self.refresh_now()
        for _, registration in self.registrations.values():
            registration.interval = new.timers.register_interval

    def register(self, ms: MapServerRef, registration: Registration) -> None:
        ctx = self.ctx
        local = ctx.local_for(ms.address.version)
        if local is None:
            return
        rlocs = tuple(
            RlocRecord(address, priority, weight, local=True, reachable=reachable)
            for address, priority, weight, reachable in ctx.advertised_rlocs()
        )
        records = tuple(
            EidRecord(
                ctx.eid_address(prefix.network_address),
                prefix.prefixlen,
                rlocs,
                ttl=ctx.timers.register_ttl_minutes,
                authoritative=True,
            )
            for prefix in ctx.xcfg.eid_prefixes
        )
        nonce = random_nonce()
        message = MapRegister(
            nonce=nonce,
            records=records,
            key_id=ms.key_id,
            want_map_notify=True,
            ttl_timeout=True,
            xtr_id=self.xtr_id,
        )
        registration.sent(nonce, ctx.now)
        ctx.stats["map-registers"] += 1
        ctx.transport.send_control(
            local, sign(message.encode(), ms.key), (str(ms.address), ms.port)
        )

    def on_map_notify(self, notify: MapNotify, raw: bytes, source: tuple[str, int]) -> None:
        ctx = self.ctx
        entry = self.registrations.get(source[0])
        if entry is None:
            ctx.drops["map-notify-unknown-source"] += 1
            return
        ms, registration = entry
        if not verify(raw, ms.key):
            ctx.drops["bad-auth"] += 1
            ctx.error(f"Map-Notify from {source[0]} failed authentication")
            return
        if registration.notified(notify.nonce, ctx.now):
            ctx.stats["map-notifies"] += 1
        else:
            ctx.drops["map-notify-stale"] += 1

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "address": key,
                "registered": reg.registered,
                "registers_sent": reg.sent_count,
                "notifies": reg.notify_count,
            }
            for key, (_, reg) in self.registrations.items()
        ]
