"""The RTR role: relay for nodes behind NATs (issue 15), composable into any xTR (`xtr.rtr: {}`).

How a node behind a NAT is reached:
- It sends each configured RTR a keepalive from its data socket every `xtr.rtr_keepalive`
  seconds (below the NAT's UDP timeout): a data-plane Info-Request (lisp-wire.md §1.7, instance-id
  0xFFFFFF, to UDP 4341) signed with its node key (mesh.rtr_proof). The source address:port it
  arrives from is the NAT's mapping of the node's data port: the RTR keeps it as the node's binding
  (lisp.rtr_bindings; stale after `stale_after` s without a keepalive, 30 s as lispers.net) and
  answers with a signed Info-Reply naming that address:port, which tells the node that the RTR is
  the one it was configured with (its certificate name) and that the binding is up.
  Whose binding a keepalive moves is the certificate's name, never the source address: a spoofed
  or replayed keepalive (a proof older than the newest accepted one, or more than 60 s off) is
  refused, counted.
- Once confirmed, the node registers its RTR as an RLOC (priority 254, weight 0; its own RLOCs are
  listed unreachable) and names it first among its ITR-RLOCs (mesh.xtr_context.advertised_rlocs).
  The map-server therefore forwards Map-Requests for the node to the RTR, which relays them (and
  RLOC-probes for it) to the node through its binding; the node answers the requester directly,
  outward through its NAT. An ETR answering a node behind an RTR replies through the RTR.
- Data: both ends keep their RFC 8061 keys between themselves. The sender puts a relay shim in
  front of the sealed packet (lisp.relay: where it goes, the sender's RLOC); the RTR reads only the
  shim and rewrites the outer header. It forwards a frame naming a node to that node's binding, and
  a frame naming an RLOC only when it comes from a live binding (the RTR is no open relay). The
  RTR never holds a key of the end nodes and sees no payload: it needs no trust beyond availability
  (what any router on the path has), so it is not a privileged certificate role: any node's
  certificate will do, the nodes pick their RTRs by name in their configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from certs.format import IdentityError
from lisp import EncapsulatedControl, InstanceId, MapRequest
from lisp.address import DistinguishedName
from lisp.errors import DecodeError
from lisp.info import InfoMessage
from lisp.relay import (
    RelayFrame,
    control_frame,
    control_message,
    is_control,
    is_relay,
    relay_prefix,
)
from lisp.relay import decode as decode_relay
from lisp.rtr_bindings import Endpoint, Learned, Moved, NatBindings
from mesh.config import IpNetwork, RtrRole
from mesh.rtr_proof import reply_subject, request_subject, sign, verify
from mesh.xtr_context import XtrContext
from mesh.xtr_types import DATA_PORT

log = logging.getLogger("lispmesh.rtr")


class Rtr:
    def __init__(self, ctx: XtrContext, role: RtrRole) -> None:
        self.ctx = ctx
        self.bindings = NatBindings(stale_after=role.stale_after)
        self.eids: dict[str, tuple[tuple[int, IpNetwork], ...]] = {}  # node -> certified EIDs
        self.newest: dict[str, int] = {}  # node -> newest accepted keepalive time (Unix ms)
        self.senders: dict[Endpoint, str] = {}  # binding endpoint -> node

    @property
    def name(self) -> str:
        kx = self.ctx.kx
        return kx.identity.name if kx is not None else self.ctx.config.name

    # ------------------------------------------------------------------ data port

    def on_data(self, packet: bytes, source: Endpoint) -> bool:
        """A data-port packet with a shim (control or relay); False: not for the RTR role."""
        ctx = self.ctx
        if is_control(packet):
            try:
                message = InfoMessage.decode(control_message(packet))
            except DecodeError:
                ctx.drops["rtr-malformed"] += 1
                return True
            if message.is_reply:
                return False  # an answer to our own keepalives (we may sit behind an RTR too)
            self.on_keepalive(message, source)
            return True
        if not is_relay(packet):
            return False
        try:
            frame = decode_relay(packet)
        except DecodeError:
            ctx.drops["rtr-malformed"] += 1
            return True
        if frame.destination == self.name or str(frame.destination) in _local_texts(ctx):
            return False  # for us as an xTR
        self.forward(packet, frame, source)
        return True

    def on_keepalive(self, message: InfoMessage, source: Endpoint) -> None:
        ctx, kx = self.ctx, self.ctx.kx
        if kx is None:
            ctx.drops["rtr-no-identity"] += 1
            return
        if not isinstance(message.eid, DistinguishedName):
            ctx.drops["rtr-malformed"] += 1
            return
        uplink = message.eid.name
        try:
            peer, issued = verify(
                kx, message.payload, message.nonce, request_subject(self.name, uplink)
            )
        except IdentityError as exc:
            ctx.drops["rtr-binding-refused"] += 1
            ctx.error(f"RTR: keepalive from {source[0]}:{source[1]} refused: {exc}")
            return
        if issued <= self.newest.get(peer.name, -1):
            ctx.drops["rtr-binding-replayed"] += 1  # an older (or the same) proof again
            return
        self.newest[peer.name] = issued
        self.eids[peer.name] = tuple(peer.eids)
        change = self.bindings.observe(peer.name, uplink, source, ctx.now)
        if isinstance(change, Learned | Moved):
            log.info("RTR: %s (%s) is at %s:%s", peer.name, uplink, *source)
            if isinstance(change, Moved):
                self.senders.pop(change.old, None)
        self.senders[source] = peer.name
        ctx.stats["rtr-keepalives"] += 1
        endpoint = f"{source[0]}:{source[1]}"
        proof = sign(kx, message.nonce, reply_subject(self.name, uplink, endpoint))
        reply = InfoMessage(
            message.nonce, is_reply=True, eid=DistinguishedName(endpoint), payload=proof
        )
        local = ctx.local_for(ip_address(source[0]).version)
        if local is not None:
            ctx.transport.send_data(local, control_frame(reply.encode()), source)

    def forward(self, packet: bytes, frame: RelayFrame, source: Endpoint) -> None:
        ctx = self.ctx
        dest = frame.destination
        if isinstance(dest, str):
            binding = self.bindings.lookup(dest, ctx.now)
            if binding is None:
                ctx.drops["rtr-no-binding"] += 1
                return
            target = binding.endpoint
            ctx.stats["rtr-relayed-to-nat"] += 1
        else:
            if not self.bound(source):
                ctx.drops["rtr-sender-not-bound"] += 1  # we relay for our nodes only
                return
            if str(dest) in ctx.rtrs or str(dest) in _local_texts(ctx):
                ctx.drops["rtr-loop"] += 1
                return
            target = (str(dest), DATA_PORT)
            ctx.stats["rtr-relayed-from-nat"] += 1
        local = ctx.local_for(ip_address(target[0]).version)
        if local is None:
            ctx.drops["rtr-no-uplink"] += 1
            return
        ctx.transport.send_data(local, packet, target)

    def bound(self, source: Endpoint) -> bool:
        """Does `source` hold a live binding (a node behind us sent from it)?"""
        sender = self.senders.get(source)
        live = self.bindings.lookup(sender, self.ctx.now) if sender is not None else None
        return live is not None and live.endpoint == source

    # ------------------------------------------------------------------ control port

    def on_control(
        self,
        message: object,
        raw: bytes,
        source: Endpoint,
        ecm: EncapsulatedControl | None,
    ) -> bool:
        """A Map-Request (forwarded by the map-server, or an RLOC-probe) for an EID of a node
        behind us: relay it to the node, which answers the requester itself. False: not ours."""
        if not isinstance(message, MapRequest) or not message.records or message.smr:
            return False  # (an SMR names its sender's EIDs, not where it goes)
        eid = message.records[0].eid
        iid = eid.iid if isinstance(eid, InstanceId) else 0
        address = eid.address if isinstance(eid, InstanceId) else eid
        if not isinstance(address, IPv4Address | IPv6Address):
            return False
        node = self._owner(iid, address)
        binding = self.bindings.lookup(node, self.ctx.now) if node is not None else None
        if node is None or binding is None:
            return False
        ctx = self.ctx
        local = ctx.local_for(ip_address(binding.endpoint[0]).version)
        if local is None:
            return False
        payload = ecm.encode() if ecm is not None else raw
        shim = relay_prefix(node, ip_address(source[0]), source[1])
        ctx.stats["rtr-control-relayed"] += 1
        ctx.transport.send_data(local, shim + control_frame(payload), binding.endpoint)
        return True

    def _owner(self, iid: int, address: IPv4Address | IPv6Address) -> str | None:
        for node, eids in self.eids.items():
            for eid_iid, net in eids:
                if eid_iid == iid and net.version == address.version and address in net:
                    return node
        return None

    # ------------------------------------------------------------------ timers, status

    def tick(self) -> None:
        for gone in self.bindings.expire(self.ctx.now):
            log.info("RTR: binding of %s (%s) is stale", gone.node, gone.uplink)
            if self.senders.get(gone.endpoint) == gone.node:
                del self.senders[gone.endpoint]

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "bindings": self.bindings.status(self.ctx.now)}


def _local_texts(ctx: XtrContext) -> Iterable[str]:
    return [str(r.address) for r in ctx.locals]
