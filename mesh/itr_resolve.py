"""ITR resolving: Map-Requests to the map-resolver, and installing what the Map-Replies say.

A Map-Reply (to a resolve or an RLOC-probe) installs its records in the map-cache; with
encryption on, the ETR key it carries is verified against the peer's identity first, and a failed
exchange blocks the prefix for a short while instead of hammering the map-resolver.

What an unsigned reply may change is bounded, because anyone who sees our Map-Requests knows their
nonces: a negative reply counts only from a configured map-resolver, for a prefix that covers the
EID we asked about; a reply to a keyless RLOC-probe proves liveness (and refreshes the entry when
it repeats its RLOCs), but only a keyed, signed one may change where a prefix lives; and no TTL
is kept longer than a day (a negative one, 15 minutes), "unlimited" included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

from lisp import (
    Action,
    EidRecord,
    EncapsulatedControl,
    MapReply,
    MapRequest,
    RequestRecord,
    RlocRecord,
)
from lisp.address import Address
from lisp.crypto import CryptoError
from lisp.kx_lcaf import extract_security
from lisp.lcaf import JsonLcaf, SecurityKey
from lisp.map_cache import MapCacheEntry
from lisp.records import TTL_UNLIMITED, eid_prefix
from mesh import lispers_peer as lispers
from mesh.config import IpAddress, IpNetwork
from mesh.key_exchange import KxRefused
from mesh.keys import EncapState, random_nonce
from mesh.kx import requested_eids
from mesh.paths import PathTable
from mesh.peer_stats import PeerTable
from mesh.xtr_context import XtrContext
from mesh.xtr_types import CONTROL_PORT, NEGATIVE_HOLD_SECONDS, LocalRloc, Pending

ReplyWaiter = Callable[[MapReply, tuple[str, int]], None]
MAX_TTL_MINUTES = 1440  # RFC 9301's default Map-Reply TTL: a mapping is asked again daily
LISPERS_STATES_LIMIT = 256  # lispers.net encap states kept (one per peer key and epoch)
MAX_NEGATIVE_TTL_MINUTES = 15  # RFC 9301 §8.1: negative Map-Replies, 15 minutes


class Resolver:
    """The ITR's Map-Requests (resolves; the prober's probes are registered here too) and what
    their Map-Replies install. Owns the outstanding requests and the resolver rotation."""

    def __init__(self, ctx: XtrContext, paths: PathTable, peers: PeerTable) -> None:
        self.ctx = ctx
        self.paths = paths
        self.peers = peers
        self.pending: dict[int, Pending] = {}
        self.resolver_index = 0
        # Diagnostics (mesh.diagnostics): called with a Map-Reply whose nonce they wait for.
        self.reply_waiters: dict[int, ReplyWaiter] = {}

    def itr_rlocs(
        self, nonce: int, local: LocalRloc, records: tuple[RequestRecord, ...]
    ) -> tuple[Address, ...]:
        """The ITR-RLOCs of a Map-Request asking for `records`: with encryption, our current
        ITR key (and its signed proof, which names what we ask for) first, then our uplinks
        that are up."""
        ctx = self.ctx
        plain = ctx.up_rloc_addresses(local)
        if not ctx.encrypt:
            return plain
        rlocs = ctx.signed_rlocs()
        first = ctx.exchange.request_itr_rloc(nonce, local.address, rlocs, requested_eids(records))
        if ctx.lispers_peers and plain == rlocs == (local.address,):
            # lispers.net deletes a key whose RLOC follows as a plain ITR-RLOC, and any
            # Map-Request may reach one of them: our only RLOC stays inside the key (our ETRs
            # take it from there). With several uplinks the others must be listed: unchanged.
            return (first,)
        return (first, *plain)

    def last_resolver(self) -> str | None:
        """The map-resolver the last Map-Request went to."""
        resolvers = self.ctx.xcfg.map_resolvers
        if not resolvers:
            return None
        return str(resolvers[(self.resolver_index - 1) % len(resolvers)])

    def send_resolve(self, address: IpAddress, mask_len: int) -> int | None:
        """Ask a map-resolver for `address`; returns the Map-Request's nonce (None: not sent)."""
        ctx = self.ctx
        resolvers = ctx.xcfg.map_resolvers
        if not resolvers:
            ctx.drops["no-map-resolver"] += 1
            return None
        resolver = resolvers[self.resolver_index % len(resolvers)]
        self.resolver_index += 1
        local = ctx.local_for(resolver.version)
        if local is None:
            ctx.drops["no-uplink"] += 1
            return None
        nonce = random_nonce()
        records = (RequestRecord(ctx.eid_address(address), mask_len),)
        request = MapRequest(
            nonce=nonce,
            itr_rlocs=self.itr_rlocs(nonce, local, records),
            records=records,
            source_eid=ctx.eid_address(ctx.our_eid(address.version)),
        )
        prefix = eid_prefix(address, mask_len)
        self.pending[nonce] = Pending(
            "resolve", ctx.keys.epoch.key_id, ctx.now, eid=(ctx.iid, prefix)
        )
        ecm = EncapsulatedControl(
            inner_source=ctx.our_eid(address.version),
            inner_dest=address,
            message=request.encode(),
            source_port=CONTROL_PORT,
        )
        ctx.stats["map-requests"] += 1
        ctx.transport.send_control(local, ecm.encode(), (str(resolver), CONTROL_PORT))
        return nonce

    def expect(self, nonce: int, pending: Pending) -> None:
        """A Map-Request sent elsewhere (an RLOC-probe) whose Map-Reply installs here."""
        self.pending[nonce] = pending

    def expire_pending(self) -> None:
        ctx = self.ctx
        horizon = max(10.0, 4 * ctx.timers.probe_dead_after)
        for nonce, pending in list(self.pending.items()):
            if ctx.now - pending.sent_at > horizon:
                del self.pending[nonce]

    def on_map_reply(self, reply: MapReply, source: tuple[str, int]) -> None:
        ctx = self.ctx
        waiter = self.reply_waiters.pop(reply.nonce, None)
        if waiter is not None:
            waiter(reply, source)
        pending = self.pending.pop(reply.nonce, None)
        if pending is None:
            ctx.drops["unsolicited-map-reply"] += 1
            return
        if pending.kind == "probe":
            rloc = ctx.prober.replied(reply.nonce, ctx.now)
            if rloc is None:
                return
            ctx.stats["probe-replies"] += 1
        accepted = [self.install_record(r, reply.nonce, pending, source) for r in reply.records]
        if pending.kind == "resolve" and not any(accepted):
            # Nothing in it was believable (a forged answer, say): the genuine one may still
            # come, so the request stays outstanding.
            self.pending[reply.nonce] = pending
        self.paths.recompute()

    def _signed(self, pending: Pending) -> bool:
        """Whether this reply's records are verified against the peer's certificate."""
        return self.ctx.encrypt and self.ctx.kx is not None and pending.key_id is not None

    def install_record(
        self, record: EidRecord, nonce: int, pending: Pending, source: tuple[str, int]
    ) -> bool:
        """Install what `record` says, as far as it may be believed; False if refused."""
        ctx, paths = self.ctx, self.paths
        try:
            prefix = record.prefix
        except ValueError:
            ctx.drops["non-ip-eid"] += 1
            return False
        if record.instance_id != ctx.iid:
            ctx.drops["wrong-instance"] += 1
            return False
        record = _capped_ttl(record)
        signed = self._signed(pending)
        if pending.kind == "probe" and (record.instance_id, prefix) != pending.eid:
            ctx.drops["probe-reply-other-prefix"] += 1  # a probe asks about one prefix
            return False
        asked = pending.eid[1] if pending.eid is not None else None
        # An answer about something we did not ask is refused, unless it is a signed record
        # of the same node's other prefix (its certificate vouches for it).
        unasked = pending.kind == "resolve" and not _covers(prefix, asked)
        if unasked and not (record.rlocs and signed):
            ctx.drops["map-reply-not-asked"] += 1
            return False
        if not record.rlocs:
            if pending.kind != "resolve" or not self._from_resolver(source):
                ctx.drops["negative-reply-not-from-resolver"] += 1
                return False
            entry = MapCacheEntry.from_record(record, ctx.now)
            paths.map_cache.insert(entry)
            paths.forget(ctx.iid, prefix)
            paths.drop_misses_in(prefix, "no-mapping")
            ctx.stats["negative-replies"] += 1
            return True
        plain, key, proof = _plain_rlocs(record)
        if not plain:
            ctx.drops["no-usable-rloc"] += 1
            return False
        if pending.kind == "probe" and paths.map_cache.exact(ctx.iid, prefix) is None:
            return False  # a probe reply for an entry we no longer hold
        encap = None
        if ctx.encrypt:
            encap = self.accept_reply_key(prefix, nonce, pending, key, proof, plain)
            if encap is None:
                if pending.kind == "resolve":
                    self.block_prefix(record, prefix)
                return False
        if pending.kind == "probe" and not signed:
            # Keyless (or, in the unauthenticated interop mode, keyed but unsigned): the key
            # it carried is taken, where the RLOCs live is not.
            if encap is not None:
                paths.entry_encap[(ctx.iid, prefix)] = encap
            return self.refresh_from_probe(record, prefix, plain)
        entry = MapCacheEntry.from_record(replace(record, rlocs=tuple(plain)), ctx.now)
        paths.map_cache.insert(entry)
        if encap is not None:
            paths.entry_encap[(ctx.iid, prefix)] = encap
        for rloc in plain:
            ctx.prober.track(str(rloc.address), ctx.now)
        ctx.stats["mappings-installed"] += 1
        return True

    def _from_resolver(self, source: tuple[str, int]) -> bool:
        return any(str(resolver) == source[0] for resolver in self.ctx.xcfg.map_resolvers)

    def refresh_from_probe(
        self, record: EidRecord, prefix: IpNetwork, plain: list[RlocRecord]
    ) -> bool:
        """An unsigned probe reply: the RLOC answered (the prober counted that). Where the reply
        repeats the cached RLOCs, it also renews the entry's lifetime; it never changes them."""
        ctx, paths = self.ctx, self.paths
        cached = paths.map_cache.exact(ctx.iid, prefix)
        if cached is None or cached.negative:
            return False
        if {str(r.address) for r in plain} != {str(r.address) for r in cached.rlocs}:
            ctx.drops["probe-reply-unsigned-change"] += 1
            return False
        renewed = MapCacheEntry.from_record(record, ctx.now)
        paths.map_cache.insert(replace(cached, expires_at=renewed.expires_at))
        return True

    def accept_reply_key(
        self,
        prefix: IpNetwork,
        nonce: int,
        pending: Pending,
        key: SecurityKey | None,
        proof: JsonLcaf | None,
        plain: list[RlocRecord],
    ) -> EncapState | None:
        """The state to seal with for `prefix` (mesh.key_exchange decides); None when refused
        (counted)."""
        ctx, paths = self.ctx, self.paths
        if pending.key_id is None:
            # A plain probe (no key offered): keep whatever key this entry already has.
            return paths.entry_encap.get((ctx.iid, prefix))
        if lispers.is_lispers(str(plain[0].address), ctx.lispers_peers):
            return self.accept_lispers_reply(prefix, pending.key_id, key, str(plain[0].address))
        try:
            encap = ctx.exchange.accept_reply(
                key,
                proof,
                nonce,
                pending.key_id,
                (ctx.iid, prefix),
                _ip_addresses(r.address for r in plain),
                ctx.now,
            )
        except KxRefused as refusal:
            fallback = ctx.fallback_encap
            if key is None and fallback is not None:
                # security.plaintext_fallback (explicit, logged): the ETR has no key for us.
                ctx.stats["kx-fallback-plaintext"] += 1
                ctx.error(f"{prefix}: the ETR at {plain[0].address} answered without a key: "
                          "plaintext (plaintext_fallback)")  # fmt: skip
                ctx.allow_plaintext_from([str(r.address) for r in plain])
                return fallback
            ctx.refused(f"key exchange for {prefix} from {plain[0].address}", refusal)
            return None
        peer_name = encap.peer_name
        # The peer's ETR key is node-wide: its other prefixes (IPv6 next to IPv4) move to the
        # new key too, or one probe would re-key only the prefix it asked about.
        for other, state in paths.entry_encap.items():
            if state.peer_name == peer_name and state is not encap:
                paths.entry_encap[other] = encap
        self.peers.key_exchanged(peer_name, prefix)
        return encap

    def accept_lispers_reply(
        self, prefix: IpNetwork, key_id: int, key: SecurityKey | None, rloc: str
    ) -> EncapState | None:
        """A lispers.net ETR (security.lispers_peers) answered our key: its profile, unsigned."""
        ctx = self.ctx
        epoch = ctx.keys.epoch_for(key_id)
        if epoch is None:
            ctx.drops["kx-stale-epoch"] += 1
            return None
        try:
            public = lispers.offered_public(key)
        except CryptoError as exc:
            ctx.drops["peer-without-encryption" if key is None else "kx-bad-key"] += 1
            ctx.error(f"{prefix}: lispers.net ETR {rloc}: {exc}")
            return None
        assert key is not None
        found = ctx.lispers_encap.get((epoch.pair.public, public))
        if found is None:
            if len(ctx.lispers_encap) >= LISPERS_STATES_LIMIT:
                ctx.lispers_encap.clear()
            found = lispers.encap_state(
                epoch.pair, public, key.cipher_suite, ctx.iid, lispers.PEER_PREFIX + rloc, ctx.now
            )
            ctx.lispers_encap[(epoch.pair.public, public)] = found
            ctx.stats["lispers-key-exchanges"] += 1
        self.peers.key_exchanged(found.peer_name, prefix)
        return found

    def block_prefix(self, record: EidRecord, prefix: IpNetwork) -> None:
        """A failed exchange installs a short negative entry so we do not hammer the MR."""
        ctx, paths = self.ctx, self.paths
        ttl_minutes = 1
        negative = EidRecord(record.eid, record.mask_len, (), ttl_minutes, Action.DROP_AUTH_FAILURE)
        entry = MapCacheEntry.from_record(negative, ctx.now)
        paths.map_cache.insert(replace(entry, expires_at=ctx.now + NEGATIVE_HOLD_SECONDS))
        paths.forget(ctx.iid, prefix)
        paths.drop_misses_in(prefix, "kx-refused")


def _plain_rlocs(
    record: EidRecord,
) -> tuple[list[RlocRecord], SecurityKey | None, JsonLcaf | None]:
    """The record's RLOCs as plain addresses, and the ETR key and proof some of them carry."""
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
    return plain, key, proof


def _capped_ttl(record: EidRecord) -> EidRecord:
    cap = MAX_TTL_MINUTES if record.rlocs else MAX_NEGATIVE_TTL_MINUTES
    if record.ttl == TTL_UNLIMITED or record.ttl > cap:
        return replace(record, ttl=cap)
    return record


def _covers(prefix: IpNetwork, asked: IpNetwork | None) -> bool:
    return asked is not None and asked.version == prefix.version and asked.subnet_of(prefix)  # type: ignore[arg-type]


def _ip_addresses(addresses: Iterable[Address]) -> tuple[IpAddress, ...]:
    return tuple(a for a in addresses if isinstance(a, IPv4Address | IPv6Address))
