"""The xTR: ITR (inside → outside) and ETR (outside → inside) of one node, and their control plane.

Packets, as they see it:
    inside (TUN) → policy(egress) → map-cache → seal + encapsulate → outside (UDP 4341)
    outside (UDP 4341) → open + replay check + source check → policy(ingress) → inside (TUN)
Control (UDP 4342): Map-Register/Notify with the map-servers, Map-Request/Reply (ECM via the
map-resolver, forwarded by the map-server to us as ETR), RLOC-probes.

The class owns no socket: `Transport` sends, and the node runtime (mesh.node) feeds it packets and
calls `tick` with the time, so everything here is driven by its inputs.

This module keeps the coordinator and the hot data path (inside_packet, outside_data, path
choice); the control plane lives beside it: mesh.itr_resolve (Map-Request/Reply as ITR),
mesh.rloc_probing, mesh.etr_answer (Map-Requests as ETR, SMR), mesh.registrar (Map-Register/
Notify), mesh.revocation, mesh.warm_start and mesh.xtr_status; mesh.xtr_types holds what they
share.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from common.policy_format import NodePolicy
from lisp import Action, EncapsulatedControl, InstanceId, MapNotify, MapReply, MapRequest
from lisp.address import Address
from lisp.crypto import CryptoError, packet_key_id
from lisp.map_cache import MapCache, MapCacheEntry
from lisp.registration import Registration
from lisp.rloc_probe import RlocProber
from mesh.config import IpAddress, IpNetwork, MapServerRef, NodeConfig
from mesh.etr_answer import on_map_request, solicit_key_exchange
from mesh.fastpath import FastPath
from mesh.itr_resolve import on_map_reply, send_resolve
from mesh.keys import DecapSlot, EncapState, KeyStore, random_nonce
from mesh.kx import KxAuthority
from mesh.policy import PolicyEngine
from mesh.registrar import on_map_notify, register
from mesh.revocation import apply_revocations
from mesh.rloc_probing import probe, rekey, send_probe
from mesh.warm_start import export_mappings, import_mappings
from mesh.xtr_status import status
from mesh.xtr_types import (
    CONTROL_PORT,
    DATA_PORT,
    FAST_DROP_REASONS,
    FLOW_CACHE_LIMIT,
    MAP_REPLY_TTL_MINUTES,
    NEGATIVE_HOLD_SECONDS,
    SMR_INTERVAL,
    LocalRloc,
    Miss,
    Path,
    PeerInfo,
    Pending,
    Transport,
)

__all__ = [
    "CONTROL_PORT",
    "DATA_PORT",
    "FAST_DROP_REASONS",
    "FLOW_CACHE_LIMIT",
    "MAP_REPLY_TTL_MINUTES",
    "NEGATIVE_HOLD_SECONDS",
    "SMR_INTERVAL",
    "LocalRloc",
    "Miss",
    "Path",
    "PeerInfo",
    "Pending",
    "Transport",
    "Xtr",
]

log = logging.getLogger("lispmesh.xtr")


class Xtr:
    def __init__(
        self,
        config: NodeConfig,
        transport: Transport,
        kx: KxAuthority | None,
        now: float,
        link_state: Callable[[str], bool] | None = None,
    ) -> None:
        assert config.xtr is not None
        self.config = config
        self.xcfg = config.xtr
        self.timers = config.xtr.timers
        self.iid = config.xtr.instance_id
        self.transport = transport
        self.kx = kx
        self.encrypt = config.security.encryption
        self.link_state = link_state
        self.locals = [
            LocalRloc(r.address, r.interface, r.priority, r.weight) for r in config.xtr.rlocs
        ]
        self.locals.sort(key=lambda r: (r.priority, -r.weight))
        self.keys = KeyStore(
            cipher_suite=config.security.cipher_suite,
            instance_id=self.iid,
            rekey_after_seconds=config.security.rekey_after_seconds,
            rekey_after_packets=config.security.rekey_after_packets,
            interop=not config.security.authenticate_key_exchange,
        )
        self.keys.start(now)
        self.map_cache = MapCache()
        self.prober = RlocProber(self.timers.probe_interval, self.timers.probe_dead_after)
        self.registrations = {
            str(ms.address): (ms, Registration(self.timers.register_interval))
            for ms in config.xtr.map_servers
        }
        self.xtr_id = int.from_bytes(random_nonce().to_bytes(8, "big") * 2, "big")
        self.drops: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.errors: deque[str] = deque(maxlen=20)
        self.misses: dict[tuple[int, int], Miss] = {}
        self.pending: dict[int, Pending] = {}
        self.entry_encap: dict[tuple[int, IpNetwork], EncapState] = {}
        self.paths: dict[tuple[int, IpNetwork], Path] = {}
        self.flow: dict[bytes, Path | None] = {}
        self.peers: dict[str, PeerInfo] = {}
        self.resolver_index = 0
        self.smr_sent: dict[str, float] = {}
        self.smr_handled: dict[str, float] = {}
        # Diagnostics (mesh.diagnostics): called with a Map-Reply whose nonce they wait for.
        self.reply_waiters: dict[int, Callable[[MapReply, tuple[str, int]], None]] = {}
        # The C data path, when the runtime enabled it (mesh.fastpath); `data_fd` gives the data
        # socket of an uplink for its routes.
        self.fast: FastPath | None = None
        self.data_fd: Callable[[LocalRloc], int] | None = None
        # Policy hooks: the Python engine's checks while the Python data path enforces the
        # network policy (see apply_policy); None means allow.
        self.egress_policy: Callable[[bytes], str | None] | None = None
        self.ingress_policy: Callable[[bytes], str | None] | None = None
        self.now = now
        self.policy = PolicyEngine(None, now)
        self.apply_policy(config.policy)
        # Node names the controller revoked: no key from them is kept or accepted.
        self.revoked: frozenset[str] = frozenset()
        apply_revocations(self, config.security.revoked_peers)

    # ------------------------------------------------------------------ inside → outside

    def inside_packet(self, packet: bytes) -> None:
        """One IP packet from the TUN device (the hot path)."""
        version = packet[0] >> 4 if packet else 0
        if version == 4 and len(packet) >= 20:
            dst = packet[16:20]
        elif version == 6 and len(packet) >= 40:
            dst = packet[24:40]
        else:
            self.drops["malformed-inside"] += 1
            return
        path = self.flow.get(dst)
        if path is None:
            path = self._resolve(version, dst, packet)
            if path is None:
                return
        if self.egress_policy is not None:
            verdict = self.egress_policy(packet)
            if verdict is not None:
                self.drops[f"policy-{verdict}"] += 1
                return
        if self.fast is not None:
            # Once a key is in the engine only the engine seals with it (one counter per key).
            if not self.fast.engine.inject(packet):
                self.drops["no-path"] += 1
            return
        self.transport.send_data(path.local, path.encap.seal(packet), path.remote)

    def _resolve(self, version: int, dst: bytes, packet: bytes) -> Path | None:
        if _not_overlay(version, dst):
            # Multicast, link-local, broadcast: the kernel sends some (IPv6 RS, MLD) out of every
            # interface; they never have a mapping, so do not ask the map-resolver about them.
            self.drops["not-overlay"] += 1
            return None
        address = int.from_bytes(dst, "big")
        entry = self.map_cache.lookup_int(self.iid, version, address, self.now)
        if entry is None:
            self._queue_miss(version, address, packet)
            return None
        if entry.negative:
            if entry.action == Action.SEND_MAP_REQUEST:
                # "Not registered yet": keep asking (rate-limited per destination) while
                # traffic lasts, so the EID is reachable as soon as it registers.
                self._queue_miss(version, address, packet)
                return None
            self.drops["no-mapping"] += 1
            return None
        path = self.paths.get((entry.iid, entry.prefix))
        if path is None:
            self.drops["no-path"] += 1
            return None
        if len(self.flow) >= FLOW_CACHE_LIMIT:
            self.flow.clear()
        self.flow[dst] = path
        return path

    def _queue_miss(self, version: int, address: int, packet: bytes) -> None:
        key = (version, address)
        miss = self.misses.get(key)
        if miss is None:
            if len(self.misses) >= 4096:
                self.drops["miss-table-full"] += 1
                return
            miss = Miss(version, address, deque(), first_seen=self.now)
            self.misses[key] = miss
        if len(miss.queue) >= self.timers.queue_limit:
            self.drops["queue-full"] += 1
        else:
            miss.queue.append(packet)
        if self.now - miss.last_request >= self.timers.map_request_retry:
            miss.last_request = self.now
            width = 32 if version == 4 else 128
            raw = IPv4Address(address) if version == 4 else IPv6Address(address)
            send_resolve(self, raw, width)

    # ------------------------------------------------------------------ outside → inside

    def outside_data(self, packet: bytes, source: tuple[str, int]) -> None:
        """One LISP data packet from UDP 4341."""
        if len(packet) < 8:
            self.drops["malformed"] += 1
            return
        key_id = packet_key_id(packet)
        if key_id == 0:
            if self.encrypt:
                self.drops["plaintext-refused"] += 1
                return
            inner = packet[8:]
            slot = None
        else:
            slot = self.keys.decap.get((source[0], key_id))
            if slot is None or self.fast is not None:
                # With the C data path every installed key lives in the engine: what it hands
                # back has no key (opening it here would split the replay window in two).
                self.drops["no-key"] += 1
                solicit_key_exchange(self, source[0])
                return
            try:
                counter, inner = slot.cipher.open(packet)
            except CryptoError:
                self.drops["decrypt-failure"] += 1
                return
            if not slot.window.accept(counter):
                self.drops["replay"] += 1
                return
        if not inner:
            self.drops["malformed"] += 1
            return
        if packet[0] & 0x08 and int.from_bytes(packet[4:7], "big") != self.iid:
            self.drops["wrong-instance"] += 1
            return
        if slot is not None:
            if not _source_allowed(inner, slot):
                self.drops["spoofed-source"] += 1
                return
            slot.last_used = self.now
            slot.packets += 1
        if self.ingress_policy is not None:
            verdict = self.ingress_policy(inner)
            if verdict is not None:
                self.drops[f"policy-{verdict}"] += 1
                return
        self.transport.write_inside(inner)

    # ------------------------------------------------------------------ control plane

    def control(
        self,
        message: object,
        raw: bytes,
        source: tuple[str, int],
        local: LocalRloc,
        ecm: EncapsulatedControl | None = None,
    ) -> None:
        if isinstance(message, MapReply):
            on_map_reply(self, message, source)
        elif isinstance(message, MapRequest):
            on_map_request(self, message, source, local, ecm)
        elif isinstance(message, MapNotify):
            on_map_notify(self, message, raw, source)
        else:
            self.drops["unexpected-control"] += 1

    # ------------------------------------------------------------------ shared helpers

    def _our_eid(self, version: int) -> IpAddress:
        for address in self.xcfg.eid_addresses:
            if address.version == version:
                return address
        return IPv4Address(0) if version == 4 else IPv6Address(0)

    def _eid_address(self, address: IpAddress) -> Address:
        return InstanceId(self.iid, address) if self.iid else address

    def _local_for(self, version: int) -> LocalRloc | None:
        for local in self.locals:
            if local.up and local.address.version == version:
                return local
        return None

    def _forget_prefix(self, iid: int, prefix: IpNetwork) -> None:
        self.entry_encap.pop((iid, prefix), None)
        self.paths.pop((iid, prefix), None)
        self.flow.clear()

    def _recompute_paths(self) -> None:
        """Choose, for every positive entry, the best reachable RLOC and an up local uplink."""
        paths: dict[tuple[int, IpNetwork], Path] = {}
        for entry in self.map_cache:
            if entry.negative or entry.expired(self.now):
                continue
            encap = self.entry_encap.get((entry.iid, entry.prefix))
            if encap is None and self.encrypt:
                continue
            best = None
            for rloc in sorted(entry.rlocs, key=lambda r: (r.priority, -r.weight)):
                if rloc.priority == 255 or not rloc.reachable:
                    continue
                if not self.prober.is_up(str(rloc.address), self.now):
                    continue
                version = rloc.address.version  # type: ignore[union-attr]
                local = self._local_for(version)
                if local is None:
                    continue
                best = (rloc, local)
                break
            if best is not None and encap is not None:
                rloc, local = best
                paths[(entry.iid, entry.prefix)] = Path(
                    encap, (str(rloc.address), DATA_PORT), local
                )
        self.paths = paths
        self.flow.clear()
        if self.fast is not None and self.data_fd is not None:
            fd_of = self.data_fd
            self.fast.sync_paths(paths, {id(p): fd_of(p.local) for p in paths.values()})
        # Packets that waited for a mapping now have a path.
        for key, miss in list(self.misses.items()):
            found = self.map_cache.lookup_int(self.iid, miss.version, miss.address, self.now)
            if found is None:
                continue
            del self.misses[key]
            if (found.iid, found.prefix) in paths:
                for packet in miss.queue:
                    self.inside_packet(packet)
            elif not found.negative:
                self.drops["no-path"] += len(miss.queue)

    # ------------------------------------------------------------------ timers

    def tick(self, now: float) -> None:
        self.now = now
        self._check_uplinks()
        for ms, registration in self.registrations.values():
            if registration.due(now):
                register(self, ms, registration)
        expired = self.map_cache.expire(now)
        for entry in expired:
            self._forget_prefix(entry.iid, entry.prefix)
        self._refresh_entries()
        probe(self)
        changed = self.prober.transitions(now)
        for rloc, up in changed:
            log.info("RLOC %s is %s", rloc, "up" if up else "DOWN")
        if self.keys.rekey_due(now):
            rekey(self)
        if changed or expired:
            self._recompute_paths()
        self._expire_misses()
        self._expire_pending()
        if self.fast is not None:
            self.fast.read_counters(now)
        removed = self.keys.expire_decap(
            now, idle_after=max(30.0, 4 * self.timers.probe_dead_after)
        )
        if removed and self.fast is not None:
            self.fast.sync_decap(self.keys.decap)

    def _check_uplinks(self) -> None:
        if self.link_state is None:
            return
        changed = False
        for local in self.locals:
            if local.interface is None:
                continue
            up = self.link_state(local.interface)
            if up != local.up:
                local.up = up
                changed = True
                log.info(
                    "uplink %s (%s) is %s", local.interface, local.address, "up" if up else "DOWN"
                )
        if changed:
            for _, registration in self.registrations.values():
                registration.refresh_now(self.now)
            self._recompute_paths()

    def _refresh_entries(self) -> None:
        margin = max(10.0, self.timers.map_request_retry * 3)
        for entry in self.map_cache.due_for_refresh(self.now, margin):
            if entry.negative:
                continue
            key = (entry.prefix.version, int(entry.prefix.network_address))
            miss = self.misses.get(key)
            if miss is not None and self.now - miss.last_request < self.timers.map_request_retry:
                continue
            self.misses[key] = Miss(entry.prefix.version, key[1], deque(), self.now, self.now)
            send_resolve(self, entry.prefix.network_address, entry.prefix.prefixlen)

    def _expire_misses(self) -> None:
        horizon = 3 * self.timers.map_request_retry + 1.0
        for key, miss in list(self.misses.items()):
            if self.now - miss.first_seen > horizon:
                self.drops["no-mapping"] += len(miss.queue)
                del self.misses[key]

    def _expire_pending(self) -> None:
        horizon = max(10.0, 4 * self.timers.probe_dead_after)
        for nonce, pending in list(self.pending.items()):
            if self.now - pending.sent_at > horizon:
                del self.pending[nonce]

    def _error(self, message: str) -> None:
        log.warning("%s", message)
        self.errors.append(message)

    # ------------------------------------------------------------------ entry points kept on Xtr

    def _send_resolve(self, address: IpAddress, mask_len: int) -> int | None:
        return send_resolve(self, address, mask_len)

    def _send_probe(self, entry: MapCacheEntry, rloc: str, with_key: bool) -> int | None:
        return send_probe(self, entry, rloc, with_key)

    def _register(self, ms: MapServerRef, registration: Registration) -> None:
        register(self, ms, registration)

    def export_mappings(self) -> list[dict[str, Any]]:
        """The positive mappings we hold (prefixes and RLOCs, never keys), for a checkpoint."""
        return export_mappings(self)

    def import_mappings(self, mappings: list[dict[str, Any]]) -> int:
        """Restore checkpointed mappings and probe their RLOCs (see mesh.warm_start)."""
        return import_mappings(self, mappings)

    def status(self) -> dict[str, Any]:
        return status(self)

    # ------------------------------------------------------------------ network policy

    def apply_policy(self, policy: NodePolicy | None) -> None:
        """Enforce `policy` from now on (None: allow everything), in the data path that runs:
        the C engine once attached, else the Python reference through the hooks. Established
        flows the new rules still allow keep flowing."""
        self.policy.replace_policy(policy, self.now)
        if self.fast is not None:
            self.fast.set_policy(policy, self.now)
        python = self.fast is None and policy is not None
        self.egress_policy = self._egress_check if python else None
        self.ingress_policy = self._ingress_check if python else None

    def _egress_check(self, packet: bytes) -> str | None:
        return None if self.policy.check(packet, "egress", self.now).allowed else "denied"

    def _ingress_check(self, packet: bytes) -> str | None:
        return None if self.policy.check(packet, "ingress", self.now).allowed else "denied"

    def _policy_status(self) -> dict[str, Any]:
        if self.fast is not None:
            return self.fast.policy_status(self.now)
        return self.policy.status(self.now)

    # ------------------------------------------------------------------ reconfiguration

    def reconfigure(self, config: NodeConfig, kx: KxAuthority | None) -> None:
        """Take a new config in place (same uplinks, TUN and cipher suite; the runtime checks)."""
        assert config.xtr is not None
        old = self.xcfg
        new = config.xtr
        self.config = config
        self.xcfg = new
        self.timers = new.timers
        self.kx = kx
        self.keys.rekey_after_seconds = config.security.rekey_after_seconds
        self.keys.rekey_after_packets = config.security.rekey_after_packets
        self.prober.interval = new.timers.probe_interval
        self.prober.dead_after = new.timers.probe_dead_after
        if new.instance_id != old.instance_id:
            # Another virtual network: nothing learnt in the old one applies.
            self.iid = new.instance_id
            self.keys.instance_id = new.instance_id
            self.map_cache = MapCache()
            self.entry_encap.clear()
            self.keys.encap.clear()
            self.misses.clear()
            self._recompute_paths()
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
            for _, registration in self.registrations.values():
                registration.refresh_now(self.now)
        for _, registration in self.registrations.values():
            registration.interval = new.timers.register_interval
        if config.policy != self.policy.policy:
            self.apply_policy(config.policy)
        apply_revocations(self, config.security.revoked_peers)


def _not_overlay(version: int, dst: bytes) -> bool:
    if version == 4:
        return dst[0] >= 224 or dst[0] == 127
    return dst[0] == 0xFF or (dst[0] == 0xFE and dst[1] & 0xC0 == 0x80)


def _source_allowed(inner: bytes, slot: DecapSlot) -> bool:
    """Is the inner source address one of the sending node's certified EIDs?"""
    version = inner[0] >> 4
    if version == 4 and len(inner) >= 20:
        source = int.from_bytes(inner[12:16], "big")
    elif version == 6 and len(inner) >= 40:
        source = int.from_bytes(inner[8:24], "big")
    else:
        return False
    for allowed_version, network, mask in slot.allowed:
        if allowed_version == version and source & mask == network:
            return True
    return False
