"""ETR answering: Map-Requests for our EIDs (accepting the ITR's key) and Solicit-Map-Requests
to ITRs whose key we no longer hold."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from lisp import (
    EidRecord,
    EncapsulatedControl,
    InstanceId,
    MapReply,
    MapRequest,
    RequestRecord,
    RlocRecord,
)
from lisp.address import Address
from lisp.crypto import CryptoError
from lisp.kx_lcaf import build_reply_rloc_address, find_itr_security, public_key_of
from lisp.records import eid_prefix
from mesh.config import IpAddress, IpNetwork
from mesh.identity import IdentityError
from mesh.keys import random_nonce
from mesh.kx import KxReplayError, requested_eids
from mesh.peer_stats import PeerTable
from mesh.rate_limit import TokenBuckets
from mesh.revocation import Revocation
from mesh.rloc_probing import Prober
from mesh.xtr_context import XtrContext
from mesh.xtr_types import CONTROL_PORT, MAP_REPLY_TTL_MINUTES, SMR_INTERVAL, LocalRloc

_ANY4 = eid_prefix(IPv4Address(0), 0)
_ANY6 = eid_prefix(IPv6Address(0), 0)
SMR_TABLE_LIMIT = 4096
# Keyed Map-Requests (each an ECDSA verify, an X25519 and an ECDSA sign) per claimed ITR-RLOC,
# and in all: far above what rekeying and probing need (a few per peer per minute), far below
# what would starve the data path sharing the event loop.
KX_PER_SOURCE = (5.0, 20.0)  # per second, burst
KX_TOTAL = (200.0, 400.0)


class Responder:
    """The ETR's answers: Map-Replies for our EIDs (accepting the ITR's key into a decap slot),
    and Solicit-Map-Requests to ITRs whose key we lost. Owns the SMR rate limit."""

    def __init__(
        self, ctx: XtrContext, prober: Prober, peers: PeerTable, revocation: Revocation
    ) -> None:
        self.ctx = ctx
        self.prober = prober
        self.peers = peers
        self.revocation = revocation
        self.smr_sent: dict[str, float] = {}
        self.kx_per_source = TokenBuckets(*KX_PER_SOURCE)
        self.kx_total = TokenBuckets(*KX_TOTAL, max_keys=1)

    def our_prefix_for(self, record: RequestRecord) -> IpNetwork | None:
        ctx = self.ctx
        eid = record.eid
        iid = eid.iid if isinstance(eid, InstanceId) else 0
        address = eid.address if isinstance(eid, InstanceId) else eid
        if iid != ctx.iid or not isinstance(address, IPv4Address | IPv6Address):
            return None
        for prefix in ctx.xcfg.eid_prefixes:
            if prefix.version == address.version and address in prefix:
                return prefix
        return None

    def solicit_key_exchange(self, itr_rloc: str) -> None:
        """Packets from `itr_rloc` under a key we do not hold (we restarted, or expired it):
        send it a Solicit-Map-Request (RFC 9301 §6.1), so it runs a keyed exchange with us
        again instead of sealing into the void until its next rekey. Rate-limited per ITR."""
        ctx = self.ctx
        last = self.smr_sent.get(itr_rloc, float("-inf"))
        if ctx.now - last < SMR_INTERVAL:
            return
        try:
            address = ip_address(itr_rloc)
        except ValueError:
            return
        local = ctx.local_for(address.version)
        if local is None or not ctx.xcfg.eid_prefixes:
            return
        if len(self.smr_sent) > SMR_TABLE_LIMIT:
            self.smr_sent.clear()
        self.smr_sent[itr_rloc] = ctx.now
        prefix = ctx.xcfg.eid_prefixes[0]
        request = MapRequest(
            nonce=random_nonce(),
            itr_rlocs=ctx.up_rloc_addresses(local),
            records=(RequestRecord(ctx.eid_address(prefix.network_address), prefix.prefixlen),),
            source_eid=ctx.eid_address(ctx.our_eid(prefix.version)),
            smr=True,
        )
        ctx.stats["smr-sent"] += 1
        ctx.transport.send_control(local, request.encode(), (itr_rloc, CONTROL_PORT))

    def on_map_request(
        self,
        request: MapRequest,
        source: tuple[str, int],
        local: LocalRloc,
        ecm: EncapsulatedControl | None,
    ) -> None:
        ctx = self.ctx
        if request.smr and ecm is None:
            self.prober.on_smr(source)
            return
        key, proof, itr_ip = find_itr_security(request.itr_rlocs)
        itr_ips = [a for a in request.itr_rlocs if isinstance(a, IPv4Address | IPv6Address)]
        if ecm is not None:
            target_ip = itr_ips[0] if itr_ips else itr_ip
            if target_ip is None:
                ctx.drops["map-request-without-itr-rloc"] += 1
                return
            dest = (str(target_ip), ecm.source_port)
        else:
            dest = source
        records = [(r, self.our_prefix_for(r)) for r in request.records]
        ours = [(r, p) for r, p in records if p is not None]
        if not ours:
            ctx.drops["map-request-not-ours"] += 1
            return
        reply_key = None
        key_id = None
        if key is not None and ctx.encrypt:
            accepted = self.accept_request_key(request, key, proof, itr_ip, itr_ips)
            if accepted is None:
                return
            key_id = accepted
            reply_key = ctx.keys.etr_pair.public
        out_records = []
        rloc_ips = tuple(r.address for r in ctx.locals)
        reply_proof = None
        if reply_key is not None and ctx.kx is not None and key_id is not None:
            reply_proof = ctx.kx.reply_proof(
                request.nonce,
                ctx.keys.cipher_suite,
                key_id,
                reply_key,
                tuple((ctx.iid, p) for _, p in ours),
                rloc_ips,
            )
        for _, prefix in ours:
            rlocs = []
            for index, mine in enumerate(ctx.locals):
                address: Address = mine.address
                if reply_key is not None:
                    address = build_reply_rloc_address(
                        mine.address,
                        ctx.keys.cipher_suite,
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
                    ctx.eid_address(prefix.network_address),
                    prefix.prefixlen,
                    tuple(rlocs),
                    ttl=MAP_REPLY_TTL_MINUTES,
                    authoritative=True,
                )
            )
        reply = MapReply(request.nonce, tuple(out_records), probe=request.probe)
        ctx.stats["map-replies-sent"] += 1
        ctx.transport.send_control(local, reply.encode(), dest)

    def accept_request_key(
        self,
        request: MapRequest,
        key: Any,
        proof: Any,
        itr_ip: IpAddress | None,
        itr_ips: list[IpAddress],
    ) -> int | None:
        ctx = self.ctx
        try:
            public = public_key_of(key)
        except CryptoError as exc:
            ctx.error(f"unusable key in a Map-Request from {itr_ip}: {exc}")
            ctx.drops["kx-bad-key"] += 1
            return None
        if key.cipher_suite != ctx.keys.cipher_suite:
            ctx.drops["kx-cipher-mismatch"] += 1
            ctx.error(f"{itr_ip} offered cipher suite {key.cipher_suite}")
            return None
        rlocs = [str(ip) for ip in itr_ips]
        if itr_ip is not None and str(itr_ip) not in rlocs:
            rlocs.append(str(itr_ip))
        claimed = str(itr_ip) if itr_ip is not None else (rlocs[0] if rlocs else "")
        if not self.kx_per_source.allow(claimed, ctx.now) or not self.kx_total.allow("", ctx.now):
            ctx.drops["kx-rate-limited"] += 1  # before any public-key work
            return None
        peer_name = f"rloc:{itr_ip}"
        peer_eids: tuple[tuple[int, IpNetwork], ...] = ()
        key_id = 1
        if ctx.kx is not None:
            try:
                peer = ctx.kx.verify_request(
                    proof,
                    request.nonce,
                    key.cipher_suite,
                    public,
                    tuple(ip_address(r) for r in rlocs),
                    ctx.now,
                    requested_eids(request.records),
                )
            except KxReplayError as exc:
                ctx.error(f"key exchange from {itr_ip} refused: {exc}")
                ctx.drops["kx-replayed"] += 1
                return None
            except IdentityError as exc:
                ctx.error(f"key exchange from {itr_ip} refused: {exc}")
                ctx.drops["kx-auth-failed"] += 1
                return None
            peer_name, peer_eids, key_id = peer.name, peer.eids, peer.key_id
            if self.revocation.refuse(peer_name):
                return None
            if not any(iid == ctx.iid for iid, _ in peer_eids):
                ctx.error(f"key exchange from {peer_name} refused: its certificate names no "
                          f"EID in instance-id {ctx.iid}")  # fmt: skip
                ctx.drops["kx-wrong-instance"] += 1
                return None
        else:
            # Interop mode: no identity, so any inner source is accepted from this key.
            peer_eids = ((ctx.iid, _ANY4), (ctx.iid, _ANY6))
        slot = ctx.keys.install_decap(rlocs, key_id, public, peer_name, peer_eids, ctx.now)
        if slot is None:
            ctx.error(f"key exchange from {peer_name} refused: its RLOCs {rlocs} are in use by "
                      "another node")  # fmt: skip
            ctx.drops["kx-rloc-taken"] += 1
            return None
        ctx.datapath.install_decap(ctx.keys.decap)
        self.peers.key_exchanged(peer_name)
        return key_id
