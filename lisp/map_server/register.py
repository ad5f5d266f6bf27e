"""The register path of a map-server (RFC 9301 §8.2): Map-Register in, Map-Notify out.

The longest allowed prefix covering each record names the site (all records of one message must
name the same site; more-specifics only if the site accepts them), then the HMAC is checked with
that site's key for the message's key-id, then the nonce, then the site's registration limit
(`Site.max_registrations`). A Record TTL of 0 deregisters.

Nonces (RFC 9301 §5.6, §8.2): the Nonce only has to be non-zero when a Map-Notify is wanted, and
some xTRs (lispers.net) send the same nonce in every Map-Register. So a nonce the site used within
the lifetime of what it registered (capped at `max_replay_window`) is accepted again only as a
refresh: every record already registered, live, with the same bytes (RLOC-set, TTL), lifetime,
xTR-ID, site-ID and proxy flag. A repeated nonce that would change anything (other RLOCs, another
TTL, a removal, a registration that expired meanwhile) is refused as `replayed-nonce`: this is
what keeps a recorded older Map-Register from reverting the site to an older RLOC-set. Nonce 0
with the M bit set is refused (`zero-nonce`) unless `accept_zero_nonce`.

Per record only ints and the record's own bytes are handled: the common plain-address shape of
Map-Register is read with struct calls and the Map-Notify reuses the received record bytes
(`lisp.map_register.split_register` / `notify_from_register`); the strings of a refusal are built
in its branch only.
"""

from __future__ import annotations

import logging
from collections import Counter

from lisp import auth
from lisp.errors import DecodeError, EncodeError
from lisp.map_register import RegisterParts, notify_from_register, split_register
from lisp.map_server.eids import ip_from_int
from lisp.map_server.prefixes import MASKS, shown
from lisp.map_server.registry import Registration, Registry
from lisp.map_server.site import Log, MsAction, Refused, SendTo, Site, clean, show
from lisp.records import TTL_UNLIMITED

NONCE_SWEEP_INTERVAL = 10.0  # seconds between sweeps of forgotten Map-Register nonces

# One record of a Map-Register placed in a site: (record bytes, Record TTL, iid, family, net, len).
Placed = tuple[bytes, int, int, int, int, int]


