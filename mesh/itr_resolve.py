"""ITR resolving: Map-Requests to the map-resolver, and installing what the Map-Replies say.

A Map-Reply (to a resolve or an RLOC-probe) installs its records in the map-cache; with
encryption on, the ETR key it carries is verified against the peer's identity first, and a failed
exchange blocks the prefix for a short while instead of hammering the map-resolver.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Any

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
from lisp.kx_lcaf import build_request_itr_rloc, extract_security, public_key_of
from lisp.map_cache import MapCacheEntry
from lisp.records import eid_prefix
from mesh.config import IpAddress, IpNetwork
from mesh.identity import IdentityError
from mesh.keys import EncapState, random_nonce
from mesh.revocation import refuse_revoked
from mesh.xtr_types import CONTROL_PORT, NEGATIVE_HOLD_SECONDS, LocalRloc, PeerInfo, Pending

if TYPE_CHECKING:
    from mesh.xtr import Xtr


def itr_rlocs(xtr: Xtr, nonce: int, local: LocalRloc) -> tuple[Address, ...]:
    plain: tuple[Address, ...] = tuple(r.address for r in xtr.locals if r.up) or (local.address,)
    if not xtr.encrypt:
        return plain
    epoch = xtr.keys.epoch
    proof = None
    if xtr.kx is not None:
        rlocs = tuple(r.address for r in xtr.locals)
        proof = xtr.kx.request_proof(
            nonce, xtr.keys.cipher_suite, epoch.key_id, epoch.pair.public, rlocs
        )
    first = build_request_itr_rloc(xtr.keys.cipher_suite, epoch.pair.public, local.address, proof)
    return (first, *plain)


def send_resolve(xtr: Xtr, address: IpAddress, mask_len: int) -> int | None:
    """Ask a map-resolver for `address`; returns the Map-Request's nonce (None: not sent)."""
    resolvers = xtr.xcfg.map_resolvers
    if not resolvers:
        xtr.drops["no-map-resolver"] += 1
        return None
    resolver = resolvers[xtr.resolver_index % len(resolvers)]
    xtr.resolver_index += 1
    local = xtr._local_for(resolver.version)
    if local is None:
        xtr.drops["no-uplink"] += 1
        return None
    nonce = random_nonce()
    request = MapRequest(
        nonce=nonce,
        itr_rlocs=itr_rlocs(xtr, nonce, local),
        records=(RequestRecord(xtr._eid_address(address), mask_len),),
        source_eid=xtr._eid_address(xtr._our_eid(address.version)),
    )
    prefix = eid_prefix(address, mask_len)
    xtr.pending[nonce] = Pending("resolve", xtr.keys.epoch.key_id, xtr.now, eid=(xtr.iid, prefix))
    ecm = EncapsulatedControl(
        inner_source=xtr._our_eid(address.version),
        inner_dest=address,
        message=request.encode(),
        source_port=CONTROL_PORT,
    )
    xtr.stats["map-requests"] += 1
    xtr.transport.send_control(local, ecm.encode(), (str(resolver), CONTROL_PORT))
    return nonce


def on_map_reply(xtr: Xtr, reply: MapReply, source: tuple[str, int]) -> None:
    waiter = xtr.reply_waiters.pop(reply.nonce, None)
    if waiter is not None:
        waiter(reply, source)
    pending = xtr.pending.pop(reply.nonce, None)
    if pending is None:
        xtr.drops["unsolicited-map-reply"] += 1
        return
    if pending.kind == "probe":
        rloc = xtr.prober.replied(reply.nonce, xtr.now)
        if rloc is None:
            return
        xtr.stats["probe-replies"] += 1
    for record in reply.records:
        install_record(xtr, record, reply.nonce, pending)
    xtr._recompute_paths()


