"""The xTR: ITR (inside → outside) and ETR (outside → inside) of one node, and their control plane.

Packets, as they see it:
    inside (TUN) → policy(egress) → map-cache → seal + encapsulate → outside (UDP 4341)
    outside (UDP 4341) → open + replay check + source check → policy(ingress) → inside (TUN)
Control (UDP 4342): Map-Register/Notify with the map-servers, Map-Request/Reply (ECM via the
map-resolver, forwarded by the map-server to us as ETR), RLOC-probes, Info-Request/Reply.

The class owns no socket: `Transport` sends, and the node runtime (mesh.node) feeds it packets and
calls `tick` with the time, so everything here is driven by its inputs.

`Xtr` is a composition, the way Nebula's Interface holds its HostMap and LightHouse; each part
owns its state and is handed the parts it talks to (no part imports the xTR):
    XtrContext (mesh.xtr_context)  config, clock, uplinks, keys, counters shared by all parts
    PathTable  (mesh.paths)        map-cache, chosen paths, flow cache, packets waiting
    PeerTable  (mesh.peer_stats)   what we know of each remote node
    Revocation (mesh.revocation)   revoked node names; drops their keys
    KeyExchange (mesh.key_exchange) every decision about a peer's key (in XtrContext.exchange)
    Resolver   (mesh.itr_resolve)  Map-Requests out, Map-Replies in (the ITR key exchange)
    Prober     (mesh.rloc_probing) RLOC-probes, rekeying, answering SMRs
    Responder  (mesh.etr_answer)   Map-Replies for our EIDs (the ETR key exchange), SMRs out
    Registrar  (mesh.registrar)    Map-Register/Notify with each map-server
    NatCheck   (mesh.nat_check)    Info-Request/Reply: is each uplink behind a NAT, which kind
    RtrClient  (mesh.rtr_client)   behind a NAT: keepalives to the RTRs, which one reaches us
    Mobility   (mesh.mobility)     an uplink changed address: re-register, re-key, SMR the peers
    Rtr        (mesh.rtr)          the RTR role (optional): NAT bindings, relaying
    WarmStart  (mesh.warm_start)   the map-cache checkpoint
This module keeps the hot data path (inside_packet, outside_data) and routes events and ticks.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from common.policy_format import NodePolicy
from lisp import (
    Action,
    DecodeError,
    EncapsulatedControl,
    InfoMessage,
    MapNotify,
    MapReply,
    MapRequest,
    decode_control,
)
from lisp.crypto import CryptoError, packet_key_id
from lisp.nat_detect import NAT
from lisp.relay import control_message, is_control, is_relay
from lisp.relay import decode as decode_relay
from mesh.config import IpAddress, NodeConfig
from mesh.datapath import DataPath
from mesh.etr_answer import Responder
from mesh.itr_resolve import Resolver
from mesh.keys import DecapSlot, allowed_sources
from mesh.kx import KxAuthority
from mesh.mobility import Mobility
from mesh.mtu_guard import MtuGuard
from mesh.nat_check import NatCheck
from mesh.paths import PathTable
from mesh.peer_stats import PeerTable
from mesh.registrar import Registrar
from mesh.revocation import Revocation
from mesh.rloc_probing import Prober
from mesh.rtr import Rtr
from mesh.rtr_client import RtrClient
from mesh.warm_start import WarmStart
from mesh.xtr_context import XtrContext
from mesh.xtr_status import status
from mesh.xtr_types import (
    CONTROL_PORT,
    DATA_PORT,
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
# How soon `tick` wants to run again: while packets flow (a path that goes silent must be seen
# within its dead time) and at idle (new traffic, uplinks, expiry).
ACTIVE_POLL = 0.1
IDLE_POLL = 0.5


class Xtr:
    """One node's xTR, composed of parts that each own their state (see the module docstring);
    this object wires them together, runs the data path and routes events to the right part."""

    def __init__(
        self,
        config: NodeConfig,
        transport: Transport,
        kx: KxAuthority | None,
        now: float,
        link_state: Callable[[str], bool] | None = None,
    ) -> None:
        self.ctx = ctx = XtrContext(config, transport, kx, now, link_state)
        self.path_table = PathTable(ctx)
        self.peers = PeerTable(ctx, self.path_table)
        self.revocation = Revocation(ctx, self.path_table, self.peers)
        self.resolver = Resolver(ctx, self.path_table, self.peers)
        self.prober = Prober(ctx, self.path_table, self.resolver)
        self.responder = Responder(ctx, self.prober, self.peers)
        self.registrar = Registrar(ctx)
        self.nat = NatCheck(ctx)
        self.rtr_client = RtrClient(ctx, self._behind_nat, self._reached_through_changed)
        role = ctx.xcfg.rtr
        self.rtr = Rtr(ctx, role) if role is not None else None
        self.warm_start = WarmStart(ctx, self.path_table, self.prober)
        self.mobility = Mobility(
            ctx, self.registrar.registered_since, self._peer_rlocs, self.responder.send_smr
        )
        self.mtu = MtuGuard(ctx, self.path_table, self.prober)
        self.mss_clamp = config.xtr.mss_clamp if config.xtr is not None else False
        self.path_table.request = self.resolver.send_resolve
        self.path_table.deliver = self.inside_packet
        self.path_table.rekey_entry = self.prober.rekey_entry
        # The hot path's own references (these objects are never replaced).
        self.flow = self.path_table.flow
        self.keys = ctx.keys
        self.drops = ctx.drops
        self.transport = transport
        self.datapath: DataPath = ctx.datapath
        self.policy: NodePolicy | None = None
        self._sent_counters: dict[int, int] = {}  # id(EncapState) -> packets sealed, last look
        self._observed_at = now  # when _observe_traffic last looked
        self._stranded: set[tuple[int, Any]] = set()  # mappings in use with every RLOC down
        self.apply_policy(config.policy)
        security = config.security
        self.revocation.apply(security.revoked_peers, security.retired_certificates)
        self._delegate(config)

    def _delegate(self, config: NodeConfig) -> None:
        """The EIDs the controller assigned to other nodes (their app replicas), for the key
        exchange's checks of what they may claim and send from. Keys already agreed with a
        node whose delegated EIDs changed are re-scoped at once (a replica placed on a peer we
        already have a key with sends from its new EID; one that moved away no longer may)."""
        kx = self.ctx.kx
        if kx is None or config.xtr is None:
            return
        iid = config.xtr.instance_id
        grouped: dict[str, list[tuple[int, Any]]] = {}
        for name, prefix in config.security.delegated_eids:
            grouped.setdefault(name, []).append((iid, prefix))
        new = {name: tuple(eids) for name, eids in grouped.items()}
        old, kx.delegations = kx.delegations, new
        changed = {n for n in set(old) | set(new) if old.get(n) != new.get(n)}
        if not changed:
            return
        decap = self.ctx.keys.decap
        rescoped: dict[int, Any] = {}
        for key, slot in list(decap.items()):
            if slot.peer_name not in changed:
                continue
            if id(slot) not in rescoped:
                base = tuple(e for e in slot.peer_eids if e not in old.get(slot.peer_name, ()))
                eids = (*base, *new.get(slot.peer_name, ()))
                rescoped[id(slot)] = dataclasses.replace(
                    slot, peer_eids=eids, allowed=allowed_sources(eids)
                )
            decap[key] = rescoped[id(slot)]
        if rescoped:
            self.datapath.install_decap(decap)

    # The clock: whoever feeds the xTR an event sets the time first.
    @property
    def now(self) -> float:
        return self.ctx.now

    @now.setter
    def now(self, value: float) -> None:
        self.ctx.now = value

    @property
    def config(self) -> NodeConfig:
        return self.ctx.config

    @property
    def kx(self) -> KxAuthority | None:
        return self.ctx.kx

    @property
    def locals(self) -> list[LocalRloc]:
        return self.ctx.locals

    def attach_datapath(self, datapath: DataPath) -> None:
        """Carry packets through `datapath` from now on (the runtime attaches the C engine of
        mesh.fastpath): routes, keys and the network policy are installed into it."""
        self.ctx.datapath = self.datapath = datapath
        datapath.install_paths(self.path_table.paths)
        datapath.install_decap(self.ctx.keys.decap)
        datapath.set_local(self.ctx.iid, self.ctx.xcfg.eid_prefixes)
        self.apply_policy(self.policy)

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
            path = self.path_table.lookup(version, dst, packet)
            if path is None:
                return
        datapath = self.datapath
        if datapath.egress_check is not None:
            verdict = datapath.egress_check(packet, self.ctx.now)
            if verdict is not None:
                self.drops[f"policy-{verdict}"] += 1
                return
        if len(packet) > path.mtu:
            self.mtu.too_big(path, packet)
            return
        if self.mss_clamp:
            packet = self.mtu.clamp(path, packet)
        if path.relay is not None:
            # Through an RTR: with the C engine these packets are sealed in Python (counted).
            self.ctx.stats["relayed-out"] += 1
        if not datapath.send(path, packet):
            self.drops["no-path"] += 1

    # ------------------------------------------------------------------ outside → inside

    def outside_data(self, packet: bytes, source: tuple[str, int]) -> None:
        """One LISP data packet from UDP 4341."""
        if len(packet) < 8:
            self.drops["malformed"] += 1
            return
        # key-id 0, instance-id 0xFFFFFE/F: a relay frame or a data-plane control message
        if packet[0] & 0x0B == 0x08 and (is_relay(packet) or is_control(packet)):
            self._outside_shimmed(packet, source)
            return
        self._open(packet, source)

    def _open(self, packet: bytes, source: tuple[str, int]) -> None:
        ctx = self.ctx
        key_id = packet_key_id(packet)
        if key_id == 0:
            if ctx.encrypt and source[0] not in ctx.plaintext_rlocs:
                self.drops["plaintext-refused"] += 1
                return
            inner = packet[8:]
            slot = None
        else:
            slot = self.datapath.decap_slot(self.keys.decap, source[0], key_id)
            if slot is None:
                self.drops["no-key"] += 1
                self.responder.solicit_key_exchange(source[0])
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
        # No I bit means instance-id 0: a node in another instance must always say which.
        header_iid = int.from_bytes(packet[4:7], "big") if packet[0] & 0x08 else 0
        if header_iid != ctx.iid:
            self.drops["wrong-instance"] += 1
            return
        if slot is not None and not _source_allowed(inner, slot):
            self.drops["spoofed-source"] += 1
            return
        if not _destination_ours(inner, ctx.local_eids):
            # An ETR is no open relay: a peer sends to our EIDs, not through us.
            self.drops["foreign-destination"] += 1
            return
        if slot is not None:
            slot.last_used = ctx.now
            slot.packets += 1
            ctx.heard_from.add(source[0])
        ingress_check = self.datapath.ingress_check
        if ingress_check is not None:
            verdict = ingress_check(inner, ctx.now)
            if verdict is not None:
                self.drops[f"policy-{verdict}"] += 1
                return
        self.transport.write_inside(inner)

    def _outside_shimmed(self, packet: bytes, source: tuple[str, int]) -> None:
        """A data-port packet with a shim (lisp.relay): for the RTR role, an RTR's answer to our
        keepalive, or a packet an RTR relayed to us."""
        ctx = self.ctx
        if self.rtr is not None and self.rtr.on_data(packet, source):
            return
        if is_control(packet):
            try:
                message = decode_control(control_message(packet))
            except DecodeError:
                self.drops["malformed"] += 1
                return
            if isinstance(message, InfoMessage) and message.is_reply:
                self.rtr_client.on_info_reply(message, source)
            else:
                self.drops["unexpected-data-control"] += 1
            return
        if source[0] not in ctx.rtrs and not (self.rtr is not None and self.rtr.bound(source)):
            self.drops["relay-not-from-rtr"] += 1  # (an RTR takes frames for itself from its nodes)
            return
        try:
            frame = decode_relay(packet)
        except DecodeError:
            self.drops["malformed-relay"] += 1
            return
        sender = (str(frame.source), frame.source_port)
        if is_control(frame.payload):
            self._relayed_control(frame.payload, sender)
            return
        ctx.stats["relayed-in"] += 1
        if not self.datapath.deliver(frame.payload, sender[0]):
            self._open(frame.payload, sender)

    def _relayed_control(self, packet: bytes, sender: tuple[str, int]) -> None:
        """A control message an RTR brought us: answered as if it came from `sender`."""
        local = self.ctx.local_for(4 if ":" not in sender[0] else 6)
        try:
            raw = control_message(packet)
            message = decode_control(raw)
            ecm = None
            if isinstance(message, EncapsulatedControl):
                ecm, raw = message, message.message
                message = decode_control(raw)
        except DecodeError:
            self.drops["malformed-control"] += 1
            return
        if local is None:
            self.drops["no-uplink"] += 1
            return
        self.ctx.stats["relayed-control-in"] += 1
        self.control(message, raw, sender, local, ecm)

    def _behind_nat(self, uplink: str) -> bool:
        return self.nat.detector.result(uplink).state == NAT

    def _reached_through_changed(self) -> None:
        """Behind a NAT through an RTR now, or not any more: tell the map-servers, and send
        through the RTR (or not)."""
        self.registrar.refresh_now()
        self.path_table.recompute()

    def readdress(self, local: LocalRloc, address: IpAddress) -> None:
        """The runtime moved uplink `local`'s sockets to `address` (a DHCP renew, a new
        attach): take the new address and tell the mesh (mesh.mobility)."""
        old = local.address
        if address == old:
            return
        old_key = local.key
        local.address = address
        self.nat.rename(old_key, local.key)
        self.mobility.moved(local.interface, old, address)
        self.registrar.refresh_now()
        self.registrar.tick()  # now, not at the next timer run
        self.rtr_client.tick()
        self.path_table.recompute()
        # Our keys are per pair of RLOCs: re-key from the new address with every peer now.
        self.prober.probe(with_key=True)

    def routes_changed(self) -> None:
        """Addresses or routes changed: while a move is not confirmed yet, what it sent may
        have found no route (a DHCP client adds the route after the address), so again now."""
        if self.mobility.unconfirmed():
            self.registrar.refresh_now()
            self.registrar.tick()
            self.prober.probe(with_key=True)

    def _peer_rlocs(self) -> set[str]:
        """RLOCs of the peers that hold a key from us or that we send to."""
        ctx = self.ctx
        ours = {r.key for r in ctx.locals}
        return ({r for r, _ in ctx.keys.decap} | set(ctx.prober.tracked())) - ours

    # ------------------------------------------------------------------ control plane

    def control(
        self,
        message: object,
        raw: bytes,
        source: tuple[str, int],
        local: LocalRloc,
        ecm: EncapsulatedControl | None = None,
    ) -> None:
        if self.rtr is not None and self.rtr.on_control(message, raw, source, ecm):
            return
        if isinstance(message, MapReply):
            if message.probe and self.ctx.pmtu.answered(message.nonce, self.ctx.now):
                return  # a padded probe's answer (mesh.pmtu)
            self.resolver.on_map_reply(message, source)
        elif isinstance(message, MapRequest):
            self.responder.on_map_request(message, source, local, ecm)
        elif isinstance(message, MapNotify):
            self.registrar.on_map_notify(message, raw, source)
            self.mobility.tick()  # a move waits for this confirmation to tell the peers
        elif isinstance(message, InfoMessage) and ecm is None:
            self.nat.on_info_reply(raw, source)
        else:
            self.drops["unexpected-control"] += 1

    # ------------------------------------------------------------------ timers

    def tick(self, now: float) -> float:
        """Run what is due at `now`; returns when to call again at the latest (nothing here
        needs the xTR sooner unless a packet or message arrives first)."""
        ctx = self.ctx
        ctx.now = now
        self._check_uplinks()
        self.registrar.tick()
        self.nat.tick()
        self.rtr_client.tick()
        self.mobility.tick()
        if self.rtr is not None:
            self.rtr.tick()
        expired = self.path_table.expire()
        active = self._observe_traffic(now)
        self.path_table.refresh_entries()
        self.prober.probe()
        self.mtu.tick(bool(expired))
        changed = ctx.prober.transitions(now)
        for rloc, up in changed:
            log.info("RLOC %s is %s", rloc, "up" if up else "DOWN")
        if ctx.keys.rekey_due(now):
            self.prober.rekey()
        keys_expired = self._expire_keys(now)
        if changed or expired or keys_expired:
            self.path_table.recompute()
        if changed or self._stranded:
            self._ask_again_for_stranded(now)
        self.path_table.expire_misses()
        self.resolver.expire_pending()
        removed = ctx.keys.expire_decap(now, idle_after=max(30.0, 4 * ctx.timers.probe_dead_after))
        if removed:
            self.datapath.install_decap(ctx.keys.decap)
        # Deadlines, not a fixed tick: the prober's and the registrar's own, and a poll of the
        # traffic counters (fast while packets flow, so a path that stops answering is seen
        # within its dead time; slow at idle). Expiry, refresh and the uplinks ride the poll.
        poll = ACTIVE_POLL if active or self.path_table.misses else IDLE_POLL
        return min(now + poll, ctx.prober.next_deadline(now), self.registrar.next_due())

    def _ask_again_for_stranded(self, now: float) -> None:
        """A mapping in use whose RLOCs are all down: its node may have moved and its SMR may
        be lost (or a relay swallowed it), so ask the mapping system again, every retry time
        while it lasts (mesh.rloc_probing.re_resolve), instead of waiting for its TTL."""
        table = self.path_table
        recent = now - max(30.0, 4 * self.ctx.timers.probe_dead_after)
        stranded = set()
        for entry in table.map_cache:
            key = (entry.iid, entry.prefix)
            if entry.negative or key in table.paths or table.last_used.get(key, -1e18) < recent:
                continue
            usable = [r for r in entry.rlocs if r.reachable and r.priority != 255]
            if any(self.ctx.prober.is_up(str(r.address), now) for r in usable):
                continue
            stranded.add(key)
            if self.prober.re_resolve(entry):
                self.ctx.stats["re-resolved-stranded"] += 1
        self._stranded = stranded

    def _observe_traffic(self, now: float) -> bool:
        """Feed the prober what the data path did since the last look: data sent on a path (the
        RLOC owes us a sign of life) and data received from an RLOC (that sign). True if any."""
        ctx = self.ctx
        self.datapath.read_counters(now)
        seen: dict[int, int] = {}
        used: set[str] = set()
        for key, path in self.path_table.paths.items():
            encap = path.encap
            counter = seen[id(encap)] = encap.counter
            if counter > self._sent_counters.get(id(encap), 0):
                used.add(path.remote[0])
                self.path_table.last_used[key] = now
        self._sent_counters = seen
        heard = ctx.heard_from | self.datapath.received_from()
        ctx.heard_from = set()
        # Sent first, then heard: a reply in the same interval answers what was sent. What was
        # sent went out after the last look: the wait is counted from then (at most one fast
        # poll back, so a flow starting after a long idle look is not judged on time it had
        # no chance to answer in).
        since = min(now, max(self._observed_at, now - ACTIVE_POLL))
        self._observed_at = now
        for rloc in used:
            ctx.prober.used(rloc, since)
        for rloc in heard:
            ctx.prober.heard(rloc, now)
        return bool(used or heard)

    def path_mtu_signal(self, rloc: str, mtu: int) -> None:
        """The runtime read an ICMP "too big" (or the kernel's EMSGSIZE) for a datagram to
        `rloc` from an underlay socket's error queue."""
        self.mtu.signal(rloc, mtu)

    def _expire_keys(self, now: float) -> bool:
        """Keys past the hard limits seal nothing more, instead of sealing on with a key the
        peer never replaced. The mapping stays (the mapping system may be down): the next
        keyed RLOC-probe (a rekey, an SMR) brings a fresh key."""
        keys, paths = self.ctx.keys, self.path_table
        gone = {id(s) for s in keys.expire_encap(now)}
        # A path may still hold a state the key store let go (a superseded epoch's).
        held = [
            k for k, s in paths.entry_encap.items() if id(s) in gone or keys.past_limits(s, now)
        ]
        gone |= {id(paths.entry_encap[k]) for k in held}
        for iid, prefix in held:
            paths.forget(iid, prefix)
        self.ctx.stats["keys-expired"] += len(gone)
        return bool(gone)

    def _check_uplinks(self) -> None:
        ctx = self.ctx
        if ctx.link_state is None:
            return
        changed = False
        for local in ctx.locals:
            if local.interface is None:
                continue
            up = ctx.link_state(local.interface)
            if up != local.up:
                local.up = up
                changed = True
                log.info(
                    "uplink %s (%s) is %s", local.interface, local.address, "up" if up else "DOWN"
                )
        if changed:
            self.registrar.refresh_now()
            self.path_table.recompute()

    # ------------------------------------------------------------------ warm start, status

    def export_mappings(self) -> list[dict[str, Any]]:
        """The positive mappings we hold (prefixes and RLOCs, never keys), for a checkpoint."""
        return self.warm_start.export_mappings()

    def import_mappings(self, mappings: list[dict[str, Any]]) -> int:
        """Restore checkpointed mappings and probe their RLOCs (see mesh.warm_start)."""
        return self.warm_start.import_mappings(mappings)

    def status(self) -> dict[str, Any]:
        ctx = self.ctx
        self.datapath.read_counters(ctx.now)  # exact figures, not the last tick's
        policy = self.datapath.policy_status(ctx.now)
        doc = status(
            ctx, self.path_table, self.registrar, self.peers, self.revocation, policy, self.nat
        )
        doc["nat_relay"] = self.rtr_client.status()
        doc["uplink_moves"] = self.mobility.status()
        if self.rtr is not None:
            doc["rtr"] = self.rtr.status()
        return doc

    # ------------------------------------------------------------------ network policy

    def forget_policy_denied(self) -> int:
        """A new policy: what the map-server refused under the old one may be allowed now.
        Forget those negative mappings, so the next packet asks again instead of being dropped
        for the rest of their TTL. Returns how many were forgotten."""
        cache = self.path_table.map_cache
        denied = [e for e in cache if e.negative and e.action == Action.DROP_POLICY_DENIED]
        for entry in denied:
            cache.remove(entry.iid, entry.prefix)
        return len(denied)

    def apply_policy(self, policy: NodePolicy | None) -> None:
        """Enforce `policy` from now on (None: allow everything), in the data path that runs.
        Established flows the new rules still allow keep flowing."""
        self.policy = policy
        self.datapath.set_policy(policy, self.ctx.now)

    # ------------------------------------------------------------------ reconfiguration

    def reconfigure(self, config: NodeConfig, kx: KxAuthority | None) -> None:
        """Take a new config in place (same uplinks, TUN and cipher suite; the runtime checks)."""
        assert config.xtr is not None
        ctx = self.ctx
        old = ctx.xcfg
        new = config.xtr
        ctx.configure(config, kx)
        if new.instance_id != old.instance_id:
            # Another virtual network: nothing learnt in the old one applies.
            ctx.keys.encap.clear()
            self.path_table.reset()
        if (new.instance_id, new.eid_prefixes) != (old.instance_id, old.eid_prefixes):
            self.datapath.set_local(new.instance_id, new.eid_prefixes)
        self.registrar.reconfigure(old, new)
        if config.policy != self.policy:
            self.apply_policy(config.policy)
        security = config.security
        self.revocation.apply(security.revoked_peers, security.retired_certificates)
        self._delegate(config)


Prefixes = tuple[tuple[int, int, int], ...]  # (version, network, mask) as integers
# Where the source and the destination address sit in an IPv4 / IPv6 header.
_SOURCE = (slice(12, 16), slice(8, 24))
_DESTINATION = (slice(16, 20), slice(24, 40))


def _inner_address_in(inner: bytes, where: tuple[slice, slice], prefixes: Prefixes) -> bool:
    version = inner[0] >> 4
    if version == 4 and len(inner) >= 20:
        address = int.from_bytes(inner[where[0]], "big")
    elif version == 6 and len(inner) >= 40:
        address = int.from_bytes(inner[where[1]], "big")
    else:
        return False
    return any(v == version and address & mask == network for v, network, mask in prefixes)


def _destination_ours(inner: bytes, local: Prefixes) -> bool:
    """Is the inner destination address inside one of our EID prefixes?"""
    return _inner_address_in(inner, _DESTINATION, local)


def _source_allowed(inner: bytes, slot: DecapSlot) -> bool:
    """Is the inner source address one of the sending node's certified EIDs?"""
    return _inner_address_in(inner, _SOURCE, slot.allowed)
