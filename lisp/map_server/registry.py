"""The registrations a map-server holds, and the allowances that say who may register what.

`Registry` owns the tables: the allowed EID-prefixes of the sites (by instance-id and family,
longest prefix owns its space), the registrations (one `Registration` per registered prefix), the
bounds for negative replies (configured plus registered prefixes, see `PrefixSet.hole`), the expiry
heap, and a sorted snapshot for paging. The register path (`lisp.map_server.register`) writes it
after a message was authenticated; the resolver (`lisp.map_server.resolve`) reads it.

Registrations are slotted objects holding the EID-record's wire bytes (about 400 bytes each,
one object for the garbage collector per registration and one per Map-Register): a refresh whose
record is byte-identical to what is held skips the RLOC-set comparison.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from lisp.address import IpAddress
from lisp.map_register import RegisterParts, decode_record
from lisp.map_server.prefixes import MASKS, WIDTH, PrefixSet, PrefixTable, network
from lisp.map_server.site import Log, Prefix, Site, clean, show
from lisp.records import EidRecord, RlocRecord

NO_EID = IPv4Address(0)


def _order(reg: Registration) -> tuple[str, int, int, int, int]:
    """The order registrations are listed in (status, paging)."""
    return (reg.site.name, reg.iid, reg.version, reg.net, reg.length)


class Registration:
    """One registered EID-prefix: the site's record (RLOC-set), who sent it and until when.

    The EID-record is kept as the bytes it was registered with (`raw`: compact, no objects for
    the garbage collector to walk, and a refresh compares with one bytes comparison); `record`
    decodes it when asked.
    """

    __slots__ = (
        "expires",
        "first_registered",
        "iid",
        "last_registered",
        "length",
        "lifetime",
        "net",
        "proxy_reply",
        "raw",
        "site",
        "site_id",
        "source",
        "version",
        "xtr_id",
    )

    def __init__(
        self, site: Site, iid: int, version: int, net: int, length: int, now: float
    ) -> None:
        self.site = site
        self.iid = iid
        self.version = version
        self.net = net
        self.length = length
        self.first_registered = now
        self.last_registered = now
        self.expires = now
        self.lifetime = 0.0  # seconds the last Map-Register gave it
        self.raw = b""  # the EID-record as registered (wire bytes)
        self.xtr_id: int | None = None
        self.site_id = 0
        self.source: tuple[str, int] = ("", 0)
        self.proxy_reply = False

    @property
    def prefix(self) -> Prefix:
        return network(self.version, self.net, self.length)

    @property
    def record(self) -> EidRecord:
        """The registered EID-record, decoded from `raw` (bytes that decoded once already)."""
        return decode_record(self.raw) if self.raw else EidRecord(NO_EID, 0)

    @property
    def rlocs(self) -> tuple[RlocRecord, ...]:
        return self.record.rlocs

    def status(self, now: float) -> dict[str, Any]:
        """JSON-ready view (times relative to `now`, so they mean something to a person)."""
        return {
            "site": self.site.name,
            "iid": self.iid,
            "eid_prefix": str(self.prefix),
            "rlocs": [
                {
                    "address": str(r.address),
                    "priority": r.priority,
                    "weight": r.weight,
                    "reachable": r.reachable,
                }
                for r in self.record.rlocs
            ],
            "xtr_id": None if self.xtr_id is None else f"{self.xtr_id:032x}",
            "site_id": self.site_id,
            "registered_from": show(self.source),
            "proxy_reply": self.proxy_reply or self.site.proxy_reply,
            "last_registered_ago": round(now - self.last_registered, 3),
            "expires_in": round(self.expires - now, 3),
        }

    def __repr__(self) -> str:
        return f"Registration({self.site.name!r}, [{self.iid}]{self.prefix})"

    def __lt__(self, other: Registration) -> bool:  # tie-break in the expiry heap only
        return id(self) < id(other)


@dataclass(frozen=True, slots=True)
class Allowance:
    site: Site
    length: int


def allowance_tables(sites: Iterable[Site]) -> dict[tuple[int, int], PrefixTable[Allowance]]:
    """Who may register what, by (instance-id, family); ValueError on a name or prefix clash."""
    tables: dict[tuple[int, int], PrefixTable[Allowance]] = {}
    names: set[str] = set()
    for site in sites:
        if site.name in names:
            raise ValueError(f"two sites are named {site.name!r}")
        names.add(site.name)
        for iid, prefix in site.allowed:
            table = tables.setdefault((iid, prefix.version), PrefixTable())
            net, length = int(prefix.network_address), prefix.prefixlen
            other = table.get(net, length)
            if other is not None:
                raise ValueError(
                    f"EID-prefix [{iid}]{prefix} is allowed for both site "
                    f"{other.site.name!r} and site {site.name!r}"
                )
            table.put(net, length, Allowance(site, length))
    return tables


class Registry:
    """The allowances of a set of sites and the registrations made under them."""

    def __init__(self, sites: Iterable[Site], counters: Counter[str]) -> None:
        self.sites: tuple[Site, ...] = tuple(sites)
        self.counters = counters
        self.per_site: Counter[str] = Counter()  # registrations held, by site name
        self.allowed: dict[tuple[int, int], PrefixTable[Allowance]] = allowance_tables(self.sites)
        self.registered: dict[tuple[int, int], PrefixTable[Registration]] = {}
        self.bounds: dict[tuple[int, int], PrefixSet] = {}
        # (when, registrations): due at `when` at the earliest (refreshes are found when due)
        self._expiry: list[tuple[float, tuple[Registration, ...]]] = []
        # Bumped whenever a registration comes or goes: pages of `registrations_page` are cut
        # from one sorted snapshot for as long as it stays valid.
        self._membership = 0
        self._snapshot: tuple[int, list[Registration]] = (-1, [])
        self._add_bounds(self.allowed)

    def replace_sites(self, sites: Iterable[Site], now: float) -> list[Registration]:
        """Take a new set of sites (new keys, new allowances, sites added or removed) without
        losing the registrations that stay valid. Registrations of a removed site, or whose
        prefix now belongs to another site or to none, are withdrawn and returned. A bad set
        (duplicate names or allowances) raises ValueError and changes nothing."""
        new_sites = tuple(sites)
        allowed = allowance_tables(new_sites)
        by_name = {site.name: site for site in new_sites}
        self.sites, self.allowed = new_sites, allowed
        withdrawn: list[Registration] = []
        for reg in self.registrations():
            site = by_name.get(reg.site.name)
            allowance = self.allowance(reg.iid, reg.version, reg.net, reg.length)
            if site is None or allowance is None or allowance.site is not site:
                self.registered[(reg.iid, reg.version)].remove(reg.net, reg.length)
                self._uncount(reg.site.name)
                withdrawn.append(reg)
            else:
                reg.site = site  # its new keys and flags
        self.bounds = {}
        self._add_bounds(allowed)
        self._add_bounds(self.registered)
        self._membership += 1
        self.counters["withdrawn"] += len(withdrawn)
        return withdrawn

    def _add_bounds(self, tables: Mapping[tuple[int, int], PrefixTable[Any]]) -> None:
        for key, table in tables.items():
            for length, bucket in table.by_len.items():
                for net in bucket:
                    self._bound_set(key).add(net, length)

    def allowance(self, iid: int, version: int, net: int, length: int) -> Allowance | None:
        table = self.allowed.get((iid, version))
        if table is None:
            return None
        # The longest allowed prefix owns its space, even when nested in another site's
        # allowance: a site that takes no more-specifics does not leave a gap for the outer one.
        allowance = table.longest(net, length, MASKS[WIDTH[version]])
        if allowance is None:
            return None
        if allowance.length == length or allowance.site.accept_more_specifics:
            return allowance
        return None

    def store(
        self,
        site: Site,
        parts: RegisterParts,
        record_raw: bytes,
        key: tuple[int, int, int, int],
        lifetime: float,
        source: tuple[str, int],
        now: float,
        fresh: list[Registration],
    ) -> Log | None:
        """Create or refresh one registration; a new one is appended to `fresh` (the caller
        queues it for expiry). An RLOC-set change is returned as a log line."""
        iid, version, net, length = key
        table = self.registered.get((iid, version))
        if table is None:
            table = self.registered[(iid, version)] = PrefixTable()
        reg = table.get(net, length)
        moved: Log | None = None
        if reg is None:
            reg = Registration(site, iid, version, net, length, now)
            table.put(net, length, reg)
            self._bound_set((iid, version)).add(net, length)
            fresh.append(reg)
            self.counters["new-registration"] += 1
            self.per_site[site.name] += 1
            self._membership += 1
        elif reg.raw != record_raw:  # a byte-identical refresh has the same RLOC-set
            old_rlocs, new_rlocs = reg.rlocs, decode_record(record_raw).rlocs
            if old_rlocs != new_rlocs:
                # Mobility. RFC 9301 has the map-server send the old RLOC-set an unsolicited
                # Map-Notify (acked by Map-Notify-Ack, retransmitted); not done here (yet).
                self.counters["rloc-set-changed"] += 1
                old = ", ".join(str(r.address) for r in old_rlocs) or "none"
                new = ", ".join(str(r.address) for r in new_rlocs) or "none"
                line = f"site {site.name}: [{iid}]{reg.prefix} moved from RLOCs {old} to {new}"
                moved = Log(logging.INFO, clean(line), "rloc-set-changed")
        reg.raw = record_raw
        reg.xtr_id = parts.xtr_id
        reg.site_id = parts.site_id
        reg.source = source
        reg.proxy_reply = parts.proxy_reply
        reg.last_registered = now
        reg.lifetime = lifetime
        reg.expires = now + lifetime
        return moved

    def deregister(self, iid: int, version: int, net: int, length: int) -> None:
        table = self.registered.get((iid, version))
        reg = None if table is None else table.get(net, length)
        if table is not None and reg is not None:
            table.remove(net, length)
            self._uncount(reg.site.name)
            self._unbound(iid, version, net, length)
            self.counters["deregistered"] += 1
            self._membership += 1

    def _uncount(self, site: str) -> None:
        left = self.per_site[site] - 1
        if left > 0:
            self.per_site[site] = left
        else:
            del self.per_site[site]

    def get(self, iid: int, version: int, net: int, length: int) -> Registration | None:
        """The registration of exactly this prefix (expired ones not swept yet included)."""
        table = self.registered.get((iid, version))
        return None if table is None else table.get(net, length)

    def _unbound(self, iid: int, version: int, net: int, length: int) -> None:
        """A registered prefix is gone: drop it from the hole bounds unless also configured."""
        allowed = self.allowed.get((iid, version))
        if allowed is None or allowed.get(net, length) is None:
            self._bound_set((iid, version)).discard(net, length)

    def _bound_set(self, key: tuple[int, int]) -> PrefixSet:
        bounds = self.bounds.get(key)
        if bounds is None:
            bounds = self.bounds[key] = PrefixSet(WIDTH[key[1]])
        return bounds

    def queue_expiry(self, until: float, regs: list[Registration]) -> None:
        """`regs` (new registrations) are due at `until`: one heap entry for all of them."""
        heapq.heappush(self._expiry, (until, tuple(regs)))

    def expire(self, now: float) -> list[Registration]:
        """Remove and return the registrations whose lifetime is over."""
        expired: list[Registration] = []
        heap = self._expiry
        later: dict[float, list[Registration]] = {}  # refreshed: queued again, by expiry
        while heap and heap[0][0] <= now:
            for reg in heapq.heappop(heap)[1]:
                table = self.registered.get((reg.iid, reg.version))
                if table is None or table.get(reg.net, reg.length) is not reg:
                    continue  # deregistered (or replaced) meanwhile
                if reg.expires > now:  # refreshed since this entry was pushed
                    later.setdefault(reg.expires, []).append(reg)
                    continue
                table.remove(reg.net, reg.length)
                self._unbound(reg.iid, reg.version, reg.net, reg.length)
                self._uncount(reg.site.name)
                expired.append(reg)
        for when, regs in later.items():  # a message's records share their expiry float
            heapq.heappush(heap, (when, tuple(regs)))
        self.counters["expired"] += len(expired)
        if expired:
            self._membership += 1
        return expired

    def registrations(self) -> list[Registration]:
        """Every registration (expired ones not yet swept included), in a stable order."""
        regs = list(self._all_registrations())
        regs.sort(key=_order)
        return regs

    def _all_registrations(self) -> Iterator[Registration]:
        for table in self.registered.values():
            for bucket in table.by_len.values():
                yield from bucket.values()

    def registrations_page(self, offset: int, limit: int) -> tuple[int, list[Registration]]:
        """(how many registrations there are, at most `limit` of them from `offset`) in the
        order of `registrations`. The first few are picked without sorting them all; deeper
        pages come from one sorted snapshot, kept until a registration comes or goes."""
        total = self.registration_count()
        if offset >= total or limit <= 0:
            return total, []
        if offset + limit <= 1024 and (offset + limit) * 8 < total:
            head = heapq.nsmallest(offset + limit, self._all_registrations(), key=_order)
            return total, head[offset:]
        version, regs = self._snapshot
        if version != self._membership:
            regs = self.registrations()
            self._snapshot = (self._membership, regs)
        return total, regs[offset : offset + limit]

    def registration_count(self) -> int:
        return sum(len(table) for table in self.registered.values())

    def lookup(self, eid: IpAddress, iid: int = 0, now: float | None = None) -> Registration | None:
        """The registration whose prefix is the longest match for `eid` (live at `now`)."""
        table = self.registered.get((iid, eid.version))
        if table is None:
            return None
        width = WIDTH[eid.version]
        reg = table.longest(int(eid), width, MASKS[width])
        if reg is not None and now is not None and reg.expires <= now:
            return None
        return reg

    def hole(self, iid: int, eid: IpAddress) -> tuple[int, bool]:
        """For a negative reply about `eid`: (the mask-len of the least-specific prefix around it
        that holds no configured or registered more-specific, whether it is inside an allowance)."""
        key = (iid, eid.version)
        width = WIDTH[eid.version]
        bounds = self.bounds.get(key)
        length = bounds.hole(int(eid)) if bounds is not None else 0
        allowed = self.allowed.get(key)
        inside = allowed is not None and allowed.longest(int(eid), width, MASKS[width]) is not None
        return length, inside
