"""The resolver side of a map-server (RFC 9301 §8.3-8.4): Map-Requests (in an ECM, or direct).

- registered EID, proxy reply wanted (Map-Register P bit or `Site.proxy_reply`): a Map-Reply
  from here (A=0, RLOC flags L and p cleared);
- registered EID otherwise (the default): the Map-Request is forwarded in an ECM to one ETR RLOC
  of the registration, inner source address and UDP port kept, so the ETR answers the ITR itself
  and sees the ITR's RFC 8061 Security-Key LCAF (a proxy reply cannot do the key exchange);
- unknown EID: a negative Map-Reply for the least-specific prefix around the EID that holds no
  more-specific configured or registered prefix (`least_specific_hole`).

Forwarded ECMs carry the E (to-ETR) bit and a decremented inner TTL; ECMs arriving with E set or
TTL <= 1 are dropped, so an RLOC pointing back at the map-server cannot make a loop.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace

from lisp.address import IpAddress
from lisp.ecm import CONTROL_PORT, EncapsulatedControl
from lisp.errors import DecodeError
from lisp.lcaf import InstanceId
from lisp.map_reply import MapReply
from lisp.map_request import MapRequest
from lisp.map_server.eids import ip_of, make_eid, parse_host, split_eid
from lisp.map_server.prefixes import MASKS, WIDTH
from lisp.map_server.registry import Registration, Registry
from lisp.map_server.site import Log, MsAction, PolicyCheck, Refused, SendTo, clean, show
from lisp.records import Action, EidRecord


class Resolver:
    """Answers Map-Requests from the registrations of a `Registry`.

    Negative replies:
    - EID inside a site's allowed space but not registered: `unregistered_action`, default
      SEND_MAP_REQUEST with a 1-minute TTL. The ITR holds no locators for it, so it drops the
      packet and asks again (rate-limited) once traffic continues: the EID is expected to show up
      soon (a node booting or moving). It must never be NATIVELY_FORWARD (what lispers.net
      answers): traffic meant for the encrypted overlay would leave it in plaintext. The
      alternative DROP_NO_REASON black-holes for the whole TTL after the EID registers.
    - EID outside every allowed prefix: `outside_action`, default NATIVELY_FORWARD with a
      15-minute TTL (RFC 9301's answer: the destination is not in the overlay).

    `policy_check` (optional, see `PolicyCheck`) is asked before a registered EID is answered or
    forwarded: a requester it refuses gets a negative reply for the registered prefix with
    DROP_POLICY_DENIED (`policy_denied_ttl` minutes) and never the locators; one it cannot
    identify gets `unregistered_action` (ask again), as for an EID not registered yet.
    """

    def __init__(
        self,
        registry: Registry,
        counters: Counter[str],
        *,
        unregistered_action: Action = Action.SEND_MAP_REQUEST,
        unregistered_ttl: int = 1,
        outside_action: Action = Action.NATIVELY_FORWARD,
        outside_ttl: int = 15,
        proxy_default_ttl: int = 1440,
        etr_port: int = CONTROL_PORT,
        mark_to_etr: bool = True,
        policy_check: PolicyCheck | None = None,
        policy_denied_ttl: int = 1,
    ) -> None:
        self.registry = registry
        self.counters = counters
        self.unregistered_action = unregistered_action
        self.unregistered_ttl = unregistered_ttl
        self.outside_action = outside_action
        self.outside_ttl = outside_ttl
        self.proxy_default_ttl = proxy_default_ttl
        self.etr_port = etr_port
        self.mark_to_etr = mark_to_etr
        self.policy_check = policy_check
        self.policy_denied_ttl = policy_denied_ttl

    def handle(self, raw: bytes, source: tuple[str, int], now: float) -> list[MsAction]:
        """A Map-Request in an ECM (from an ITR, via us as map-resolver) or direct (type 1)."""
        self.counters["map-request"] += 1
        try:
            return self._map_request(raw, source, now)
        except Refused as refused:
            self.counters[refused.reason] += 1
            line = clean(f"dropped Map-Request from {show(source)}: {refused.message}")
            return [Log(refused.level, line, refused.reason)]

    def _map_request(self, raw: bytes, source: tuple[str, int], now: float) -> list[MsAction]:
        ecm: EncapsulatedControl | None = None
        try:
            if raw and raw[0] >> 4 == 8:
                ecm = EncapsulatedControl.decode(raw)
                if ecm.to_etr:  # what we (or an RTR) send to an ETR: never back in a loop
                    raise Refused("ecm-for-etr", "ECM marked for an ETR", logging.INFO)
                if ecm.ttl <= 1:
                    raise Refused("ttl-exceeded", "ECM inner TTL exhausted", logging.INFO)
                inner_type = ecm.message[0] >> 4 if ecm.message else -1
                if inner_type != 1:
                    raise Refused(
                        "unsupported-type", f"ECM carries type {inner_type}, not a Map-Request",
                        logging.INFO,
                    )  # fmt: skip
                request = MapRequest.decode(ecm.message)
                reply_port = ecm.source_port
            else:
                request = MapRequest.decode(raw)
                reply_port = source[1]
        except DecodeError as exc:
            raise Refused("malformed", f"malformed: {exc}", logging.INFO) from None
        if request.probe:
            raise Refused("probe-not-for-ms", "RLOC-probe sent to the map-server", logging.INFO)
        if not request.records:
            raise Refused("malformed", "no EID-records", logging.INFO)
        if not 0 < reply_port < 65536:
            raise Refused("malformed", f"reply port {reply_port}", logging.INFO)
        # Record Count is "normally 1" (RFC 9301); like other implementations answer the first.
        asked = request.records[0]
        split = split_eid(asked.eid)
        if split is None:
            raise Refused("unsupported-eid", f"EID {asked.eid} is not an IP address", logging.INFO)
        iid, eid = split
        as_lcaf = isinstance(asked.eid, InstanceId)
        itr = self._reply_address(request, source, ecm)
        if itr is None:
            raise Refused("no-itr-rloc", "no ITR-RLOC with an IP address to answer", logging.INFO)
        reply_to = (str(itr), reply_port)

        # By address, whatever the requested mask-len: a negative answer must never cover a
        # registered more-specific of a short requested prefix. Expired, not swept yet: none.
        reg = self.registry.lookup(eid, iid, now)
        if reg is None:
            return [self._negative(request.nonce, iid, eid, as_lcaf, reply_to)]
        if self.policy_check is not None:
            verdict = self.policy_check(self._requester(request, now), iid, eid)
            if verdict is not True:
                if verdict is None:
                    action, ttl = self.unregistered_action, self.unregistered_ttl
                    self.counters["requester-unknown"] += 1
                else:
                    action, ttl = Action.DROP_POLICY_DENIED, self.policy_denied_ttl
                    self.counters["policy-denied"] += 1
                record = EidRecord(make_eid(iid, reg.version, reg.net, as_lcaf), reg.length, (),
                                   ttl, action)  # fmt: skip
                self.counters["negative-reply"] += 1
                return [SendTo(MapReply(request.nonce, (record,)).encode(), reply_to)]
        etr = None if (reg.proxy_reply or reg.site.proxy_reply) else self._pick_etr(reg, source)
        if etr is None:
            self.counters["proxy-reply"] += 1
            record = reg.record
            eid_out = make_eid(iid, reg.version, reg.net, as_lcaf)
            ttl = record.ttl or self.proxy_default_ttl
            rlocs = tuple(replace(r, local=False, probed=False) for r in record.rlocs)
            reply = EidRecord(eid_out, reg.length, rlocs, ttl, Action.NO_ACTION, False,
                              record.map_version)  # fmt: skip
            return [SendTo(MapReply(request.nonce, (reply,)).encode(), reply_to)]
        ttl = 64
        if ecm is not None:
            inner_src, inner_dst, message, security = (
                ecm.inner_source, ecm.inner_dest, ecm.message, ecm.security,
            )  # fmt: skip
            ttl = ecm.ttl - 1  # a forwarding loop (an RLOC that is us) dies out
        else:
            parsed = parse_host(source[0])
            if parsed is None:
                raise Refused("malformed", f"source {source[0]!r} is not an IP", logging.INFO)
            inner_src, message, security = parsed, raw, False
            inner_dst = eid if eid.version == parsed.version else type(parsed)(0)
        # The E (to-ETR) bit tells a node that is both map-server and ETR which role the ECM
        # is for (mesh/node.py dispatches on it); `mark_to_etr=False` leaves it clear.
        forwarded = EncapsulatedControl(
            inner_src, inner_dst, message, source_port=reply_port, security=security,
            to_etr=self.mark_to_etr, ttl=ttl,
        )  # fmt: skip
        self.counters["forwarded"] += 1
        return [SendTo(forwarded.encode(), (str(etr), self.etr_port))]

    def _negative(
        self, nonce: int, iid: int, eid: IpAddress, as_lcaf: bool, reply_to: tuple[str, int]
    ) -> SendTo:
        width = WIDTH[eid.version]
        length, inside = self.registry.hole(iid, eid)
        if inside:
            action, ttl = self.unregistered_action, self.unregistered_ttl
        else:
            action, ttl = self.outside_action, self.outside_ttl
        net = int(eid) & MASKS[width][length]
        record = EidRecord(make_eid(iid, eid.version, net, as_lcaf), length, (), ttl, action)
        self.counters["negative-reply"] += 1
        return SendTo(MapReply(nonce, (record,)).encode(), reply_to)

    def _requester(self, request: MapRequest, now: float) -> str | None:
        """The site whose live registration holds the request's source EID and every one of its
        ITR-RLOCs; None if no site does.

        The source EID and the ITR-RLOCs are the requester's own claims (so is the UDP source),
        but every answer goes to an ITR-RLOC: requiring all of them to be the named site's
        registered RLOCs means the policy is decided for the site that receives the answer. A
        forger naming another site gets its answers sent to that site, never to itself."""
        split = split_eid(request.source_eid)
        if split is None:
            return None
        reg = self.registry.lookup(split[1], split[0], now)
        if reg is None:
            return None
        registered = {ip_of(r.address) for r in reg.record.rlocs} - {None}
        itr_rlocs = {ip_of(a) for a in request.itr_rlocs} - {None}
        return reg.site.name if itr_rlocs and itr_rlocs <= registered else None

    @staticmethod
    def _reply_address(
        request: MapRequest, source: tuple[str, int], ecm: EncapsulatedControl | None
    ) -> IpAddress | None:
        """The first ITR-RLOC of the family we heard from (outer, then inner source), else any."""
        ips = [ip for ip in (ip_of(a) for a in request.itr_rlocs) if ip is not None]
        outer = parse_host(source[0])
        for family in (
            outer.version if outer is not None else 0,
            ecm.inner_source.version if ecm is not None else 0,
        ):
            for ip in ips:
                if ip.version == family:
                    return ip
        return ips[0] if ips else None

    @staticmethod
    def _pick_etr(reg: Registration, source: tuple[str, int]) -> IpAddress | None:
        """The ETR RLOC to forward to: reachable, priority < 255; same family as the socket the
        request came in on first (so we can send to it), then best priority, then weight."""
        outer = parse_host(source[0])
        family = outer.version if outer is not None else 4
        best: tuple[int, int, int, int] | None = None
        chosen: IpAddress | None = None
        for index, rloc in enumerate(reg.record.rlocs):
            ip = ip_of(rloc.address)
            if ip is None or not rloc.reachable or rloc.priority == 255:
                continue
            rank = (ip.version != family, rloc.priority, -rloc.weight, index)
            if best is None or rank < best:
                best, chosen = rank, ip
        return chosen
