"""Info-Request in, Info-Reply out (type 7; draft-ermagan-lisp-nat-traversal, RFC 9301 §5.7 ref.).

An xTR asks the map-server how it is seen from outside: the Info-Reply echoes the request's
nonce, key-id, TTL and EID-prefix and carries a NAT-Traversal LCAF with the map-server's control
port, the source address and port the request arrived from (the global ETR RLOC and ETR port,
as translated by any NAT on the way), no MS RLOC (AFI 0: a sans-IO core does not know which of
its addresses received the packet), the private ETR RLOC field echoing the request's EID field
when it is a name (lispers.net sends its hostname there), and the configured RTRs.

Authentication: an Info-Request with an HMAC is checked with the key (its key-id) of the site that
owns its EID-prefix, and the reply is signed with the same key. lispers.net sends Info-Requests
unauthenticated (lisp-wire.md §1.7); those are answered, unsigned, only with
`accept_unauthenticated` (off by default: an unauthenticated reply can be reflected to a spoofed
source, and tells an unknown party how the map-server sees it). An Info-Reply sent to the
map-server is counted, not answered.
"""

from __future__ import annotations

import logging
from collections import Counter

from lisp import auth
from lisp.address import Address, DistinguishedName, NoAddress
from lisp.auth import AuthAlg
from lisp.ecm import CONTROL_PORT
from lisp.errors import DecodeError, EncodeError
from lisp.info import InfoMessage
from lisp.lcaf import NatTraversal
from lisp.map_server.eids import parse_host, split_eid
from lisp.map_server.prefixes import MASKS, WIDTH
from lisp.map_server.registry import Registry
from lisp.map_server.site import Log, MsAction, Refused, SendTo, clean, show


class InfoResponder:
    """Answers Info-Requests for the sites of a `Registry`."""

    def __init__(
        self,
        registry: Registry,
        counters: Counter[str],
        *,
        accept_unauthenticated: bool = False,
        rtrs: tuple[Address, ...] = (),
        ms_port: int = CONTROL_PORT,
    ) -> None:
        self.registry = registry
        self.counters = counters
        self.accept_unauthenticated = accept_unauthenticated
        self.rtrs = rtrs
        self.ms_port = ms_port

    def handle(self, raw: bytes, source: tuple[str, int], now: float) -> list[MsAction]:
        self.counters["info-request"] += 1
        try:
            return [self._reply(raw, source)]
        except Refused as refused:
            self.counters[refused.reason] += 1
            line = clean(f"dropped Info-Request from {show(source)}: {refused.message}")
            return [Log(refused.level, line, refused.reason)]

    def _reply(self, raw: bytes, source: tuple[str, int]) -> SendTo:
        try:
            request = InfoMessage.decode(raw)
        except DecodeError as exc:
            raise Refused("malformed", f"malformed: {exc}", logging.INFO) from None
        if request.is_reply:
            raise Refused("info-reply-not-for-ms", "an Info-Reply sent to the map-server",
                          logging.INFO)  # fmt: skip
        seen = parse_host(source[0])
        if seen is None or not 0 < source[1] < 65536:
            raise Refused("malformed", f"source {source!r} is not an IP and port", logging.INFO)
        key = self._key(raw, request)
        name = isinstance(request.eid, DistinguishedName)
        private: Address = request.eid if name else NoAddress()
        nat = NatTraversal(self.ms_port, source[1], seen, NoAddress(), private, self.rtrs)
        reply = InfoMessage(
            request.nonce,
            True,
            request.key_id if key is not None else 0,
            request.alg_id if key is not None else AuthAlg.NONE,
            b"",
            request.ttl,
            request.eid,
            request.mask_len,
            nat,
        )
        try:
            data = reply.encode()
        except EncodeError as exc:  # decodable but not re-encodable: odd, not fatal
            raise Refused("malformed", f"cannot answer: {exc}", logging.INFO) from None
        if key is not None:
            data = auth.sign(data, key)
        self.counters["info-reply"] += 1
        return SendTo(data, source)

    def _key(self, raw: bytes, request: InfoMessage) -> bytes | None:
        """The site key the request is authenticated with; None if it is unauthenticated (and
        that is accepted). Refused when it is neither."""
        if request.alg_id == AuthAlg.NONE and not request.auth_data:
            if not self.accept_unauthenticated:
                raise Refused(
                    "info-unauthenticated",
                    "unauthenticated Info-Request (set accept_unauthenticated_info to answer "
                    "lispers.net's)",
                    logging.INFO,
                )
            return None
        split = split_eid(request.eid)
        if split is None:
            raise Refused("bad-auth", f"authenticated Info-Request for EID {request.eid}: "
                          "no IP prefix to name its site")  # fmt: skip
        iid, eid = split
        width = WIDTH[eid.version]
        if request.mask_len > width:
            raise Refused("malformed", f"EID mask-len {request.mask_len}", logging.INFO)
        net = int(eid) & MASKS[width][request.mask_len]
        allowance = self.registry.allowance(iid, eid.version, net, request.mask_len)
        if allowance is None:
            raise Refused("prefix-not-allowed", f"Info-Request for [{iid}]{eid}/"
                          f"{request.mask_len}: in no site's allowance")  # fmt: skip
        site = allowance.site
        key = site.keys.get(request.key_id)
        if key is None or not auth.verify(raw, key):
            raise Refused("bad-auth", f"site {site.name}: Info-Request authentication failed "
                          f"(key-id {request.key_id}, algorithm {request.alg_id})")  # fmt: skip
        return key
