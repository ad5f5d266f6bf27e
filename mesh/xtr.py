"""The xTR: ITR (inside → outside) and ETR (outside → inside) of one node, and their control plane.

Packets, as they see it:
    inside (TUN) → policy(egress) → map-cache → seal + encapsulate → outside (UDP 4341)
    outside (UDP 4341) → open + replay check + source check → policy(ingress) → inside (TUN)
Control (UDP 4342): Map-Register/Notify with the map-servers, Map-Request/Reply (ECM via the
map-resolver, forwarded by the map-server to us as ETR), RLOC-probes.

The class owns no socket: `Transport` sends, and the node runtime (mesh.node) feeds it packets and
calls `tick` with the time, so everything here is driven by its inputs.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any, Protocol

from lisp import (
    Action,
    EidRecord,
    EncapsulatedControl,
    InstanceId,
    MapNotify,
    MapRegister,
    MapReply,
    MapRequest,
    RequestRecord,
    RlocRecord,
)
from lisp.address import Address
from lisp.auth import sign, verify
from lisp.crypto import CryptoError, packet_key_id
from lisp.kx_lcaf import (
    build_reply_rloc_address,
    build_request_itr_rloc,
    extract_security,
    find_itr_security,
    public_key_of,
)
from lisp.map_cache import MapCache, MapCacheEntry
from lisp.policy import NodePolicy, PolicyEngine
from lisp.records import eid_prefix
from lisp.registration import Registration
from lisp.rloc_probe import RlocProber
from mesh.config import IpAddress, IpNetwork, MapServerRef, NodeConfig
from mesh.fastpath import FastPath
from mesh.identity import IdentityError
from mesh.keys import DecapSlot, EncapState, KeyStore, random_nonce
from mesh.kx import KxAuthority
from mesh.peer_stats import peer_rows

log = logging.getLogger("lispmesh.xtr")

DATA_PORT = 4341
CONTROL_PORT = 4342
FLOW_CACHE_LIMIT = 65536
# Drop reasons the C data path counts itself (merged into status).
FAST_DROP_REASONS = (
    "decrypt-failure",
    "replay",
    "spoofed-source",
    "wrong-instance",
    "malformed",
    "policy-denied",
)
MAP_REPLY_TTL_MINUTES = 15
NEGATIVE_HOLD_SECONDS = 5.0  # how long a failed key exchange blocks a prefix before retrying
SMR_INTERVAL = 1.0  # at most one Solicit-Map-Request per peer RLOC per second, each way


class Transport(Protocol):
    def send_data(self, local: LocalRloc, packet: bytes, dest: tuple[str, int]) -> None: ...
    def send_control(self, local: LocalRloc, packet: bytes, dest: tuple[str, int]) -> None: ...
    def write_inside(self, packet: bytes) -> None: ...


@dataclass
class LocalRloc:
    address: IpAddress
    interface: str | None
    priority: int
    weight: int
    up: bool = True

    @property
    def key(self) -> str:
        return str(self.address)


@dataclass(slots=True)
class Path:
    """Where packets to one map-cache entry go: the key to seal with and the RLOC to send to."""

    encap: EncapState
    remote: tuple[str, int]
    local: LocalRloc


@dataclass
class Miss:
    """Packets waiting for the Map-Reply of one destination address."""

    version: int
    address: int
    queue: deque[bytes]
    last_request: float = float("-inf")
    first_seen: float = 0.0


@dataclass
class Pending:
    """An outstanding Map-Request: what it asked and with which of our keys."""

    kind: str  # "resolve" or "probe"
    key_id: int | None
    sent_at: float
    rloc: str | None = None
    eid: tuple[int, IpNetwork] | None = None


@dataclass
class PeerInfo:
    """What we know of a remote node, for status."""

    name: str
    eids: set[str] = field(default_factory=set)
    last_key_exchange: float | None = None


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
        self._apply_revocations(config.security.revoked_peers)

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
            self._send_resolve(raw, width)

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
                self._solicit_key_exchange(source[0])
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
            self._on_map_reply(message, source)
        elif isinstance(message, MapRequest):
            self._on_map_request(message, source, local, ecm)
        elif isinstance(message, MapNotify):
            self._on_map_notify(message, raw, source)
        else:
            self.drops["unexpected-control"] += 1

    # ITR: resolving ------------------------------------------------------

    def _our_eid(self, version: int) -> IpAddress:
        for address in self.xcfg.eid_addresses:
            if address.version == version:
                return address
        return IPv4Address(0) if version == 4 else IPv6Address(0)

    def _eid_address(self, address: IpAddress) -> Address:
        return InstanceId(self.iid, address) if self.iid else address

    def _itr_rlocs(self, nonce: int, local: LocalRloc) -> tuple[Address, ...]:
        plain: tuple[Address, ...] = tuple(r.address for r in self.locals if r.up) or (
            local.address,
        )
        if not self.encrypt:
            return plain
        epoch = self.keys.epoch
        proof = None
        if self.kx is not None:
            rlocs = tuple(r.address for r in self.locals)
            proof = self.kx.request_proof(
                nonce, self.keys.cipher_suite, epoch.key_id, epoch.pair.public, rlocs
            )
        first = build_request_itr_rloc(
            self.keys.cipher_suite, epoch.pair.public, local.address, proof
        )
        return (first, *plain)

    def _local_for(self, version: int) -> LocalRloc | None:
        for local in self.locals:
            if local.up and local.address.version == version:
                return local
        return None

    def _send_resolve(self, address: IpAddress, mask_len: int) -> int | None:
        """Ask a map-resolver for `address`; returns the Map-Request's nonce (None: not sent)."""
        resolvers = self.xcfg.map_resolvers
        if not resolvers:
            self.drops["no-map-resolver"] += 1
            return None
        resolver = resolvers[self.resolver_index % len(resolvers)]
        self.resolver_index += 1
        local = self._local_for(resolver.version)
        if local is None:
            self.drops["no-uplink"] += 1
            return None
        nonce = random_nonce()
        request = MapRequest(
            nonce=nonce,
            itr_rlocs=self._itr_rlocs(nonce, local),
            records=(RequestRecord(self._eid_address(address), mask_len),),
            source_eid=self._eid_address(self._our_eid(address.version)),
        )
        prefix = eid_prefix(address, mask_len)
        self.pending[nonce] = Pending(
            "resolve", self.keys.epoch.key_id, self.now, eid=(self.iid, prefix)
        )
        ecm = EncapsulatedControl(
            inner_source=self._our_eid(address.version),
            inner_dest=address,
            message=request.encode(),
            source_port=CONTROL_PORT,
        )
        self.stats["map-requests"] += 1
        self.transport.send_control(local, ecm.encode(), (str(resolver), CONTROL_PORT))
        return nonce

    def _on_map_reply(self, reply: MapReply, source: tuple[str, int]) -> None:
        waiter = self.reply_waiters.pop(reply.nonce, None)
        if waiter is not None:
            waiter(reply, source)
        pending = self.pending.pop(reply.nonce, None)
        if pending is None:
            self.drops["unsolicited-map-reply"] += 1
            return
        if pending.kind == "probe":
            rloc = self.prober.replied(reply.nonce, self.now)
            if rloc is None:
                return
            self.stats["probe-replies"] += 1
        for record in reply.records:
            self._install_record(record, reply.nonce, pending)
        self._recompute_paths()

    def _install_record(self, record: EidRecord, nonce: int, pending: Pending) -> None:
        try:
            prefix = record.prefix
        except ValueError:
            self.drops["non-ip-eid"] += 1
            return
        if record.instance_id != self.iid:
            self.drops["wrong-instance"] += 1
            return
        if not record.rlocs:
            entry = MapCacheEntry.from_record(record, self.now)
            self.map_cache.insert(entry)
            self._forget_prefix(self.iid, prefix)
            self._drop_misses_in(prefix, "no-mapping")
            self.stats["negative-replies"] += 1
            return
        plain: list[RlocRecord] = []
        key = None
        proof = None
        for rloc in record.rlocs:
            rkey, rproof, ip = extract_security(rloc.address)
            if ip is None:
                continue
            plain.append(replace(rloc, address=ip))
            key = key or rkey
            proof = proof or rproof
        if not plain:
            self.drops["no-usable-rloc"] += 1
            return
        encap = None
        if self.encrypt:
            encap = self._accept_reply_key(record, prefix, nonce, pending, key, proof, plain)
            if encap is None:
                if pending.kind == "resolve":
                    self._block_prefix(record, prefix)
                return
        entry = MapCacheEntry.from_record(replace(record, rlocs=tuple(plain)), self.now)
        if pending.kind == "probe" and self.map_cache.exact(self.iid, prefix) is None:
            return  # a probe reply for an entry we no longer hold
        self.map_cache.insert(entry)
        if encap is not None:
            self.entry_encap[(self.iid, prefix)] = encap
        for rloc in plain:
            self.prober.track(str(rloc.address), self.now)
        self.stats["mappings-installed"] += 1

    def _accept_reply_key(
        self,
        record: EidRecord,
        prefix: IpNetwork,
        nonce: int,
        pending: Pending,
        key: Any,
        proof: Any,
        plain: list[RlocRecord],
    ) -> EncapState | None:
        if pending.key_id is None:
            # A plain probe (no key offered): keep whatever key this entry already has.
            return self.entry_encap.get((self.iid, prefix))
        if key is None:
            self._error(f"{prefix}: the ETR offered no encryption key; refusing plaintext")
            self.drops["peer-without-encryption"] += 1
            return None
        try:
            public = public_key_of(key)
        except CryptoError as exc:
            self._error(f"{prefix}: unusable key from the ETR: {exc}")
            self.drops["kx-bad-key"] += 1
            return None
        if key.cipher_suite != self.keys.cipher_suite:
            self._error(f"{prefix}: ETR answered cipher suite {key.cipher_suite}")
            self.drops["kx-cipher-mismatch"] += 1
            return None
        peer_name = f"rloc:{plain[0].address}"
        if self.kx is not None:
            try:
                peer = self.kx.verify_reply(
                    proof,
                    nonce,
                    key.cipher_suite,
                    pending.key_id,
                    public,
                    ((self.iid, prefix),),
                    _ip_addresses(r.address for r in plain),
                    self.now,
                )
            except IdentityError as exc:
                self._error(f"key exchange for {prefix} from {plain[0].address} refused: {exc}")
                self.drops["kx-auth-failed"] += 1
                return None
            peer_name = peer.name
        if self._refuse_revoked(peer_name):
            return None
        encap = self.keys.install_encap(pending.key_id, public, peer_name, self.now)
        if encap is None:
            self.drops["kx-stale-epoch"] += 1
            return None
        # The peer's ETR key is node-wide: its other prefixes (IPv6 next to IPv4) move to the
        # new key too, or one probe would re-key only the prefix it asked about.
        for other, state in self.entry_encap.items():
            if state.peer_name == peer_name and state is not encap:
                self.entry_encap[other] = encap
        info = self.peers.setdefault(peer_name, PeerInfo(peer_name))
        info.eids.add(str(prefix))
        info.last_key_exchange = self.now
        return encap

    def _block_prefix(self, record: EidRecord, prefix: IpNetwork) -> None:
        """A failed exchange installs a short negative entry so we do not hammer the MR."""
        ttl_minutes = 1
        negative = EidRecord(record.eid, record.mask_len, (), ttl_minutes, Action.DROP_AUTH_FAILURE)
        entry = MapCacheEntry.from_record(negative, self.now)
        self.map_cache.insert(replace(entry, expires_at=self.now + NEGATIVE_HOLD_SECONDS))
        self._forget_prefix(self.iid, prefix)
        self._drop_misses_in(prefix, "kx-refused")

    def _forget_prefix(self, iid: int, prefix: IpNetwork) -> None:
        self.entry_encap.pop((iid, prefix), None)
        self.paths.pop((iid, prefix), None)
        self.flow.clear()

    def _drop_misses_in(self, prefix: IpNetwork, reason: str) -> None:
        for key, miss in list(self.misses.items()):
            if miss.version == prefix.version and _int_in(miss.address, prefix):
                self.drops[reason] += len(miss.queue)
                del self.misses[key]

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

    # ETR: answering -------------------------------------------------------

    def _our_prefix_for(self, record: RequestRecord) -> IpNetwork | None:
        eid = record.eid
        iid = eid.iid if isinstance(eid, InstanceId) else 0
        address = eid.address if isinstance(eid, InstanceId) else eid
        if iid != self.iid or not isinstance(address, IPv4Address | IPv6Address):
            return None
        for prefix in self.xcfg.eid_prefixes:
            if prefix.version == address.version and address in prefix:
                return prefix
        return None

    def _solicit_key_exchange(self, itr_rloc: str) -> None:
        """Packets from `itr_rloc` under a key we do not hold (we restarted, or expired it):
        send it a Solicit-Map-Request (RFC 9301 §6.1), so it runs a keyed exchange with us
        again instead of sealing into the void until its next rekey. Rate-limited per ITR."""
        last = self.smr_sent.get(itr_rloc, float("-inf"))
        if self.now - last < SMR_INTERVAL:
            return
        try:
            address = ip_address(itr_rloc)
        except ValueError:
            return
        local = self._local_for(address.version)
        if local is None or not self.xcfg.eid_prefixes:
            return
        if len(self.smr_sent) > 4096:
            self.smr_sent.clear()
        self.smr_sent[itr_rloc] = self.now
        prefix = self.xcfg.eid_prefixes[0]
        request = MapRequest(
            nonce=random_nonce(),
            itr_rlocs=tuple(r.address for r in self.locals if r.up) or (local.address,),
            records=(RequestRecord(self._eid_address(prefix.network_address), prefix.prefixlen),),
            source_eid=self._eid_address(self._our_eid(prefix.version)),
            smr=True,
        )
        self.stats["smr-sent"] += 1
        self.transport.send_control(local, request.encode(), (itr_rloc, CONTROL_PORT))

    def _on_smr(self, source: tuple[str, int]) -> None:
        """An ETR lost our key: probe its RLOC with our current key (rate-limited)."""
        last = self.smr_handled.get(source[0], float("-inf"))
        if self.now - last < SMR_INTERVAL:
            self.drops["smr-rate-limited"] += 1
            return
        if len(self.smr_handled) > 4096:
            self.smr_handled.clear()
        self.smr_handled[source[0]] = self.now
        if source[0] not in self.prober.tracked():
            self.drops["smr-unknown-rloc"] += 1
            return
        self.stats["smr-received"] += 1
        self._probe(with_key=True, only={source[0]})

    def _on_map_request(
        self,
        request: MapRequest,
        source: tuple[str, int],
        local: LocalRloc,
        ecm: EncapsulatedControl | None,
    ) -> None:
        if request.smr and ecm is None:
            self._on_smr(source)
            return
        key, proof, itr_ip = find_itr_security(request.itr_rlocs)
        itr_ips = [a for a in request.itr_rlocs if isinstance(a, IPv4Address | IPv6Address)]
        if ecm is not None:
            target_ip = itr_ips[0] if itr_ips else itr_ip
            if target_ip is None:
                self.drops["map-request-without-itr-rloc"] += 1
                return
            dest = (str(target_ip), ecm.source_port)
        else:
            dest = source
        records = [(r, self._our_prefix_for(r)) for r in request.records]
        ours = [(r, p) for r, p in records if p is not None]
        if not ours:
            self.drops["map-request-not-ours"] += 1
            return
        reply_key = None
        key_id = None
        if key is not None and self.encrypt:
            accepted = self._accept_request_key(request, key, proof, itr_ip, itr_ips)
            if accepted is None:
                return
            key_id = accepted
            reply_key = self.keys.etr_pair.public
        out_records = []
        rloc_ips = tuple(r.address for r in self.locals)
        reply_proof = None
        if reply_key is not None and self.kx is not None and key_id is not None:
            reply_proof = self.kx.reply_proof(
                request.nonce,
                self.keys.cipher_suite,
                key_id,
                reply_key,
                tuple((self.iid, p) for _, p in ours),
                rloc_ips,
            )
        for _, prefix in ours:
            rlocs = []
            for index, mine in enumerate(self.locals):
                address: Address = mine.address
                if reply_key is not None:
                    address = build_reply_rloc_address(
                        mine.address,
                        self.keys.cipher_suite,
                        reply_key,
                        reply_proof if index == 0 else None,
                    )
                rlocs.append(
                    RlocRecord(
                        address,
                        mine.priority,
                        mine.weight,
                        local=True,
                        probed=request.probe,
                        reachable=mine.up,
                    )
                )
            out_records.append(
                EidRecord(
                    self._eid_address(prefix.network_address),
                    prefix.prefixlen,
                    tuple(rlocs),
                    ttl=MAP_REPLY_TTL_MINUTES,
                    authoritative=True,
                )
            )
        reply = MapReply(request.nonce, tuple(out_records), probe=request.probe)
        self.stats["map-replies-sent"] += 1
        self.transport.send_control(local, reply.encode(), dest)

    def _accept_request_key(
        self,
        request: MapRequest,
        key: Any,
        proof: Any,
        itr_ip: IpAddress | None,
        itr_ips: list[IpAddress],
    ) -> int | None:
        try:
            public = public_key_of(key)
        except CryptoError as exc:
            self._error(f"unusable key in a Map-Request from {itr_ip}: {exc}")
            self.drops["kx-bad-key"] += 1
            return None
        if key.cipher_suite != self.keys.cipher_suite:
            self.drops["kx-cipher-mismatch"] += 1
            self._error(f"{itr_ip} offered cipher suite {key.cipher_suite}")
            return None
        rlocs = [str(ip) for ip in itr_ips]
        if itr_ip is not None and str(itr_ip) not in rlocs:
            rlocs.append(str(itr_ip))
        peer_name = f"rloc:{itr_ip}"
        peer_eids: tuple[tuple[int, IpNetwork], ...] = ()
        key_id = 1
        if self.kx is not None:
            try:
                peer = self.kx.verify_request(
                    proof,
                    request.nonce,
                    key.cipher_suite,
                    public,
                    tuple(ip_address(r) for r in rlocs),
                    self.now,
                )
            except IdentityError as exc:
                self._error(f"key exchange from {itr_ip} refused: {exc}")
                self.drops["kx-auth-failed"] += 1
                return None
            peer_name, peer_eids, key_id = peer.name, peer.eids, peer.key_id
            if self._refuse_revoked(peer_name):
                return None
        else:
            # Interop mode: no identity, so any inner source is accepted from this key.
            peer_eids = ((self.iid, _ANY4), (self.iid, _ANY6))
        self.keys.install_decap(rlocs, key_id, public, peer_name, peer_eids, self.now)
        if self.fast is not None:
            self.fast.sync_decap(self.keys.decap)
        info = self.peers.setdefault(peer_name, PeerInfo(peer_name))
        info.last_key_exchange = self.now
        return key_id

    # ETR: registering -----------------------------------------------------

    def _register(self, ms: MapServerRef, registration: Registration) -> None:
        local = self._local_for(ms.address.version)
        if local is None:
            return
        rlocs = tuple(
            RlocRecord(r.address, r.priority, r.weight, local=True, reachable=r.up)
            for r in self.locals
        )
        records = tuple(
            EidRecord(
                self._eid_address(prefix.network_address),
                prefix.prefixlen,
                rlocs,
                ttl=self.timers.register_ttl_minutes,
                authoritative=True,
            )
            for prefix in self.xcfg.eid_prefixes
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
        registration.sent(nonce, self.now)
        self.stats["map-registers"] += 1
        self.transport.send_control(
            local, sign(message.encode(), ms.key), (str(ms.address), ms.port)
        )

    def _on_map_notify(self, notify: MapNotify, raw: bytes, source: tuple[str, int]) -> None:
        entry = self.registrations.get(source[0])
        if entry is None:
            self.drops["map-notify-unknown-source"] += 1
            return
        ms, registration = entry
        if not verify(raw, ms.key):
            self.drops["bad-auth"] += 1
            self._error(f"Map-Notify from {source[0]} failed authentication")
            return
        if registration.notified(notify.nonce, self.now):
            self.stats["map-notifies"] += 1
        else:
            self.drops["map-notify-stale"] += 1

    # ------------------------------------------------------------------ timers

    def tick(self, now: float) -> None:
        self.now = now
        self._check_uplinks()
        for ms, registration in self.registrations.values():
            if registration.due(now):
                self._register(ms, registration)
        expired = self.map_cache.expire(now)
        for entry in expired:
            self._forget_prefix(entry.iid, entry.prefix)
        self._refresh_entries()
        self._probe()
        changed = self.prober.transitions(now)
        for rloc, up in changed:
            log.info("RLOC %s is %s", rloc, "up" if up else "DOWN")
        if self.keys.rekey_due(now):
            self._rekey()
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
            self._send_resolve(entry.prefix.network_address, entry.prefix.prefixlen)

    def _probe(self, with_key: bool = False, only: set[str] | None = None) -> None:
        """RLOC-probe what is due. `with_key` probes every mapping (or those with an RLOC in
        `only`) at each of its RLOCs carrying our current ITR key: that is how rekeying, and
        re-keying after a restart or an SMR, happen without the map-resolver."""
        if with_key:
            for entry in list(self.map_cache):
                if entry.negative:
                    continue
                for record in entry.rlocs:
                    rloc = str(record.address)
                    if only is None or rloc in only:
                        self.prober.track(rloc, self.now)
                        self._send_probe(entry, rloc, with_key=True)
            return
        due = self.prober.due(self.now)
        if not due:
            return
        targets: dict[str, MapCacheEntry] = {}
        for entry in self.map_cache:
            if entry.negative:
                continue
            for record in entry.rlocs:
                targets.setdefault(str(record.address), entry)
        for target in due:
            found = targets.get(target)
            if found is None:
                self.prober.untrack(target)
                continue
            self._send_probe(found, target, with_key=False)

    def _send_probe(self, entry: MapCacheEntry, rloc: str, with_key: bool) -> int | None:
        """RLOC-probe `rloc` for `entry`; returns the probe's nonce (None: no uplink)."""
        address = ip_address(rloc)
        local = self._local_for(address.version)
        if local is None:
            return None
        nonce = random_nonce()
        itr_rlocs: tuple[Address, ...]
        itr_rlocs = self._itr_rlocs(nonce, local) if with_key else (local.address,)
        request = MapRequest(
            nonce=nonce,
            itr_rlocs=itr_rlocs,
            records=(
                RequestRecord(
                    self._eid_address(entry.prefix.network_address), entry.prefix.prefixlen
                ),
            ),
            source_eid=self._eid_address(self._our_eid(entry.prefix.version)),
            probe=True,
        )
        self.prober.sent(rloc, nonce, self.now)
        self.pending[nonce] = Pending(
            "probe",
            self.keys.epoch.key_id if with_key else None,
            self.now,
            rloc=rloc,
            eid=(entry.iid, entry.prefix),
        )
        self.stats["probes"] += 1
        self.transport.send_control(local, request.encode(), (rloc, CONTROL_PORT))
        return nonce

    def _rekey(self) -> None:
        epoch = self.keys.rotate(self.now)
        log.info("rekeying: new ITR key-id %d", epoch.key_id)
        # Make-before-break: the old key keeps sealing until each peer answers the new one.
        self._probe(with_key=True)

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

    def _all_drops(self) -> dict[str, int]:
        drops = Counter(self.drops)
        if self.fast is not None:
            stats = self.fast.stats()
            for reason in FAST_DROP_REASONS:
                if stats.get(reason):
                    drops[reason] += stats[reason]
        return dict(drops)

    def _error(self, message: str) -> None:
        log.warning("%s", message)
        self.errors.append(message)

    # ------------------------------------------------------------------ warm start

    def export_mappings(self) -> list[dict[str, Any]]:
        """The positive mappings we hold (prefixes and RLOCs, never keys), for a checkpoint."""
        return [
            {
                "iid": entry.iid,
                "prefix": str(entry.prefix),
                "rlocs": [
                    {"address": str(r.address), "priority": r.priority, "weight": r.weight}
                    for r in entry.rlocs
                ],
            }
            for entry in self.map_cache
            if not entry.negative and not entry.expired(self.now)
        ]

    def import_mappings(self, mappings: list[dict[str, Any]]) -> int:
        """Restore checkpointed mappings after a restart and probe their RLOCs with our new
        key: the peers answer directly, so the node is back in the mesh even while the
        map-resolver is unreachable. Returns how many were restored; bad items are skipped."""
        restored = 0
        for item in mappings:
            try:
                prefix = ip_network(item["prefix"])
                rlocs = tuple(
                    RlocRecord(ip_address(r["address"]), int(r["priority"]), int(r["weight"]))
                    for r in item["rlocs"]
                )
                iid = int(item["iid"])
            except (KeyError, TypeError, ValueError):
                self.drops["bad-checkpoint-mapping"] += 1
                continue
            if iid != self.iid or not rlocs or self.map_cache.exact(iid, prefix) is not None:
                continue
            ttl = self.timers.map_request_retry * 10 + 60.0  # until a fresh mapping replaces it
            self.map_cache.insert(
                MapCacheEntry(iid, prefix, rlocs, expires_at=self.now + ttl, installed_at=self.now)
            )
            for rloc in rlocs:
                self.prober.track(str(rloc.address), self.now)
            restored += 1
        if restored:
            self._probe(with_key=True)
        return restored

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
        self._apply_revocations(config.security.revoked_peers)

    # ------------------------------------------------------------------ revocation

    def _refuse_revoked(self, peer_name: str) -> bool:
        if peer_name not in self.revoked:
            return False
        self._error(f"key exchange from revoked node {peer_name} refused")
        self.drops["kx-revoked-peer"] += 1
        return True

    def _apply_revocations(self, revoked: frozenset[str]) -> None:
        """Drop every key shared with a revoked node; later packets under them are `no-key`."""
        self.revoked = frozenset(revoked)
        if not self.revoked:
            return
        gone = [k for k, s in self.keys.encap.items() if s.peer_name in self.revoked]
        for k in gone:
            del self.keys.encap[k]
        entries = [k for k, s in self.entry_encap.items() if s.peer_name in self.revoked]
        for iid, prefix in entries:
            self._forget_prefix(iid, prefix)
            self.map_cache.remove(iid, prefix)  # re-resolving meets _refuse_revoked
        slots = [k for k, s in self.keys.decap.items() if s.peer_name in self.revoked]
        for slot in slots:
            del self.keys.decap[slot]
        for name in self.revoked:
            self.peers.pop(name, None)
        if slots and self.fast is not None:
            self.fast.sync_decap(self.keys.decap)
        if gone or entries:
            self._recompute_paths()
        if gone or entries or slots:
            log.warning(
                "revoked %s: dropped %d encap, %d decap keys",
                ", ".join(sorted(self.revoked)),
                len(gone),
                len(slots),
            )

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        now = self.now
        if self.fast is not None:
            self.fast.read_counters(now)  # exact figures, not the last tick's
        entries = []
        for entry in self.map_cache:
            path = self.paths.get((entry.iid, entry.prefix))
            entries.append(
                {
                    "iid": entry.iid,
                    "prefix": str(entry.prefix),
                    "action": Action(entry.action).name if entry.negative else None,
                    "ttl_remaining": round(entry.remaining(now), 1),
                    "rlocs": [
                        {
                            "address": str(r.address),
                            "priority": r.priority,
                            "weight": r.weight,
                            "up": self.prober.is_up(str(r.address), now),
                            "rtt_ms": _rtt_ms(self.prober, str(r.address)),
                        }
                        for r in entry.rlocs
                    ],
                    "in_use": path.remote[0] if path else None,
                    "peer": path.encap.peer_name if path else None,
                    "key_id": path.encap.key_id if path else None,
                }
            )
        return {
            "eid_prefixes": [str(p) for p in self.xcfg.eid_prefixes],
            "eid_addresses": [str(a) for a in self.xcfg.eid_addresses],
            "instance_id": self.iid,
            "uplinks": [
                {
                    "address": str(r.address),
                    "interface": r.interface,
                    "priority": r.priority,
                    "weight": r.weight,
                    "up": r.up,
                }
                for r in self.locals
            ],
            "map_servers": [
                {
                    "address": key,
                    "registered": reg.registered,
                    "registers_sent": reg.sent_count,
                    "notifies": reg.notify_count,
                }
                for key, (_, reg) in self.registrations.items()
            ],
            "map_cache": entries,
            "peers": peer_rows(self, now),
            "keys": {
                "cipher_suite": self.keys.cipher_suite,
                "itr_key_id": self.keys.epoch.key_id,
                "rekeys": self.keys.rekeys,
                "encap": [
                    {"peer": s.peer_name, "key_id": s.key_id, "packets": s.counter}
                    for s in self.keys.encap.values()
                ],
                "decap": [
                    {"rloc": rloc, "key_id": kid, "peer": s.peer_name, "packets": s.packets}
                    for (rloc, kid), s in self.keys.decap.items()
                ],
            },
            "revoked_peers": sorted(self.revoked),
            "drops": self._all_drops(),
            "policy": self._policy_status(),
            "dataplane": "c" if self.fast is not None else "python",
            "stats": dict(self.stats),
            "errors": list(self.errors),
        }


_ANY4 = eid_prefix(IPv4Address(0), 0)
_ANY6 = eid_prefix(IPv6Address(0), 0)


def _ip_addresses(addresses: Iterable[Address]) -> tuple[IpAddress, ...]:
    return tuple(a for a in addresses if isinstance(a, IPv4Address | IPv6Address))


def _not_overlay(version: int, dst: bytes) -> bool:
    if version == 4:
        return dst[0] >= 224 or dst[0] == 127
    return dst[0] == 0xFF or (dst[0] == 0xFE and dst[1] & 0xC0 == 0x80)


def _int_in(address: int, prefix: IpNetwork) -> bool:
    return int(prefix.network_address) == address & int(prefix.netmask)


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


def _rtt_ms(prober: RlocProber, rloc: str) -> float | None:
    state = prober.state(rloc)
    if state is None or state.rtt is None:
        return None
    return round(state.rtt * 1000, 2)
