"""ETR answering: Map-Requests for our EIDs (accepting the ITR's key) and Solicit-Map-Requests
to ITRs whose key we no longer hold."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from lisp import (
    EidRecord,
    EncapsulatedControl,
    InstanceId,
    MapReply,
    MapRequest,
    RequestRecord,
    RlocRecord,
)
from lisp.address import Address, NoAddress
from lisp.crypto import CryptoError
from lisp.kx_lcaf import find_itr_security
from lisp.lcaf import JsonLcaf, SecurityKey
from lisp.relay import control_frame, relay_prefix
from mesh import lispers_peer as lispers
from mesh.config import IpAddress, IpNetwork, RtrRef
from mesh.key_exchange import KxRefused
from mesh.keys import random_nonce
from mesh.kx import requested_eids
from mesh.peer_stats import PeerTable
from mesh.rloc_probing import Prober
from mesh.xtr_context import XtrContext
from mesh.xtr_types import (
    CONTROL_PORT,
    DATA_PORT,
    MAP_REPLY_TTL_MINUTES,
    SMR_INTERVAL,
    LocalRloc,
)

SMR_TABLE_LIMIT = 4096
ANSWER_WITHOUT_KEY = -1  # accept_request_key: a suite we do not run; answer, keyless


class Responder:
    """The ETR's answers: Map-Replies for our EIDs (accepting the ITR's key into a decap slot),
    and Solicit-Map-Requests to ITRs whose key we lost. Owns the SMR rate limit."""

    def __init__(self, ctx: XtrContext, prober: Prober, peers: PeerTable) -> None:
        self.ctx = ctx
        self.prober = prober
        self.peers = peers
        self.smr_sent: dict[str, float] = {}

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

    def known(self, rloc: str) -> bool:
        """Is `rloc` an RLOC of a peer we hold a key from, or one we send to?"""
        ctx = self.ctx
        return (
            any(r == rloc for r, _ in ctx.keys.decap)
            or rloc in ctx.prober.tracked()
            or rloc in ctx.plaintext_rlocs  # security.plaintext_fallback peers
            or lispers.is_lispers(rloc, ctx.lispers_peers)  # their trigger probes are keyless
        )

    def solicit_key_exchange(self, itr_rloc: str) -> None:
        """Packets from `itr_rloc` under a key we do not hold (we restarted, or expired it):
        send it a Solicit-Map-Request (RFC 9301 §6.1), so it runs a keyed exchange with us
        again instead of sealing into the void until its next rekey. Rate-limited per ITR."""
        ctx = self.ctx
        last = self.smr_sent.get(itr_rloc, float("-inf"))
        if ctx.now - last < SMR_INTERVAL:
            return
        if len(self.smr_sent) > SMR_TABLE_LIMIT:
            self.smr_sent.clear()
        self.smr_sent[itr_rloc] = ctx.now
        self.send_smr(itr_rloc)

    def send_smr(self, rloc: str) -> None:
        """A Solicit-Map-Request naming our EID prefixes to the peer at `rloc` (through its RTR
        when we reach it through one): it asks about them again (mesh.rloc_probing.on_smr)."""
        ctx = self.ctx
        try:
            address = ip_address(rloc)
        except ValueError:
            return
        local = ctx.local_for(address.version)
        if local is None or not ctx.xcfg.eid_prefixes:
            return
        prefixes = ctx.xcfg.eid_prefixes
        request = MapRequest(
            nonce=random_nonce(),
            itr_rlocs=ctx.up_rloc_addresses(local),
            records=tuple(
                RequestRecord(ctx.eid_address(p.network_address), p.prefixlen) for p in prefixes
            ),
            source_eid=ctx.eid_address(ctx.our_eid(prefixes[0].version)),
            smr=True,
        )
        ctx.stats["smr-sent"] += 1
        relayed = self._behind_rtr(rloc)
        if relayed is not None:
            rtr, name = relayed
            frame = relay_prefix(name, local.address, CONTROL_PORT)
            ctx.transport.send_data(
                local, frame + control_frame(request.encode()), (str(rtr.address), DATA_PORT)
            )
            return
        ctx.transport.send_control(local, request.encode(), (rloc, CONTROL_PORT))

    def on_map_request(
        self,
        request: MapRequest,
        source: tuple[str, int],
        local: LocalRloc,
        ecm: EncapsulatedControl | None,
    ) -> None:
        ctx = self.ctx
        if request.smr and ecm is None:
            self.prober.on_smr(source, request)
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
        records = [(r, self.our_prefix_for(r)) for r in _probed_records(request)]
        ours = [(r, p) for r, p in records if p is not None]
        if not ours:
            ctx.drops["map-request-not-ours"] += 1
            return
        unsigned_direct = key is None and ecm is None and ctx.encrypt and ctx.kx is not None
        if unsigned_direct and not self.known(source[0]):
            # A direct unsigned request is answered to its UDP source, which anyone can forge:
            # answering strangers would reflect our replies at whoever they name. Peers we hold
            # keys from, or send to, probe without a key; anyone else offers a signed one.
            ctx.drops["map-request-unknown-requester"] += 1
            return
        key_id = None
        peer_name = None
        lispers_suite = None  # answering a lispers.net ITR: its suite, its framing, no proof
        if key is not None and ctx.encrypt:
            accepted = self.accept_request_key(request, key, proof, itr_ip, itr_ips)
            if accepted is None:
                return
            key_id, peer_name = accepted
            if key_id == ANSWER_WITHOUT_KEY:
                key_id, peer_name = None, None
            elif peer_name.startswith(lispers.PEER_PREFIX):
                lispers_suite = key.cipher_suite
        out_records = []
        rloc_ips = ctx.signed_rlocs()
        reply_proof = None
        if key_id is not None and lispers_suite is None:
            eids = tuple((ctx.iid, p) for _, p in ours)
            reply_proof = ctx.exchange.reply_proof(request.nonce, key_id, eids, rloc_ips)
        for _, prefix in ours:
            rlocs = []
            for index, (ip, priority, weight, reachable) in enumerate(ctx.advertised_rlocs()):
                address: Address = ip
                if lispers_suite is not None:
                    address = lispers.reply_rloc(ip, lispers_suite, ctx.keys.etr_pair.public)
                elif key_id is not None:
                    address = ctx.exchange.reply_rloc(ip, reply_proof if index == 0 else None)
                rlocs.append(
                    RlocRecord(
                        address,
                        priority,
                        weight,
                        local=True,
                        probed=request.probe,
                        reachable=reachable,
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
        rtr = ctx.rtrs.get(dest[0]) if ecm is not None else None
        if ecm is None:
            rtr, peer_name = self._behind_rtr(source[0]) or (None, peer_name)
        if rtr is not None and peer_name is not None and peer_name != rtr.name:
            # The ITR is behind a NAT and asked to be answered through its RTR: a relay frame
            # naming it (mesh.rtr), since no packet of ours reaches it at an address of its own.
            frame = relay_prefix(peer_name, local.address, CONTROL_PORT)
            ctx.stats["map-replies-relayed"] += 1
            ctx.transport.send_data(
                local, frame + control_frame(reply.encode()), (str(rtr.address), DATA_PORT)
            )
            return
        ctx.transport.send_control(local, reply.encode(), dest)

    def _behind_rtr(self, rloc: str) -> tuple[RtrRef, str] | None:
        """The RTR that reaches the peer sending from `rloc`, if we send to it through one: a
        direct answer to a node behind a NAT would be filtered there (it asked the RTR, not us),
        so it goes back through the RTR, to the peer by name."""
        ctx = self.ctx
        names = {slot.peer_name for (r, _), slot in ctx.keys.decap.items() if r == rloc}
        for path in self.prober.paths.paths.values():
            if path.peer_behind_rtr and path.encap.peer_name in names:
                rtr = ctx.rtrs.get(path.remote[0])
                if rtr is not None:
                    return rtr, path.encap.peer_name
        return None

    def accept_request_key(
        self,
        request: MapRequest,
        key: SecurityKey,
        proof: JsonLcaf | None,
        itr_ip: IpAddress | None,
        itr_ips: list[IpAddress],
    ) -> tuple[int, str] | None:
        """The key-id of the ITR's key once installed (mesh.key_exchange decides) and the peer's
        name; None when refused (counted); (ANSWER_WITHOUT_KEY, "") for a cipher suite we do
        not run."""
        ctx = self.ctx
        rlocs = [str(ip) for ip in itr_ips]
        if itr_ip is not None and str(itr_ip) not in rlocs:
            rlocs.append(str(itr_ip))
        claimed = str(itr_ip) if itr_ip is not None else (rlocs[0] if rlocs else "")
        if lispers.is_lispers(claimed, ctx.lispers_peers):
            return self.accept_lispers_key(key, rlocs, claimed)
        try:
            peer_name, key_id = ctx.exchange.accept_request(
                key,
                proof,
                request.nonce,
                rlocs,
                claimed,
                requested_eids(request.records),
                ctx.now,
                relays={a: r.name for a, r in ctx.rtrs.items()},
            )
        except KxRefused as refusal:
            ctx.refused(f"key exchange from {itr_ip}", refusal)
            if refusal.drop == "kx-cipher-mismatch":
                # RFC 8061 §5: a suite we do not run is answered without the Security-Key
                # LCAF (never silence), so the ITR falls back by its own policy or gives up.
                ctx.stats["kx-answered-without-key"] += 1
                if ctx.fallback_encap is not None:
                    ctx.allow_plaintext_from(rlocs)
                return ANSWER_WITHOUT_KEY, ""
            return None
        ctx.datapath.install_decap(ctx.keys.decap)
        self.peers.key_exchanged(peer_name)
        return key_id, peer_name

    def accept_lispers_key(
        self, key: SecurityKey, rlocs: list[str], claimed: str
    ) -> tuple[int, str] | None:
        """A lispers.net ITR (security.lispers_peers) offered its key: its profile, unsigned."""
        ctx = self.ctx
        exchange = ctx.exchange
        if not exchange.per_source.allow(claimed, ctx.now) or not exchange.total.allow("", ctx.now):
            ctx.drops["kx-rate-limited"] += 1
            return None
        try:
            public = lispers.offered_public(key)
        except CryptoError as exc:
            ctx.drops["kx-bad-key"] += 1
            ctx.error(f"lispers.net key from {claimed} refused: {exc}")
            return None
        peer_name = lispers.PEER_PREFIX + claimed
        slot = ctx.keys.decap.get((claimed, lispers.LISPERS_KEY_ID))
        if slot is None or slot.itr_public != public or not slot.python_only:
            # Unauthenticated: any inner source of our instance is taken from this key.
            slot = lispers.decap_slot(
                ctx.keys.etr_pair, public, key.cipher_suite, peer_name,
                ((ctx.iid, ip_network("0.0.0.0/0")), (ctx.iid, ip_network("::/0"))),
                ((4, 0, 0), (6, 0, 0)), ctx.now,
            )  # fmt: skip
        for rloc in rlocs:
            ctx.keys.decap[(rloc, lispers.LISPERS_KEY_ID)] = slot
        ctx.stats["lispers-key-exchanges"] += 1
        ctx.datapath.install_decap(ctx.keys.decap)
        self.peers.key_exchanged(peer_name)
        return lispers.LISPERS_KEY_ID, peer_name


def _probed_records(request: MapRequest) -> tuple[RequestRecord, ...]:
    """The records a Map-Request asks about. lispers.net's trigger RLOC-probe (sent when it
    installs a map-cache entry) carries the probed prefix in the Source-EID field and an
    EID-record of AFI 0 / mask 0: it asks about the prefix that Source-EID falls in."""
    records = request.records
    if request.probe and not isinstance(request.source_eid, NoAddress):
        return tuple(
            RequestRecord(request.source_eid, 0)
            if isinstance(r.eid, NoAddress) and r.mask_len == 0
            else r
            for r in records
        )
    return records
