"""RLOC-probing: liveness probes, keyed probes (rekeying, warm start) and answering SMRs."""

from __future__ import annotations

import logging
import math
from ipaddress import IPv4Address, IPv6Address, ip_address

from lisp import InstanceId, MapRequest, RequestRecord
from lisp.address import Address
from lisp.kx_lcaf import build_request_itr_rloc
from lisp.map_cache import MapCacheEntry
from mesh import lispers_peer as lispers
from mesh.config import IpNetwork
from mesh.itr_resolve import Resolver
from mesh.keys import random_nonce
from mesh.paths import PathTable
from mesh.pmtu import OUTER_HEADERS
from mesh.xtr_context import XtrContext
from mesh.xtr_types import CONTROL_PORT, SMR_INTERVAL, Pending

log = logging.getLogger("lispmesh.xtr")
SMR_TABLE_LIMIT = 4096


class Prober:
    """Sends the RLOC-probes (their replies install through the resolver) and rekeys.
    Owns the rate limit of the SMRs it answers; the liveness of each RLOC is `ctx.prober`."""

    def __init__(self, ctx: XtrContext, paths: PathTable, resolver: Resolver) -> None:
        self.ctx = ctx
        self.paths = paths
        self.resolver = resolver
        self.smr_handled: dict[str, float] = {}
        self.rekeyed: dict[tuple[int, IpNetwork], float] = {}  # rekey_entry's rate limit
        self.re_resolved: dict[tuple[int, IpNetwork], float] = {}  # on_smr's, per mapping

    def probe(self, with_key: bool = False, only: set[str] | None = None) -> None:
        """RLOC-probe what is due. `with_key` probes every mapping (or those with an RLOC in
        `only`) at each of its RLOCs carrying our current ITR key: that is how rekeying, and
        re-keying after a restart or an SMR, happen without the map-resolver."""
        ctx = self.ctx
        if with_key:
            for entry in list(self.paths.map_cache):
                if entry.negative:
                    continue
                for record in entry.rlocs:
                    rloc = str(record.address)
                    if only is None or rloc in only:
                        ctx.prober.track(rloc, ctx.now)
                        self.send_probe(entry, rloc, with_key=True)
            return
        due = ctx.prober.due(ctx.now)
        if not due:
            return
        targets: dict[str, MapCacheEntry] = {}
        for entry in self.paths.map_cache:
            if entry.negative:
                continue
            for record in entry.rlocs:
                targets.setdefault(str(record.address), entry)
        for target in due:
            found = targets.get(target)
            if found is None:
                ctx.prober.untrack(target)
                continue
            self.send_probe(found, target, with_key=False)

    def send_probe(self, entry: MapCacheEntry, rloc: str, with_key: bool) -> int | None:
        """RLOC-probe `rloc` for `entry`; returns the probe's nonce (None: no uplink)."""
        ctx = self.ctx
        address = ip_address(rloc)
        local = ctx.local_for(address.version)
        if local is None:
            return None
        nonce = random_nonce()
        records = (
            RequestRecord(ctx.eid_address(entry.prefix.network_address), entry.prefix.prefixlen),
        )
        rlocs: tuple[Address, ...]
        if lispers.is_lispers(rloc, ctx.lispers_peers) and ctx.encrypt:
            # A keyless probe makes lispers.net drop our key, and so does our RLOC repeated as
            # a plain ITR-RLOC after the key: one keyed, unsigned ITR-RLOC (mesh.lispers_peer).
            with_key = True
            epoch = ctx.keys.epoch
            rlocs = (
                build_request_itr_rloc(
                    ctx.keys.cipher_suite, epoch.pair.public, local.address, None
                ),
            )
        elif with_key:
            rlocs = self.resolver.itr_rlocs(nonce, local, records)
        else:
            rlocs = (local.address,)
        request = MapRequest(
            nonce=nonce,
            itr_rlocs=rlocs,
            records=records,
            source_eid=ctx.eid_address(ctx.our_eid(entry.prefix.version)),
            probe=True,
        )
        ctx.prober.sent(rloc, nonce, ctx.now)
        self.resolver.expect(
            nonce,
            Pending(
                "probe",
                ctx.keys.epoch.key_id if with_key else None,
                ctx.now,
                rloc=rloc,
                eid=(entry.iid, entry.prefix),
            ),
        )
        ctx.stats["probes"] += 1
        ctx.transport.send_control(local, request.encode(), (rloc, CONTROL_PORT))
        return nonce

    def send_padded_probe(self, entry: MapCacheEntry, rloc: str, size: int) -> int | None:
        """An RLOC-probe for `entry` padded to an outer IP packet of `size` bytes (DF, like
        every underlay datagram): its answer says that size reaches `rloc` (mesh.pmtu). Keyless,
        and not a liveness probe; the padding follows the Map-Request, which receivers ignore."""
        ctx = self.ctx
        address = ip_address(rloc)
        local = ctx.local_for(address.version)
        if local is None:
            return None
        nonce = random_nonce()
        request = MapRequest(
            nonce=nonce,
            itr_rlocs=(local.address,),
            records=(
                RequestRecord(
                    ctx.eid_address(entry.prefix.network_address), entry.prefix.prefixlen
                ),
            ),
            source_eid=ctx.eid_address(ctx.our_eid(entry.prefix.version)),
            probe=True,
        ).encode()
        padding = max(0, size - OUTER_HEADERS[address.version] - len(request))
        ctx.transport.send_control(local, request + bytes(padding), (rloc, CONTROL_PORT))
        return nonce

    def rekey(self) -> None:
        ctx, paths = self.ctx, self.paths
        epoch_began = ctx.keys.epoch.created_at
        epoch = ctx.keys.rotate(ctx.now)
        log.info("rekeying: new ITR key-id %d", epoch.key_id)
        # Only mappings used during the old epoch are rekeyed; an idle one loses its key (as
        # WireGuard lets an unused session lapse) but keeps its mapping, and its next packet
        # runs the key exchange with the peer (rekey_entry): an idle mesh sends no exchanges.
        idle = [
            entry
            for entry in paths.map_cache
            if not entry.negative
            and paths.last_used.get((entry.iid, entry.prefix), -math.inf) < epoch_began
        ]
        for entry in idle:
            paths.forget(entry.iid, entry.prefix)  # the mapping stays (and in the checkpoint)
        if idle:
            ctx.stats["rekey-idle-forgotten"] += len(idle)
            paths.recompute()
        # Make-before-break: the old key keeps sealing until each peer answers the new one.
        idle_keys = {(e.iid, e.prefix) for e in idle}
        for entry in list(paths.map_cache):
            if entry.negative or (entry.iid, entry.prefix) in idle_keys:
                continue
            for record in entry.rlocs:
                rloc = str(record.address)
                ctx.prober.track(rloc, ctx.now)
                self.send_probe(entry, rloc, with_key=True)

    def rekey_entry(self, entry: MapCacheEntry) -> None:
        """A packet for a mapping that has no key (forgotten idle at a rekey, or restored from
        the checkpoint): run the key exchange with its RLOCs directly (rate-limited)."""
        ctx = self.ctx
        key = (entry.iid, entry.prefix)
        if ctx.now - self.rekeyed.get(key, -math.inf) < ctx.timers.map_request_retry:
            return
        if len(self.rekeyed) > SMR_TABLE_LIMIT:
            self.rekeyed.clear()
        self.rekeyed[key] = ctx.now
        ctx.stats["rekey-on-use"] += 1
        for record in entry.rlocs:
            rloc = str(record.address)
            ctx.prober.track(rloc, ctx.now)
            self.send_probe(entry, rloc, with_key=True)

    def on_smr(self, source: tuple[str, int], request: MapRequest | None = None) -> None:
        """A Solicit-Map-Request (rate-limited per source). From an RLOC we send to: that ETR
        lost our key, probe it with our current key. From an address we do not know, naming
        EIDs we hold a mapping for: the peer moved (mesh.mobility), so ask the mapping system
        about them again (RFC 9301 §6.1's SMR-invoked Map-Request; the answer is the peer's
        signed one, so a forged SMR costs at most one request per prefix per retry time)."""
        ctx = self.ctx
        last = self.smr_handled.get(source[0], float("-inf"))
        if ctx.now - last < SMR_INTERVAL:
            ctx.drops["smr-rate-limited"] += 1
            return
        if len(self.smr_handled) > SMR_TABLE_LIMIT:
            self.smr_handled.clear()
        self.smr_handled[source[0]] = ctx.now
        tracked = source[0] in ctx.prober.tracked()
        if tracked:
            self.probe(with_key=True, only={source[0]})
        # Mappings of the EIDs it names that do not send to where it spoke from: it moved.
        entries = [
            e
            for e in (self._solicited(request) if request is not None else [])
            if source[0] not in {str(r.address) for r in e.rlocs if r.reachable}
        ]
        if not tracked and not entries:
            ctx.drops["smr-unknown-rloc"] += 1
            return
        ctx.stats["smr-received"] += 1
        for entry in entries:
            if self.re_resolve(entry):
                ctx.stats["smr-re-resolved"] += 1
            else:
                ctx.drops["smr-rate-limited"] += 1

    def re_resolve(self, entry: MapCacheEntry) -> bool:
        """Ask the mapping system about `entry` again (at most once per retry time per
        mapping); False when it was asked too recently."""
        ctx = self.ctx
        key = (entry.iid, entry.prefix)
        if ctx.now - self.re_resolved.get(key, -math.inf) < ctx.timers.map_request_retry:
            return False
        if len(self.re_resolved) > SMR_TABLE_LIMIT:
            self.re_resolved.clear()
        self.re_resolved[key] = ctx.now
        self.resolver.send_resolve(entry.prefix.network_address, entry.prefix.prefixlen)
        return True

    def _solicited(self, request: MapRequest) -> list[MapCacheEntry]:
        """The positive mappings we hold for the EIDs an SMR names."""
        ctx = self.ctx
        found: dict[tuple[int, IpNetwork], MapCacheEntry] = {}
        for record in request.records[:8]:
            eid = record.eid
            iid = eid.iid if isinstance(eid, InstanceId) else 0
            address = eid.address if isinstance(eid, InstanceId) else eid
            if iid != ctx.iid or not isinstance(address, IPv4Address | IPv6Address):
                continue
            entry = self.paths.map_cache.lookup_int(iid, address.version, int(address), ctx.now)
            if entry is not None and not entry.negative:
                found[(entry.iid, entry.prefix)] = entry
        return list(found.values())
