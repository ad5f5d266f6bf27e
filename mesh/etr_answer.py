"""ETR answering: Map-Requests for our EIDs (accepting the ITR's key) and Solicit-Map-Requests
to ITRs whose key we no longer hold."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import TYPE_CHECKING, Any

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
from mesh.revocation import refuse_revoked
from mesh.rloc_probing import on_smr
from mesh.xtr_types import CONTROL_PORT, MAP_REPLY_TTL_MINUTES, SMR_INTERVAL, LocalRloc, PeerInfo

if TYPE_CHECKING:
    from mesh.xtr import Xtr

_ANY4 = eid_prefix(IPv4Address(0), 0)
_ANY6 = eid_prefix(IPv6Address(0), 0)


def our_prefix_for(xtr: Xtr, record: RequestRecord) -> IpNetwork | None:
    eid = record.eid
    iid = eid.iid if isinstance(eid, InstanceId) else 0
    address = eid.address if isinstance(eid, InstanceId) else eid
    if iid != xtr.iid or not isinstance(address, IPv4Address | IPv6Address):
        return None
    for prefix in xtr.xcfg.eid_prefixes:
        if prefix.version == address.version and address in prefix:
            return prefix
    return None


def solicit_key_exchange(xtr: Xtr, itr_rloc: str) -> None:
    """Packets from `itr_rloc` under a key we do not hold (we restarted, or expired it):
    send it a Solicit-Map-Request (RFC 9301 §6.1), so it runs a keyed exchange with us
    again instead of sealing into the void until its next rekey. Rate-limited per ITR."""
    last = xtr.smr_sent.get(itr_rloc, float("-inf"))
    if xtr.now - last < SMR_INTERVAL:
        return
    try:
        address = ip_address(itr_rloc)
    except ValueError:
        return
    local = xtr._local_for(address.version)
    if local is None or not xtr.xcfg.eid_prefixes:
        return
    if len(xtr.smr_sent) > 4096:
        xtr.smr_sent.clear()
    xtr.smr_sent[itr_rloc] = xtr.now
    prefix = xtr.xcfg.eid_prefixes[0]
    request = MapRequest(
        nonce=random_nonce(),
        itr_rlocs=tuple(r.address for r in xtr.locals if r.up) or (local.address,),
        records=(RequestRecord(xtr._eid_address(prefix.network_address), prefix.prefixlen),),
        source_eid=xtr._eid_address(xtr._our_eid(prefix.version)),
        smr=True,
    )
    xtr.stats["smr-sent"] += 1
    xtr.transport.send_control(local, request.encode(), (itr_rloc, CONTROL_PORT))


def on_map_request(
    xtr: Xtr,
    request: MapRequest,
    source: tuple[str, int],
    local: LocalRloc,
    ecm: EncapsulatedControl | None,
) -> None:
    if request.smr and ecm is None:
        on_smr(xtr, source)
        return
    key, proof, itr_ip = find_itr_security(request.itr_rlocs)
    itr_ips = [a for a in request.itr_rlocs if isinstance(a, IPv4Address | IPv6Address)]
    if ecm is not None:
        target_ip = itr_ips[0] if itr_ips else itr_ip
        if target_ip is None:
            xtr.drops["map-request-without-itr-rloc"] += 1
            return
        dest = (str(target_ip), ecm.source_port)
    else:
        dest = source
    records = [(r, our_prefix_for(xtr, r)) for r in request.records]
    ours = [(r, p) for r, p in records if p is not None]
    if not ours:
        xtr.drops["map-request-not-ours"] += 1
        return
    reply_key = None
    key_id = None
    if key is not None and xtr.encrypt:
        accepted = accept_request_key(xtr, request, key, proof, itr_ip, itr_ips)
        if accepted is None:
            return
        key_id = accepted
        reply_key = xtr.keys.etr_pair.public
    out_records = []
    rloc_ips = tuple(r.address for r in xtr.locals)
    reply_proof = None
    if reply_key is not None and xtr.kx is not None and key_id is not None:
        reply_proof = xtr.kx.reply_proof(
            request.nonce,
            xtr.keys.cipher_suite,
            key_id,
            reply_key,
            tuple((xtr.iid, p) for _, p in ours),
            rloc_ips,
        )
    for _, prefix in ours:
        rlocs = []
        for index, mine in enumerate(xtr.locals):
            address: Address = mine.address
            if reply_key is not None:
                address = build_reply_rloc_address(
                    mine.address,
                    xtr.keys.cipher_suite,
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
                xtr._eid_address(prefix.network_address),
                prefix.prefixlen,
                tuple(rlocs),
                ttl=MAP_REPLY_TTL_MINUTES,
                authoritative=True,
            )
        )
    reply = MapReply(request.nonce, tuple(out_records), probe=request.probe)
    xtr.stats["map-replies-sent"] += 1
    xtr.transport.send_control(local, reply.encode(), dest)


def accept_request_key(
    xtr: Xtr,
    request: MapRequest,
    key: Any,
    proof: Any,
    itr_ip: IpAddress | None,
    itr_ips: list[IpAddress],
) -> int | None:
    try:
        public = public_key_of(key)
    except CryptoError as exc:
        xtr._error(f"unusable key in a Map-Request from {itr_ip}: {exc}")
        xtr.drops["kx-bad-key"] += 1
        return None
    if key.cipher_suite != xtr.keys.cipher_suite:
        xtr.drops["kx-cipher-mismatch"] += 1
        xtr._error(f"{itr_ip} offered cipher suite {key.cipher_suite}")
        return None
    rlocs = [str(ip) for ip in itr_ips]
    if itr_ip is not None and str(itr_ip) not in rlocs:
        rlocs.append(str(itr_ip))
    peer_name = f"rloc:{itr_ip}"
    peer_eids: tuple[tuple[int, IpNetwork], ...] = ()
    key_id = 1
    if xtr.kx is not None:
        try:
            peer = xtr.kx.verify_request(
                proof,
                request.nonce,
                key.cipher_suite,
                public,
                tuple(ip_address(r) for r in rlocs),
                xtr.now,
            )
        except IdentityError as exc:
            xtr._error(f"key exchange from {itr_ip} refused: {exc}")
            xtr.drops["kx-auth-failed"] += 1
            return None
        peer_name, peer_eids, key_id = peer.name, peer.eids, peer.key_id
        if refuse_revoked(xtr, peer_name):
            return None
    else:
        # Interop mode: no identity, so any inner source is accepted from this key.
        peer_eids = ((xtr.iid, _ANY4), (xtr.iid, _ANY6))
    xtr.keys.install_decap(rlocs, key_id, public, peer_name, peer_eids, xtr.now)
    if xtr.fast is not None:
        xtr.fast.sync_decap(xtr.keys.decap)
    info = xtr.peers.setdefault(peer_name, PeerInfo(peer_name))
    info.last_key_exchange = xtr.now
    return key_id
