"""NAT detection per uplink (sans-IO): Info-Request / Info-Reply with the map-servers.

Every uplink asks every map-server of its address family how its control socket is seen from
outside. The Info-Request is authenticated with the map-server's site key (lispers.net sends them
unauthenticated; we never do, and we accept only replies signed with the same key, carrying the
nonce of a request we have outstanding, from the address and port we sent it to: anyone else could
otherwise tell us a false global address). The map-server answers with the source address and port
it saw (the NAT-Traversal LCAF's global ETR RLOC and ETR port).

Comparing the answers with the uplink's own address classifies it:
- `none`: every map-server saw the uplink's own address and port;
- `nat` with mapping `endpoint-independent` (a cone: one outside address:port whoever we talk
  to; a peer that learns it can reach us through it, filtering permitting) when two or more
  map-servers at different address:ports saw the same translated address:port;
- `nat` with mapping `endpoint-dependent` (symmetric: a new outside port per destination; only a
  relay can reach us) when they saw different ones;
- `nat` with mapping None (unknown) when only one map-server answered.
Filtering (who may send in through a mapping) cannot be seen from map-server answers alone.

A check is a round: one request per map-server, retransmitted `retry` seconds apart up to
`attempts` times, finished when all have answered or the last retransmission went unanswered. A
round starts at once for a new or changed uplink (address, or down -> up) and every `interval`
seconds after the last one started; the result of the last finished round stays until the next
one finishes, except after an uplink change, when the old result describes an old address and is
dropped. The periodic requests also keep the NAT's mapping of the control port alive, so
`interval` must stay below the NAT's UDP timeout (lispers.net: 15 s).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from lisp import auth
from lisp.address import Address, NoAddress
from lisp.auth import AuthAlg
from lisp.errors import DecodeError
from lisp.info import InfoMessage
from lisp.lcaf import NatTraversal

NO_NAT = "none"
NAT = "nat"
CHECKING = "checking"
NO_ANSWER = "no-answer"
ENDPOINT_INDEPENDENT = "endpoint-independent"
ENDPOINT_DEPENDENT = "endpoint-dependent"

Endpoint = tuple[str, int]  # (IP address text, UDP port)


@dataclass(frozen=True)
class InfoServer:
    """A map-server to ask, with the site key its answers must be signed with."""

    address: str
    port: int
    key_id: int
    key: bytes = field(repr=False)

    @property
    def endpoint(self) -> Endpoint:
        return (self.address, self.port)


@dataclass(frozen=True)
class Uplink:
    """One of our uplinks as the detector sees it: where its requests leave from."""

    name: str  # how the caller names the uplink (the xTR uses its address text)
    address: str
    port: int
    up: bool = True


@dataclass(frozen=True)
class SendInfo:
    """Send `packet` from uplink `uplink` to `dest`."""

    uplink: str
    dest: Endpoint
    packet: bytes


@dataclass(frozen=True)
class UplinkNat:
    """What the last finished check found for one uplink."""

    state: str  # NO_NAT, NAT, CHECKING (no round finished yet) or NO_ANSWER
    mapping: str | None  # NAT only: ENDPOINT_INDEPENDENT, ENDPOINT_DEPENDENT or None (unknown)
    translated: Endpoint | None  # how the first answering map-server saw us
    seen_by: dict[str, Endpoint]  # "address:port" of each answering map-server -> what it saw
    checked_at: float | None  # when that round finished


@dataclass
class _Round:
    started: float
    nonces: dict[int, InfoServer]  # outstanding requests of this round
    sent: dict[int, int]  # nonce -> transmissions
    last_sent: float
    answers: dict[InfoServer, Endpoint] = field(default_factory=dict)


class NatDetector:
    def __init__(
        self,
        eid: Address,
        mask_len: int,
        *,
        interval: float = 15.0,
        retry: float = 1.0,
        attempts: int = 3,
    ) -> None:
        # The EID-prefix names our site to the map-server, which picks the key by it.
        self.eid = eid
        self.mask_len = mask_len
        self.interval = interval
        self.retry = retry
        self.attempts = attempts
        self.servers: tuple[InfoServer, ...] = ()
        self.uplinks: dict[str, Uplink] = {}
        self.results: dict[str, UplinkNat] = {}
        self._rounds: dict[str, _Round] = {}
        self._next: dict[str, float] = {}  # uplink -> when its next round starts
        self._nonces: dict[int, str] = {}  # outstanding nonce -> uplink name

    # ------------------------------------------------------------------ inputs

    def set_servers(self, servers: Iterable[InfoServer], now: float) -> None:
        """The map-servers to ask; a changed set re-checks every uplink at once."""
        servers = tuple(servers)
        if servers != self.servers:
            self.servers = servers
            for name in self.uplinks:
                self._restart(name, now, keep_result=True)

    def set_uplinks(self, uplinks: Iterable[Uplink], now: float) -> None:
        """The uplinks as they are now; a new, readdressed or re-upped one is checked at once."""
        fresh = {u.name: u for u in uplinks}
        for name in list(self.uplinks):
            if name not in fresh:
                self._forget(name)
        for name, uplink in fresh.items():
            old = self.uplinks.get(name)
            self.uplinks[name] = uplink
            if (
                old is None
                or (old.address, old.port) != (uplink.address, uplink.port)
                or (uplink.up and not old.up)
            ):
                self._restart(name, now, keep_result=False)

    def rename(self, old: str, new: str, address: str, now: float) -> None:
        """Uplink `old` is now `new` at `address` (it moved, mesh.mobility): check it at once,
        keeping the old verdict until that round finishes, so a node behind a NAT does not
        look public (and register its private address) for a round trip."""
        uplink = self.uplinks.get(old)
        result = self.results.get(old)
        self._forget(old)
        if uplink is None:
            return
        self.uplinks[new] = Uplink(new, address, uplink.port, uplink.up)
        self._restart(new, now, keep_result=True)
        if result is not None:
            self.results[new] = result

    def recheck(self, now: float) -> None:
        """Check every uplink again now (the operator asked, e.g. `lispmesh netcheck`)."""
        for name in self.uplinks:
            if name not in self._rounds:
                self._restart(name, now, keep_result=True)

    def poll(self, now: float) -> list[SendInfo]:
        """Requests due now: new rounds, retransmissions; finishes rounds that timed out."""
        out: list[SendInfo] = []
        for name, uplink in self.uplinks.items():
            if not uplink.up or not self._servers_for(uplink):
                continue
            current = self._rounds.get(name)
            if current is None and now >= self._next.get(name, now):
                current = self._start(name, now)
                out += self._send_all(uplink, current, now, list(current.nonces))
                continue
            if current is None or now - current.last_sent < self.retry:
                continue
            due = [n for n in current.nonces if current.sent[n] < self.attempts]
            if due:
                out += self._send_all(uplink, current, now, due)
            else:
                self._finish(name, now)
        return out

    def on_reply(self, raw: bytes, source: Endpoint, now: float) -> str | None:
        """An Info-Reply arrived; None when accepted, else the reason it was dropped."""
        try:
            reply = InfoMessage.decode(raw)
        except DecodeError:
            return "malformed"
        if not reply.is_reply:
            return "not-a-reply"
        name = self._nonces.get(reply.nonce)
        if name is None:
            return "unknown-nonce"
        current = self._rounds[name]
        server = current.nonces[reply.nonce]
        if source != server.endpoint:
            return "wrong-source"
        if not auth.verify(raw, server.key):
            return "bad-auth"
        nat = reply.payload
        if not isinstance(nat, NatTraversal) or isinstance(nat.global_etr, NoAddress):
            return "no-nat-lcaf"
        del current.nonces[reply.nonce], self._nonces[reply.nonce]
        current.answers[server] = (str(nat.global_etr), nat.etr_port)
        if not current.nonces:
            self._finish(name, now)
        return None

    # ------------------------------------------------------------------ outputs

    def result(self, name: str) -> UplinkNat:
        return self.results.get(name, UplinkNat(CHECKING, None, None, {}, None))

    def checking(self, name: str) -> bool:
        """Is a round of this uplink still out?"""
        return name in self._rounds

    def next_due(self) -> float | None:
        """When poll next has something to do (for a caller that sleeps until then)."""
        times = [self._next[n] for n in self.uplinks if n not in self._rounds and n in self._next]
        times += [r.last_sent + self.retry for r in self._rounds.values()]
        return min(times) if times else None

    # ------------------------------------------------------------------ internals

    def _restart(self, name: str, now: float, keep_result: bool) -> None:
        self._drop_round(name)
        self._next[name] = now
        if not keep_result:
            self.results.pop(name, None)

    def _forget(self, name: str) -> None:
        self._drop_round(name)
        self.uplinks.pop(name, None)
        self.results.pop(name, None)
        self._next.pop(name, None)

    def _drop_round(self, name: str) -> None:
        current = self._rounds.pop(name, None)
        if current is not None:
            for nonce in current.nonces:
                self._nonces.pop(nonce, None)

    def _servers_for(self, uplink: Uplink) -> list[InfoServer]:
        """The map-servers of the uplink's address family (an IPv4 uplink cannot ask over v6)."""
        v6 = ":" in uplink.address
        return [s for s in self.servers if (":" in s.address) == v6]

    def _start(self, name: str, now: float) -> _Round:
        nonces: dict[int, InfoServer] = {}
        for server in self._servers_for(self.uplinks[name]):
            nonce = secrets.randbits(64)
            while nonce in self._nonces or nonce in nonces:
                nonce = secrets.randbits(64)
            nonces[nonce] = server
            self._nonces[nonce] = name
        current = _Round(now, nonces, dict.fromkeys(nonces, 0), now)
        self._rounds[name] = current
        self._next[name] = now + self.interval
        return current

    def _send_all(
        self, uplink: Uplink, current: _Round, now: float, nonces: list[int]
    ) -> list[SendInfo]:
        current.last_sent = now
        out = []
        for nonce in nonces:
            server = current.nonces[nonce]
            current.sent[nonce] += 1
            unsigned = InfoMessage(
                nonce,
                False,
                server.key_id,
                AuthAlg.HMAC_SHA_256_128,
                b"",
                0,
                self.eid,
                self.mask_len,
            ).encode()
            out.append(SendInfo(uplink.name, server.endpoint, auth.sign(unsigned, server.key)))
        return out

    def _finish(self, name: str, now: float) -> None:
        current = self._rounds[name]
        self._drop_round(name)
        uplink = self.uplinks[name]
        self.results[name] = classify(
            (uplink.address, uplink.port),
            [(s.endpoint, current.answers[s]) for s in self.servers if s in current.answers],
            now,
        )


def classify(local: Endpoint, answers: list[tuple[Endpoint, Endpoint]], now: float) -> UplinkNat:
    """Classify an uplink from (map-server, what it saw) pairs, in the order the servers are
    configured."""
    if not answers:
        return UplinkNat(NO_ANSWER, None, None, {}, now)
    seen_by = {f"{_show(server)}": seen for server, seen in answers}
    outside = [(server, seen) for server, seen in answers if seen != local]
    if not outside:
        return UplinkNat(NO_NAT, None, local, seen_by, now)
    mapping = None
    if len({server for server, _ in outside}) >= 2:
        distinct = {seen for _, seen in outside}
        mapping = ENDPOINT_INDEPENDENT if len(distinct) == 1 else ENDPOINT_DEPENDENT
    return UplinkNat(NAT, mapping, outside[0][1], seen_by, now)


def _show(endpoint: Endpoint) -> str:
    address, port = endpoint
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