class Registrar:
    """Authenticates Map-Registers and writes what they register into a `Registry`."""

    def __init__(
        self,
        registry: Registry,
        counters: Counter[str],
        *,
        registration_timeout: float,
        max_lifetime: float,
        max_replay_window: float,
        accept_zero_nonce: bool,
    ) -> None:
        self.registry = registry
        self.counters = counters
        self.registration_timeout = registration_timeout
        self.max_lifetime = max_lifetime
        self.max_replay_window = max_replay_window
        self.accept_zero_nonce = accept_zero_nonce
        # Per site: Map-Register nonce -> until when it counts as a replay.
        self._nonces: dict[str, dict[int, float]] = {}
        self._next_nonce_sweep = 0.0

    def handle(self, raw: bytes, source: tuple[str, int], now: float) -> list[MsAction]:
        self.counters["map-register"] += 1
        try:
            return self._register(raw, source, now)
        except Refused as refused:
            self.counters[refused.reason] += 1
            line = clean(f"refused Map-Register from {show(source)}: {refused.message}")
            return [Log(refused.level, line, refused.reason)]

    def _register(self, raw: bytes, source: tuple[str, int], now: float) -> list[MsAction]:
        try:
            parts = split_register(raw)
        except DecodeError as exc:
            raise Refused("malformed", f"malformed: {exc}", logging.INFO) from None
        if not parts.records:
            raise Refused("malformed", "no EID-records", logging.INFO)
        site: Site | None = None
        placed: list[Placed] = []
        allowance_of = self.registry.allowance
        for index, (record_raw, ttl, iid, version, address, mask_len) in enumerate(parts.records):
            if version == 0:
                assert parts.message is not None  # only the full decoder yields non-IP EIDs
                eid = parts.message.records[index].eid
                raise Refused("prefix-not-allowed", f"EID {eid} is not an IP prefix")
            width = 32 if version == 4 else 128
            if mask_len > width:
                raise Refused(
                    "malformed", f"EID mask-len {mask_len} for {ip_from_int(version, address)}",
                    logging.INFO,
                )  # fmt: skip
            net = address & MASKS[width][mask_len]
            allowance = allowance_of(iid, version, net, mask_len)
            if allowance is None:
                raise Refused(
                    "prefix-not-allowed",
                    f"EID-prefix {shown(iid, version, net, mask_len)} is in no site's allowance",
                )
            if site is not None and allowance.site is not site:
                raise Refused(
                    "mixed-sites",
                    f"EID-prefix {shown(iid, version, net, mask_len)} belongs to site "
                    f"{allowance.site.name}, the others to site {site.name}",
                )
            site = allowance.site
            placed.append((record_raw, ttl, iid, version, net, mask_len))
        assert site is not None
        key = site.keys.get(parts.key_id)
        if key is None:
            raise Refused("bad-auth", f"site {site.name}: unknown key-id {parts.key_id}")
        if not auth.verify(raw, key):
            raise Refused(
                "bad-auth",
                f"site {site.name}: authentication failed (key-id {parts.key_id}, "
                f"algorithm {parts.alg_id}; wrong shared key or algorithm?)",
            )
        ttl_timeout = parts.ttl_timeout
        lifetimes = [self._lifetime(ttl_timeout, ttl) for _r, ttl, *_ in placed]
        refresh = self._check_nonce(site, parts, placed, lifetimes, now)
        self._check_limit(site, placed, lifetimes)
        window = min(max(lifetimes), self.max_replay_window)
        self._nonces.setdefault(site.name, {})[parts.nonce] = now + window
        if refresh:
            self.counters["nonce-refresh"] += 1
        actions: list[MsAction] = []
        registry = self.registry
        store = registry.store
        last_lifetime, until = -1.0, now
        fresh: list[Registration] = []  # new registrations expiring at `until`
        for (record_raw, _ttl, iid, version, net, length), lifetime in zip(
            placed, lifetimes, strict=True
        ):
            if lifetime <= 0:
                registry.deregister(iid, version, net, length)
                continue
            if lifetime != last_lifetime:  # one float shared by the records of a message
                if fresh:
                    registry.queue_expiry(until, fresh)
                    fresh = []
                last_lifetime, until = lifetime, now + lifetime
            moved = store(site, parts, record_raw, (iid, version, net, length), lifetime,
                          source, now, fresh)  # fmt: skip
            if moved is not None:
                actions.append(moved)
        if fresh:  # one expiry entry for the records of a message, not one each
            registry.queue_expiry(until, fresh)
        self.counters["registered"] += 1
        if parts.want_map_notify:
            try:
                data = notify_from_register(raw, parts, key)
            except EncodeError as exc:  # decodable but not re-encodable: odd, not fatal
                self.counters["notify-error"] += 1
                actions.append(Log(logging.WARNING, f"no Map-Notify for site {site.name}: {exc}"))
            else:
                actions.append(SendTo(data, source))
                self.counters["map-notify"] += 1
        return actions

    def _lifetime(self, ttl_timeout: bool, ttl: int) -> float:
        """Seconds a registration with Record TTL `ttl` (minutes) lives; 0 (TTL 0) deregisters.
        `ttl_timeout`: the Map-Register's T bit (use the Record TTL as the timeout)."""
        if ttl == 0:
            return 0.0
        if not ttl_timeout:
            return self.registration_timeout
        if ttl == TTL_UNLIMITED:
            return self.max_lifetime
        return min(ttl * 60.0, self.max_lifetime)

    def _check_nonce(
        self,
        site: Site,
        parts: RegisterParts,
        placed: list[Placed],
        lifetimes: list[float],
        now: float,
    ) -> bool:
        """Refuse a nonce that cannot be accepted (see the module docstring); True if this is a
        refresh under a nonce seen before.

        Only authenticated messages get here, so an attacker cannot fill the table; a nonce is
        kept for the lifetime of what it registered (capped at max_replay_window) and swept by
        `sweep`. A replay after that window is accepted: LISP has no timestamp to catch it.
        """
        nonce = parts.nonce
        if nonce == 0 and parts.want_map_notify and not self.accept_zero_nonce:
            raise Refused(
                "zero-nonce",
                f"site {site.name}: nonce 0 with a Map-Notify requested (RFC 9301 allows 0 only "
                "without the M bit; make the xTR send random nonces, or set accept_zero_nonce)",
            )
        seen = self._nonces.get(site.name)
        until = None if seen is None else seen.get(nonce)
        if until is None or until <= now:
            return False
        if self._changes_state(parts, placed, lifetimes, now):
            raise Refused(
                "replayed-nonce",
                f"site {site.name}: replayed nonce {nonce:#018x} with other registration "
                "content (an old Map-Register, or an xTR that reuses its nonce for a change)",
            )
        return True

    def _changes_state(
        self, parts: RegisterParts, placed: list[Placed], lifetimes: list[float], now: float
    ) -> bool:
        """Would this Map-Register change what is registered (beyond the expiry times)?"""
        get = self.registry.get
        for (record_raw, _ttl, iid, version, net, length), lifetime in zip(
            placed, lifetimes, strict=True
        ):
            if lifetime <= 0:
                return True  # a removal
            reg = get(iid, version, net, length)
            if (
                reg is None
                or reg.expires <= now
                or reg.raw != record_raw
                or reg.lifetime != lifetime
                or reg.xtr_id != parts.xtr_id
                or reg.site_id != parts.site_id
                or reg.proxy_reply != parts.proxy_reply
            ):
                return True
        return False

    def _check_limit(self, site: Site, placed: list[Placed], lifetimes: list[float]) -> None:
        """Refuse a Map-Register that would take the site past `max_registrations`."""
        held = self.registry.per_site[site.name]
        limit = site.max_registrations
        if held + len(placed) <= limit:  # the common case: no lookups
            return
        get = self.registry.get
        new = sum(
            1
            for (_raw, _ttl, iid, version, net, length), lifetime in zip(
                placed, lifetimes, strict=True
            )
            if lifetime > 0 and get(iid, version, net, length) is None
        )
        if held + new > limit:
            raise Refused(
                "site-limit",
                f"site {site.name}: holds {held} registrations, {new} more would pass its "
                f"limit of {limit}",
            )

    def sweep(self, now: float) -> None:
        """Forget the nonces whose replay window is over (at most every NONCE_SWEEP_INTERVAL)."""
        if now >= self._next_nonce_sweep:
            self._next_nonce_sweep = now + NONCE_SWEEP_INTERVAL
            for seen in self._nonces.values():
                for nonce in [n for n, until in seen.items() if until <= now]:
                    del seen[nonce]

    def forget_sites(self, names: set[str]) -> None:
        """Only the sites in `names` exist from now on: drop the nonces of the others."""
        for name in [n for n in self._nonces if n not in names]:
            del self._nonces[name]
