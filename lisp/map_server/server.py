"""The map-server / map-resolver as one object: the registry, the register path and the resolver.

`MapServer.handle` takes any control message received on UDP 4342 and dispatches it by type;
everything refused or malformed is counted in `counters` by reason and explained by a `Log`
action. No key material ever appears in a log line or a repr.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

from lisp.address import Address, IpAddress
from lisp.ecm import CONTROL_PORT
from lisp.map_server.info_reply import InfoResponder
from lisp.map_server.register import Registrar
from lisp.map_server.registry import Registration, Registry
from lisp.map_server.resolve import Resolver
from lisp.map_server.site import Log, MsAction, PolicyCheck, Site, clean, show
from lisp.records import Action


class MapServer:
    """Registrations in, Map-Notifies, Map-Replies and forwarded Map-Requests out.

    The keyword arguments configure the register path (`Registrar`: timeouts, nonce rules), the
    resolver (`Resolver`: negative replies, forwarding, the policy check) and the answers to
    Info-Requests (`InfoResponder`: unauthenticated ones, the RTRs to announce).
    """

    def __init__(
        self,
        sites: Iterable[Site],
        *,
        registration_timeout: float = 180.0,
        max_lifetime: float = 86400.0,
        max_replay_window: float = 3600.0,
        accept_zero_nonce: bool = False,
        unregistered_action: Action = Action.SEND_MAP_REQUEST,
        unregistered_ttl: int = 1,
        outside_action: Action = Action.NATIVELY_FORWARD,
        outside_ttl: int = 15,
        proxy_default_ttl: int = 1440,
        etr_port: int = CONTROL_PORT,
        mark_to_etr: bool = True,
        policy_check: PolicyCheck | None = None,
        policy_denied_ttl: int = 1,
        accept_unauthenticated_info: bool = False,
        rtrs: tuple[Address, ...] = (),
    ) -> None:
        self.counters: Counter[str] = Counter()
        self.registry = Registry(sites, self.counters)
        self.registrar = Registrar(
            self.registry,
            self.counters,
            registration_timeout=registration_timeout,
            max_lifetime=max_lifetime,
            max_replay_window=max_replay_window,
            accept_zero_nonce=accept_zero_nonce,
        )
        self.resolver = Resolver(
            self.registry,
            self.counters,
            unregistered_action=unregistered_action,
            unregistered_ttl=unregistered_ttl,
            outside_action=outside_action,
            outside_ttl=outside_ttl,
            proxy_default_ttl=proxy_default_ttl,
            etr_port=etr_port,
            mark_to_etr=mark_to_etr,
            policy_check=policy_check,
            policy_denied_ttl=policy_denied_ttl,
        )
        self.info = InfoResponder(
            self.registry,
            self.counters,
            accept_unauthenticated=accept_unauthenticated_info,
            rtrs=rtrs,
        )

    @property
    def sites(self) -> tuple[Site, ...]:
        return self.registry.sites

    @property
    def policy_check(self) -> PolicyCheck | None:
        return self.resolver.policy_check

    @policy_check.setter
    def policy_check(self, check: PolicyCheck | None) -> None:
        self.resolver.policy_check = check

    def replace_sites(self, sites: Iterable[Site], now: float) -> list[Registration]:
        """Take a new set of sites without losing the registrations that stay valid (see
        `Registry.replace_sites`); the withdrawn registrations are returned."""
        withdrawn = self.registry.replace_sites(sites, now)
        self.registrar.forget_sites({site.name for site in self.registry.sites})
        return withdrawn

    # -- dispatch ---------------------------------------------------------------------------

    def handle(self, raw: bytes, source: tuple[str, int], now: float) -> list[MsAction]:
        """Any control message received on UDP 4342; those not for a map-server are counted."""
        if not raw:
            return self._refuse("malformed", source, "empty message", logging.INFO)
        msg_type = raw[0] >> 4
        if msg_type == 3:
            return self.registrar.handle(raw, source, now)
        if msg_type in (1, 8):
            return self.resolver.handle(raw, source, now)
        if msg_type == 7:
            return self.info.handle(raw, source, now)
        return self._refuse(
            "unsupported-type", source, f"message type {msg_type} is not for a map-server",
            logging.INFO,
        )  # fmt: skip

    def handle_register(self, raw: bytes, source: tuple[str, int], now: float) -> list[MsAction]:
        return self.registrar.handle(raw, source, now)

    def handle_map_request(self, raw: bytes, source: tuple[str, int], now: float) -> list[MsAction]:
        return self.resolver.handle(raw, source, now)

    def _refuse(
        self, reason: str, source: tuple[str, int], why: str, level: int = logging.WARNING
    ) -> list[MsAction]:
        self.counters[reason] += 1
        return [Log(level, clean(f"dropped message from {show(source)}: {why}"), reason)]

    # -- expiry and status ------------------------------------------------------------------

    def expire(self, now: float) -> list[Registration]:
        """Remove and return the registrations whose lifetime is over; forget old nonces."""
        expired = self.registry.expire(now)
        self.registrar.sweep(now)
        return expired

    def registrations(self) -> list[Registration]:
        """Every registration (expired ones not yet swept included), in a stable order."""
        return self.registry.registrations()

    def registrations_page(self, offset: int, limit: int) -> tuple[int, list[Registration]]:
        """(how many registrations there are, at most `limit` of them from `offset`)."""
        return self.registry.registrations_page(offset, limit)

    def registration_count(self) -> int:
        return self.registry.registration_count()

    def lookup(self, eid: IpAddress, iid: int = 0, now: float | None = None) -> Registration | None:
        """The registration whose prefix is the longest match for `eid` (live at `now`)."""
        return self.registry.lookup(eid, iid, now)
