"""Where packets go: the map-cache, the path chosen for each mapping, and packets waiting for one.

`PathTable` owns the map-cache, the key learnt for each mapping (`entry_encap`), the path chosen
for each positive mapping (best reachable RLOC, an up uplink, a key), the per-destination flow
cache of the hot path, and the misses: packets queued while their Map-Request is out. When a
mapping, a key, an RLOC's liveness or an uplink changes, `recompute` chooses again and hands the
queued packets that now have a path back to the xTR (`deliver`). Asking the map-resolver is the
resolver's job (`request`, wired by the xTR).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

from lisp import Action
from lisp.data_header import HEADER_LEN
from lisp.map_cache import MapCache, MapCacheEntry
from lisp.records import RlocRecord
from lisp.relay import relay_prefix
from mesh.config import IpAddress, IpNetwork
from mesh.keys import EncapState
from mesh.xtr_context import XtrContext
from mesh.xtr_types import DATA_PORT, FLOW_CACHE_LIMIT, LocalRloc, Miss, Path

MISS_TABLE_LIMIT = 4096


def _unwired(*_args: object) -> None:
    raise RuntimeError("PathTable used before the xTR wired it")


class PathTable:
    def __init__(self, ctx: XtrContext) -> None:
        self.ctx = ctx
        self.map_cache = MapCache()
        self.entry_encap: dict[tuple[int, IpNetwork], EncapState] = {}
        self.paths: dict[tuple[int, IpNetwork], Path] = {}
        self.flow: dict[bytes, Path | None] = {}
        self.misses: dict[tuple[int, int], Miss] = {}
        # When data was last sent on each mapping's path (the xTR notes it from the counters):
        # only mappings in use are refreshed before they expire.
        self.last_used: dict[tuple[int, IpNetwork], float] = {}
        # When each mapping was last asked again because it may have moved (resolve_again).
        self.asked_again: dict[tuple[int, IpNetwork], float] = {}
        # Wired by the xTR: ask the map-resolver about (address, mask length); send a packet
        # that waited for its mapping.
        self.request: Callable[[IpAddress, int], int | None] = _unwired
        self.deliver: Callable[[bytes], None] = _unwired
        self.rekey_entry: Callable[[MapCacheEntry], None] = _unwired

    def reset(self) -> None:
        """Another virtual network: nothing learnt in the old one applies."""
        self.map_cache = MapCache()
        self.entry_encap.clear()
        self.misses.clear()
        self.last_used.clear()
        self.asked_again.clear()
        self.recompute()

    # ------------------------------------------------------------------ the hot path's lookup

    def lookup(self, version: int, dst: bytes, packet: bytes) -> Path | None:
        """The path for a packet to `dst` that missed the flow cache; None: queued or dropped."""
        ctx = self.ctx
        if _not_overlay(version, dst):
            # Multicast, link-local, broadcast: the kernel sends some (IPv6 RS, MLD) out of every
            # interface; they never have a mapping, so do not ask the map-resolver about them.
            ctx.drops["not-overlay"] += 1
            return None
        address = int.from_bytes(dst, "big")
        entry = self.map_cache.lookup_int(ctx.iid, version, address, ctx.now)
        if entry is None:
            self.queue_miss(version, address, packet)
            return None
        if entry.negative:
            if entry.action == Action.SEND_MAP_REQUEST:
                # "Not registered yet": keep asking (rate-limited per destination) while
                # traffic lasts, so the EID is reachable as soon as it registers.
                self.queue_miss(version, address, packet)
                return None
            ctx.drops["no-mapping"] += 1
            return None
        path = self.paths.get((entry.iid, entry.prefix))
        if path is None:
            if ctx.encrypt and (entry.iid, entry.prefix) not in self.entry_encap:
                # A mapping without a key (let go idle at a rekey, or from the checkpoint):
                # the packet waits while the key exchange runs with the peer directly.
                self.rekey_entry(entry)
                self.queue_miss(version, address, packet)
                return None
            if entry.rlocs and not any(self._usable(r, ctx.now) for r in entry.rlocs):
                self.resolve_again(entry)
            ctx.drops["no-path"] += 1
            return None
        if len(self.flow) >= FLOW_CACHE_LIMIT:
            self.flow.clear()
        self.flow[dst] = path
        return path

    def _usable(self, rloc: RlocRecord, now: float) -> bool:
        if rloc.priority == 255 or not rloc.reachable:
            return False
        return self.ctx.prober.is_up(str(rloc.address), now)

    def resolve_again(self, entry: MapCacheEntry) -> None:
        """Ask the map-resolver again about a mapping in use whose every RLOC is down (its node
        died) or that its old ETR says moved (an SMR): the EID may live elsewhere now (a
        workload replaced on another node keeps its EID). Once per map_request_retry while
        traffic lasts; until an answer, the old mapping stays (it may come back)."""
        ctx = self.ctx
        key = (entry.iid, entry.prefix)
        if ctx.now - self.asked_again.get(key, -math.inf) < ctx.timers.map_request_retry:
            return
        if len(self.asked_again) >= MISS_TABLE_LIMIT:
            self.asked_again.clear()
        self.asked_again[key] = ctx.now
        ctx.stats["map-requests-moved"] += 1
        self.request(entry.prefix.network_address, entry.prefix.prefixlen)

    # ------------------------------------------------------------------ misses

    def queue_miss(self, version: int, address: int, packet: bytes) -> None:
        ctx = self.ctx
        key = (version, address)
        miss = self.misses.get(key)
        if miss is None:
            if len(self.misses) >= MISS_TABLE_LIMIT:
                ctx.drops["miss-table-full"] += 1
                return
            miss = Miss(version, address, deque(), first_seen=ctx.now)
            self.misses[key] = miss
        if len(miss.queue) >= ctx.timers.queue_limit:
            ctx.drops["queue-full"] += 1
        else:
            miss.queue.append(packet)
        if ctx.now - miss.last_request >= ctx.timers.map_request_retry:
            miss.last_request = ctx.now
            width = 32 if version == 4 else 128
            raw = IPv4Address(address) if version == 4 else IPv6Address(address)
            self.request(raw, width)

    def drop_misses_in(self, prefix: IpNetwork, reason: str) -> None:
        for key, miss in list(self.misses.items()):
            if miss.version == prefix.version and _int_in(miss.address, prefix):
                self.ctx.drops[reason] += len(miss.queue)
                del self.misses[key]

    def expire_misses(self) -> None:
        ctx = self.ctx
        horizon = 3 * ctx.timers.map_request_retry + 1.0
        for key, miss in list(self.misses.items()):
            if ctx.now - miss.first_seen > horizon:
                ctx.drops["no-mapping"] += len(miss.queue)
                del self.misses[key]

    # ------------------------------------------------------------------ mappings

    def forget(self, iid: int, prefix: IpNetwork) -> None:
        """No path (and no key) for this mapping any more."""
        self.entry_encap.pop((iid, prefix), None)
        self.paths.pop((iid, prefix), None)
        self.last_used.pop((iid, prefix), None)
        self.flow.clear()

    def expire(self) -> list[MapCacheEntry]:
        expired = self.map_cache.expire(self.ctx.now)
        for entry in expired:
            self.forget(entry.iid, entry.prefix)
        return expired

    def refresh_entries(self) -> None:
        """Re-ask the map-resolver about mappings close to expiry while they are in use (data
        sent on them during their lifetime); an idle one lapses, and its next packet asks again:
        an idle mesh sends no Map-Requests."""
        ctx = self.ctx
        margin = max(10.0, ctx.timers.map_request_retry * 3)
        for entry in self.map_cache.due_for_refresh(ctx.now, margin):
            if entry.negative:
                continue
            if self.last_used.get((entry.iid, entry.prefix), -math.inf) < entry.installed_at:
                continue
            key = (entry.prefix.version, int(entry.prefix.network_address))
            miss = self.misses.get(key)
            if miss is not None and ctx.now - miss.last_request < ctx.timers.map_request_retry:
                continue
            self.misses[key] = Miss(entry.prefix.version, key[1], deque(), ctx.now, ctx.now)
            self.request(entry.prefix.network_address, entry.prefix.prefixlen)

    def inner_mtu(self, remote: str, version: int, local: LocalRloc, encap: EncapState) -> int:
        """The largest inner packet a path to `remote` from `local` carries (mesh.pmtu); a
        new RLOC's route MTU is read from the kernel first."""
        ctx = self.ctx
        pmtu = ctx.pmtu
        if pmtu.track(remote, version) and ctx.route_mtu is not None:
            found = ctx.route_mtu(local, remote)
            if found is not None:
                pmtu.set_local(remote, found)
        return pmtu.inner_limit(remote, version, _overhead(encap), ctx.now)

    def recompute(self) -> None:
        """Choose, for every positive entry, the best reachable RLOC and an up local uplink."""
        ctx = self.ctx
        now = ctx.now
        paths: dict[tuple[int, IpNetwork], Path] = {}
        for entry in self.map_cache:
            if entry.negative or entry.expired(now):
                continue
            encap = self.entry_encap.get((entry.iid, entry.prefix)) or ctx.plain_encap
            if encap is None:
                continue
            best = None
            for rloc in sorted(entry.rlocs, key=lambda r: (r.priority, -r.weight)):
                if rloc.priority == 255 or not rloc.reachable:
                    continue
                if not ctx.prober.is_up(str(rloc.address), now):
                    continue
                version = rloc.address.version  # type: ignore[union-attr]
                local = ctx.local_for(version)
                if local is None:
                    continue
                best = (rloc, local)
                break
            if best is not None:
                rloc, local = best
                address: IpAddress = rloc.address  # type: ignore[assignment]
                paths[(entry.iid, entry.prefix)] = self._path(encap, address, local)
        self.paths = paths
        self.flow.clear()
        ctx.datapath.install_paths(paths)
        # Packets that waited for a mapping now have a path.
        for key, miss in list(self.misses.items()):
            found = self.map_cache.lookup_int(ctx.iid, miss.version, miss.address, now)
            if found is None:
                continue
            if (
                ctx.encrypt
                and not found.negative
                and (found.iid, found.prefix) not in paths
                and (found.iid, found.prefix) not in self.entry_encap
            ):
                continue  # its key exchange is still out (rekey_entry): keep waiting
            del self.misses[key]
            if (found.iid, found.prefix) in paths:
                for packet in miss.queue:
                    self.deliver(packet)
            elif not found.negative:
                ctx.drops["no-path"] += len(miss.queue)

    def _path(self, encap: EncapState, rloc: IpAddress, local: LocalRloc) -> Path:
        """Direct to the RLOC; or, relayed (mesh.rtr), to an RTR with a shim naming where the
        packet goes: the node behind the RTR when the RLOC is an RTR (by the name its
        certificate proved in the key exchange), else the RLOC, when we are the one behind a NAT."""
        ctx = self.ctx
        remote, shim, via_name, behind = str(rloc), None, None, False
        rtr = ctx.rtrs.get(remote)
        via = ctx.via_rtr
        if rtr is not None and rtr.name != encap.peer_name:  # (the RTR's own EIDs: direct)
            shim, via_name = relay_prefix(encap.peer_name, local.address, DATA_PORT), rtr.name
            behind = True
        elif via is not None and via.address.version == rloc.version:
            shim, via_name = relay_prefix(rloc, local.address, DATA_PORT), via.name
            remote = str(via.address)
        # The shim rides in front of the sealed packet: the inner packet has that much less room.
        mtu = self.inner_mtu(remote, rloc.version, local, encap) - len(shim or b"")
        return Path(
            encap, (remote, DATA_PORT), local, mtu, relay=shim, via=via_name, peer_behind_rtr=behind
        )


def _overhead(encap: EncapState) -> int:
    """Bytes a path adds around an inner packet: the LISP header and the cipher's IV and tag."""
    return HEADER_LEN + encap.cipher.overhead


def _not_overlay(version: int, dst: bytes) -> bool:
    if version == 4:
        return dst[0] >= 224 or dst[0] == 127
    return dst[0] == 0xFF or (dst[0] == 0xFE and dst[1] & 0xC0 == 0x80)


def _int_in(address: int, prefix: IpNetwork) -> bool:
    return int(prefix.network_address) == address & int(prefix.netmask)