def install_record(xtr: Xtr, record: EidRecord, nonce: int, pending: Pending) -> None:
    try:
        prefix = record.prefix
    except ValueError:
        xtr.drops["non-ip-eid"] += 1
        return
    if record.instance_id != xtr.iid:
        xtr.drops["wrong-instance"] += 1
        return
    if not record.rlocs:
        entry = MapCacheEntry.from_record(record, xtr.now)
        xtr.map_cache.insert(entry)
        xtr._forget_prefix(xtr.iid, prefix)
        drop_misses_in(xtr, prefix, "no-mapping")
        xtr.stats["negative-replies"] += 1
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
        xtr.drops["no-usable-rloc"] += 1
        return
    encap = None
    if xtr.encrypt:
        encap = accept_reply_key(xtr, record, prefix, nonce, pending, key, proof, plain)
        if encap is None:
            if pending.kind == "resolve":
                block_prefix(xtr, record, prefix)
            return
    entry = MapCacheEntry.from_record(replace(record, rlocs=tuple(plain)), xtr.now)
    if pending.kind == "probe" and xtr.map_cache.exact(xtr.iid, prefix) is None:
        return  # a probe reply for an entry we no longer hold
    xtr.map_cache.insert(entry)
    if encap is not None:
        xtr.entry_encap[(xtr.iid, prefix)] = encap
    for rloc in plain:
        xtr.prober.track(str(rloc.address), xtr.now)
    xtr.stats["mappings-installed"] += 1


def accept_reply_key(
    xtr: Xtr,
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
        return xtr.entry_encap.get((xtr.iid, prefix))
    if key is None:
        xtr._error(f"{prefix}: the ETR offered no encryption key; refusing plaintext")
        xtr.drops["peer-without-encryption"] += 1
        return None
    try:
        public = public_key_of(key)
    except CryptoError as exc:
        xtr._error(f"{prefix}: unusable key from the ETR: {exc}")
        xtr.drops["kx-bad-key"] += 1
        return None
    if key.cipher_suite != xtr.keys.cipher_suite:
        xtr._error(f"{prefix}: ETR answered cipher suite {key.cipher_suite}")
        xtr.drops["kx-cipher-mismatch"] += 1
        return None
    peer_name = f"rloc:{plain[0].address}"
    if xtr.kx is not None:
        try:
            peer = xtr.kx.verify_reply(
                proof,
                nonce,
                key.cipher_suite,
                pending.key_id,
                public,
                ((xtr.iid, prefix),),
                _ip_addresses(r.address for r in plain),
                xtr.now,
            )
        except IdentityError as exc:
            xtr._error(f"key exchange for {prefix} from {plain[0].address} refused: {exc}")
            xtr.drops["kx-auth-failed"] += 1
            return None
        peer_name = peer.name
    if refuse_revoked(xtr, peer_name):
        return None
    encap = xtr.keys.install_encap(pending.key_id, public, peer_name, xtr.now)
    if encap is None:
        xtr.drops["kx-stale-epoch"] += 1
        return None
    # The peer's ETR key is node-wide: its other prefixes (IPv6 next to IPv4) move to the
    # new key too, or one probe would re-key only the prefix it asked about.
    for other, state in xtr.entry_encap.items():
        if state.peer_name == peer_name and state is not encap:
            xtr.entry_encap[other] = encap
    info = xtr.peers.setdefault(peer_name, PeerInfo(peer_name))
    info.eids.add(str(prefix))
    info.last_key_exchange = xtr.now
    return encap


def block_prefix(xtr: Xtr, record: EidRecord, prefix: IpNetwork) -> None:
    """A failed exchange installs a short negative entry so we do not hammer the MR."""
    ttl_minutes = 1
    negative = EidRecord(record.eid, record.mask_len, (), ttl_minutes, Action.DROP_AUTH_FAILURE)
    entry = MapCacheEntry.from_record(negative, xtr.now)
    xtr.map_cache.insert(replace(entry, expires_at=xtr.now + NEGATIVE_HOLD_SECONDS))
    xtr._forget_prefix(xtr.iid, prefix)
    drop_misses_in(xtr, prefix, "kx-refused")


def drop_misses_in(xtr: Xtr, prefix: IpNetwork, reason: str) -> None:
    for key, miss in list(xtr.misses.items()):
        if miss.version == prefix.version and _int_in(miss.address, prefix):
            xtr.drops[reason] += len(miss.queue)
            del xtr.misses[key]


def _ip_addresses(addresses: Iterable[Address]) -> tuple[IpAddress, ...]:
    return tuple(a for a in addresses if isinstance(a, IPv4Address | IPv6Address))


def _int_in(address: int, prefix: IpNetwork) -> bool:
    return int(prefix.network_address) == address & int(prefix.netmask)
