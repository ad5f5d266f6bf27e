"""Map-server and map-resolver (RFC 9301 §8.2-8.4), co-located, sans-IO.

Bytes and `now` (monotonic seconds, passed in; nothing here reads a clock) go in, `SendTo` and
`Log` actions come out. The map-server side authenticates Map-Registers against the site that owns
their EID-prefixes and keeps the registrations; the map-resolver side answers Map-Requests (in an
ECM, or direct) from them:

- registered EID, proxy reply wanted (Map-Register P bit or `Site.proxy_reply`): a Map-Reply
  from here (A=0, RLOC flags L and p cleared);
- registered EID otherwise (the default): the Map-Request is forwarded in an ECM to one ETR RLOC
  of the registration, inner source address and UDP port kept, so the ETR answers the ITR itself
  and sees the ITR's RFC 8061 Security-Key LCAF (a proxy reply cannot do the key exchange);
- unknown EID: a negative Map-Reply for the least-specific prefix around the EID that holds no
  more-specific configured or registered prefix (`least_specific_hole`).

Map-Registers: the longest allowed prefix covering each record names the site (all records of
one message must name the same site; more-specifics only if the site accepts them), then the HMAC
is checked with that site's key for the message's key-id, then the nonce: a nonce the site used
within the lifetime of what it registered (capped at `max_replay_window`) is a replay; nonce 0 is
refused unless `accept_zero_nonce` (it cannot be replay-checked). A Record TTL of 0 deregisters.
Forwarded ECMs carry the E (to-ETR) bit and a decremented inner TTL; ECMs arriving with E set or
TTL <= 1 are dropped, so an RLOC pointing back at the map-server cannot make a loop.

Lookups are longest-prefix matches over one dict per (instance-id, family, mask-len), mask-lens
present sorted longest first: at most 33 (IPv4) or 129 (IPv6) dict probes, usually a handful.
Registrations are slotted objects holding the EID-record's wire bytes (about 400 bytes each,
one object for the garbage collector per registration and one per Map-Register); the common
plain-address shape of Map-Register is read with struct calls, a refresh whose records are
byte-identical to what is held skips the RLOC-set comparison, and the Map-Notify reuses the
received record bytes (`lisp.map_register.split_register` / `notify_from_register`).
Every refused or malformed message is counted in `counters` by reason and explained by a `Log`
action; no key material ever appears in a log line or a repr.
"""

from __future__ import annotations

import heapq
import logging
import types
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any, Generic, TypeAlias, TypeVar

from lisp import auth
from lisp.address import Address, IpAddress
from lisp.ecm import CONTROL_PORT, EncapsulatedControl
from lisp.errors import DecodeError, EncodeError
from lisp.lcaf import AfiList, InstanceId, SecurityKey
from lisp.map_register import RegisterParts, decode_record, notify_from_register, split_register
from lisp.map_reply import MapReply
from lisp.map_request import MapRequest
from lisp.records import TTL_UNLIMITED, Action, EidRecord, RlocRecord

Prefix: TypeAlias = IPv4Network | IPv6Network
# May the requester (the name of the site whose registration holds the Map-Request's source EID
# and RLOC; None if none does) learn the mapping of (instance-id, EID)? True: answer as usual;
# False: a negative reply, DROP_POLICY_DENIED; None: cannot tell yet (ask again later).
PolicyCheck: TypeAlias = Callable[[str | None, int, IpAddress], bool | None]

_WIDTH = {4: 32, 6: 128}
_MASKS = {w: tuple(((1 << n) - 1) << (w - n) for n in range(w + 1)) for w in (32, 128)}
_MAX_ADDRESS_DEPTH = 4  # how deep to look into LCAFs for an IP (AFI-List, Security-Key)
NONCE_SWEEP_INTERVAL = 10.0  # seconds between sweeps of forgotten Map-Register nonces

# ---------------------------------------------------------------------------------------------
# Configuration and actions


@dataclass(frozen=True, slots=True)
class Site:
    """A registering site: the EID-prefixes it may register and its shared keys (by key-id).

    Several keys allow a rollover: the Map-Register's key-id picks the key. `keys` is left out of
    repr, so logging a Site never leaks a secret.
    """

    name: str
    keys: Mapping[int, bytes] = field(repr=False, hash=False)
    allowed: tuple[tuple[int, Prefix], ...] = ()
    accept_more_specifics: bool = True
    proxy_reply: bool = False

    def __post_init__(self) -> None:
        keys: dict[int, bytes] = {}
        for key_id, key in self.keys.items():
            if not isinstance(key_id, int) or not 0 <= key_id <= 255:
                raise ValueError(f"site {self.name}: key-id {key_id!r} is not 0..255")
            raw = key.encode() if isinstance(key, str) else key
            if not isinstance(raw, bytes) or not raw:
                raise ValueError(f"site {self.name}: key-id {key_id} has an empty or non-bytes key")
            keys[key_id] = raw
        if not keys:
            raise ValueError(f"site {self.name}: no authentication key")
        allowed: list[tuple[int, Prefix]] = []
        for iid, prefix in self.allowed:
            if not isinstance(iid, int) or not 0 <= iid < 1 << 32:
                raise ValueError(f"site {self.name}: instance-id {iid!r} is not 0..2^32-1")
            net = ip_network(prefix) if isinstance(prefix, str) else prefix
            if not isinstance(net, IPv4Network | IPv6Network):
                raise ValueError(f"site {self.name}: {prefix!r} is not an IP prefix")
            allowed.append((iid, net))
        object.__setattr__(self, "keys", types.MappingProxyType(keys))
        object.__setattr__(self, "allowed", tuple(allowed))


@dataclass(frozen=True, slots=True)
class SendTo:
    """Send `data` from the control socket (UDP 4342) to `address` (ip, port)."""

    data: bytes
    address: tuple[str, int]


@dataclass(frozen=True, slots=True)
class Log:
    """One line for the operator. `reason` is the counter it went with (for rate limiting)."""

    level: int
    message: str
    reason: str = ""


MsAction: TypeAlias = SendTo | Log


NO_EID = IPv4Address(0)


def _network(version: int, net: int, length: int) -> Prefix:
    if version == 4:
        return IPv4Network((net, length))
    return IPv6Network((net, length))


def _ip(version: int, address: int) -> IpAddress:
    return IPv4Address(address) if version == 4 else IPv6Address(address)


def _shown(iid: int, version: int, net: int, length: int) -> str:
    return f"[{iid}]{_network(version, net, length)}"


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
        self.raw = b""  # the EID-record as registered (wire bytes)
        self.xtr_id: int | None = None
        self.site_id = 0
        self.source: tuple[str, int] = ("", 0)
        self.proxy_reply = False

    @property
    def prefix(self) -> Prefix:
        return _network(self.version, self.net, self.length)

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
            "registered_from": _show(self.source),
            "proxy_reply": self.proxy_reply or self.site.proxy_reply,
            "last_registered_ago": round(now - self.last_registered, 3),
            "expires_in": round(self.expires - now, 3),
        }

    def __repr__(self) -> str:
        return f"Registration({self.site.name!r}, [{self.iid}]{self.prefix})"

    def __lt__(self, other: Registration) -> bool:  # tie-break in the expiry heap only
        return id(self) < id(other)


# ---------------------------------------------------------------------------------------------
# Prefix structures

V = TypeVar("V")


class _PrefixTable(Generic[V]):
    """Exact and longest-prefix lookups for one (instance-id, family): one dict per mask-len."""

    __slots__ = ("by_len", "lengths")

    def __init__(self) -> None:
        self.by_len: dict[int, dict[int, V]] = {}
        self.lengths: list[int] = []  # the mask-lens present, longest first

    def get(self, net: int, length: int) -> V | None:
        bucket = self.by_len.get(length)
        return None if bucket is None else bucket.get(net)

    def put(self, net: int, length: int, value: V) -> None:
        bucket = self.by_len.get(length)
        if bucket is None:
            bucket = self.by_len[length] = {}
            self.lengths = sorted(self.by_len, reverse=True)
        bucket[net] = value

    def remove(self, net: int, length: int) -> None:
        bucket = self.by_len.get(length)
        if bucket is not None and bucket.pop(net, None) is not None and not bucket:
            del self.by_len[length]
            self.lengths = sorted(self.by_len, reverse=True)

    def longest(self, address: int, max_len: int, masks: tuple[int, ...]) -> V | None:
        for length in self.lengths:
            if length <= max_len:
                value = self.by_len[length].get(address & masks[length])
                if value is not None:
                    return value
        return None

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self.by_len.values())


class _PrefixSet:
    """A set of prefixes of one family, for negative-reply holes.

    Kept sorted as `net << 8 | length` (one int per prefix), so "is some member strictly inside
    prefix P" is one search for the first key at or after P's first strict subprefix: members
    that start inside P and are longer than P are exactly those inside it (aligned prefixes are
    nested or disjoint). The sorted keys are cut into blocks of at most 2 * BLOCK (with each
    block's largest key in `maxes`), so adding or removing one of 100,000 prefixes moves a
    block's worth of pointers, not the whole list.
    """

    __slots__ = ("blocks", "maxes", "width")
    BLOCK = 512

    def __init__(self, width: int) -> None:
        self.width = width
        self.blocks: list[list[int]] = []  # sorted, disjoint, in order
        self.maxes: list[int] = []  # the last key of each block

    @property
    def keys(self) -> list[int]:
        """Every member key, sorted (for inspection and tests)."""
        return [key for block in self.blocks for key in block]

    def __len__(self) -> int:
        return sum(len(block) for block in self.blocks)

    def add(self, net: int, length: int) -> None:
        key = (net << 8) | length
        maxes = self.maxes
        b = bisect_left(maxes, key)
        if b == len(maxes):  # after every member: the end of the last block
            if not maxes:
                self.blocks.append([key])
                maxes.append(key)
                return
            b -= 1
            block = self.blocks[b]
            block.append(key)
            maxes[b] = key
        else:
            block = self.blocks[b]
            i = bisect_left(block, key)  # < len(block): key <= maxes[b]
            if block[i] == key:
                return
            block.insert(i, key)
        if len(block) > 2 * self.BLOCK:
            half = self.BLOCK
            self.blocks[b : b + 1] = [block[:half], block[half:]]
            maxes[b : b + 1] = [block[half - 1], block[-1]]

    def discard(self, net: int, length: int) -> None:
        key = (net << 8) | length
        b = bisect_left(self.maxes, key)
        if b == len(self.maxes):
            return
        block = self.blocks[b]
        i = bisect_left(block, key)
        if block[i] != key:
            return
        del block[i]
        if not block:
            del self.blocks[b], self.maxes[b]
        elif i == len(block):
            self.maxes[b] = block[-1]

    def _first_at_or_after(self, key: int) -> int | None:
        b = bisect_left(self.maxes, key)
        if b == len(self.maxes):
            return None
        block = self.blocks[b]
        return block[bisect_left(block, key)]

    def has_strict_subprefix(self, net: int, length: int) -> bool:
        if length >= self.width:
            return False
        last = net | ((1 << (self.width - length)) - 1)
        found = self._first_at_or_after((net << 8) | (length + 1))
        return found is not None and (found >> 8) <= last

    def hole(self, address: int) -> int:
        """The shortest mask-len L such that prefix(address, L) holds no member strictly inside.

        The predicate is monotone in L (a prefix inside one without strict members has none
        either), so binary search: about log2(width) bisects.
        """
        masks = _MASKS[self.width]
        lo, hi = 0, self.width  # hi always satisfies the predicate (a host prefix)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.has_strict_subprefix(address & masks[mid], mid):
                lo = mid + 1
            else:
                hi = mid
        return lo


def least_specific_hole(address: IpAddress, prefixes: Iterable[Prefix]) -> Prefix:
    """The least-specific prefix containing `address` that strictly contains none of `prefixes`.

    Used for negative Map-Replies (with `prefixes` = configured plus registered EID-prefixes of
    the same instance-id and family): outside the EID space the answer overlaps no EID-prefix at
    all; inside an allowed but unregistered prefix A it lies within A and clear of every
    registered or configured more-specific (A itself, and its ancestors, may contain it).
    """
    width = _WIDTH[address.version]
    members = _PrefixSet(width)
    for prefix in prefixes:
        if prefix.version == address.version:
            members.add(int(prefix.network_address), prefix.prefixlen)
    length = members.hole(int(address))
    return _network(address.version, int(address) & _MASKS[width][length], length)


# ---------------------------------------------------------------------------------------------
# Helpers


def _clean(text: str, limit: int = 300) -> str:
    """Log-safe: control characters escaped (no forged log lines from packet bytes), bounded."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(address: tuple[str, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ip_of(address: Address, depth: int = 0) -> IpAddress | None:
    """The IP an address stands for: itself, or the one inside an AFI-List / Security-Key LCAF."""
    if isinstance(address, IPv4Address | IPv6Address):
        return address
    if depth >= _MAX_ADDRESS_DEPTH:
        return None
    if isinstance(address, SecurityKey):
        return ip_of(address.address, depth + 1)
    if isinstance(address, AfiList):
        for item in address.items:
            found = ip_of(item, depth + 1)
            if found is not None:
                return found
    return None


def _split_eid(eid: Address) -> tuple[int, IpAddress] | None:
    """(instance-id, IP) of an EID, plain or in an Instance-ID LCAF; None if not IP."""
    iid = 0
    if isinstance(eid, InstanceId):
        iid, eid = eid.iid, eid.address
    if isinstance(eid, IPv4Address | IPv6Address):
        return iid, eid
    return None


def _make_eid(iid: int, version: int, net: int, as_lcaf: bool) -> Address:
    address: IpAddress = IPv4Address(net) if version == 4 else IPv6Address(net)
    return InstanceId(iid, address) if as_lcaf or iid else address


def _parse_host(host: str) -> IpAddress | None:
    try:
        return ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


class _Refused(Exception):
    """Internal: a message refused for `reason`, explained by `message`."""

    def __init__(self, reason: str, message: str, level: int = logging.WARNING) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.level = level


# ---------------------------------------------------------------------------------------------
# The map-server / map-resolver


@dataclass(frozen=True, slots=True)
class _Allowance:
    site: Site
    length: int


def _allowance_tables(sites: Iterable[Site]) -> dict[tuple[int, int], _PrefixTable[_Allowance]]:
    """Who may register what, by (instance-id, family); ValueError on a name or prefix clash."""
    tables: dict[tuple[int, int], _PrefixTable[_Allowance]] = {}
    names: set[str] = set()
    for site in sites:
        if site.name in names:
            raise ValueError(f"two sites are named {site.name!r}")
        names.add(site.name)
        for iid, prefix in site.allowed:
            table = tables.setdefault((iid, prefix.version), _PrefixTable())
            net, length = int(prefix.network_address), prefix.prefixlen
            other = table.get(net, length)
            if other is not None:
                raise ValueError(
                    f"EID-prefix [{iid}]{prefix} is allowed for both site "
                    f"{other.site.name!r} and site {site.name!r}"
                )
            table.put(net, length, _Allowance(site, length))
    return tables


class MapServer:
    """Registrations in, Map-Notifies, Map-Replies and forwarded Map-Requests out.

    Negative replies (see the module docstring):
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
    ) -> None:
        self.sites: tuple[Site, ...] = tuple(sites)
        self.registration_timeout = registration_timeout
        self.max_lifetime = max_lifetime
        self.max_replay_window = max_replay_window
        self.accept_zero_nonce = accept_zero_nonce
        self.unregistered_action = unregistered_action
        self.unregistered_ttl = unregistered_ttl
        self.outside_action = outside_action
        self.outside_ttl = outside_ttl
        self.proxy_default_ttl = proxy_default_ttl
        self.etr_port = etr_port
        self.mark_to_etr = mark_to_etr
        self.policy_check = policy_check
        self.policy_denied_ttl = policy_denied_ttl
        self.counters: Counter[str] = Counter()
        self._allowed: dict[tuple[int, int], _PrefixTable[_Allowance]] = {}
        self._registered: dict[tuple[int, int], _PrefixTable[Registration]] = {}
        self._bounds: dict[tuple[int, int], _PrefixSet] = {}
        # (when, registrations): due at `when` at the earliest (refreshes are found when due)
        self._expiry: list[tuple[float, tuple[Registration, ...]]] = []
        # Per site: Map-Register nonce -> until when it counts as a replay.
        self._nonces: dict[str, dict[int, float]] = {}
        self._next_nonce_sweep = 0.0
        # Bumped whenever a registration comes or goes: pages of `registrations_page` are cut
        # from one sorted snapshot for as long as it stays valid.
        self._membership = 0
        self._snapshot: tuple[int, list[Registration]] = (-1, [])
        self._allowed = _allowance_tables(self.sites)
        self._add_bounds(self._allowed)

    def replace_sites(self, sites: Iterable[Site], now: float) -> list[Registration]:
        """Take a new set of sites (new keys, new allowances, sites added or removed) without
        losing the registrations that stay valid. Registrations of a removed site, or whose
        prefix now belongs to another site or to none, are withdrawn and returned. A bad set
        (duplicate names or allowances) raises ValueError and changes nothing."""
        new_sites = tuple(sites)
        allowed = _allowance_tables(new_sites)
        by_name = {site.name: site for site in new_sites}
        self.sites, self._allowed = new_sites, allowed
        withdrawn: list[Registration] = []
        for reg in self.registrations():
            site = by_name.get(reg.site.name)
            allowance = self._allowance(reg.iid, reg.version, reg.net, reg.length)
            if site is None or allowance is None or allowance.site is not site:
                self._registered[(reg.iid, reg.version)].remove(reg.net, reg.length)
                withdrawn.append(reg)
            else:
                reg.site = site  # its new keys and flags
        self._bounds = {}
        self._add_bounds(allowed)
        self._add_bounds(self._registered)
        self._membership += 1
        for name in [n for n in self._nonces if n not in by_name]:
            del self._nonces[name]
        self.counters["withdrawn"] += len(withdrawn)
        return withdrawn

    def _add_bounds(self, tables: Mapping[tuple[int, int], _PrefixTable[Any]]) -> None:
        for key, table in tables.items():
            for length, bucket in table.by_len.items():
                for net in bucket:
                    self._bound_set(key).add(net, length)

    # -- dispatch ---------------------------------------------------------------------------

    def handle(self, raw: bytes, source: tuple[str, int], now: float) -> list[MsAction]:
        """Any control message received on UDP 4342; those not for a map-server are counted."""
        if not raw:
            return self._refuse("malformed", source, "empty message", logging.INFO)
        msg_type = raw[0] >> 4
        if msg_type == 3:
            return self.handle_register(raw, source, now)
        if msg_type in (1, 8):
            return self.handle_map_request(raw, source, now)
        return self._refuse(
            "unsupported-type", source, f"message type {msg_type} is not for a map-server",
            logging.INFO,
        )  # fmt: skip

    def _refuse(
        self, reason: str, source: tuple[str, int], why: str, level: int = logging.WARNING
    ) -> list[MsAction]:
        self.counters[reason] += 1
        return [Log(level, _clean(f"dropped message from {_show(source)}: {why}"), reason)]

    # -- Map-Register -----------------------------------------------------------------------

    def handle_register(self, raw: bytes, source: tuple[str, int], now: float) -> list[MsAction]:
        self.counters["map-register"] += 1
        try:
            return self._register(raw, source, now)
        except _Refused as refused:
            self.counters[refused.reason] += 1
            line = _clean(f"refused Map-Register from {_show(source)}: {refused.message}")
            return [Log(refused.level, line, refused.reason)]

    def _register(self, raw: bytes, source: tuple[str, int], now: float) -> list[MsAction]:
        # Per record only ints and the record's own bytes: the strings of a refusal are built
        # in its branch, the Map-Notify reuses the received bytes (lisp.map_register).
        try:
            parts = split_register(raw)
        except DecodeError as exc:
            raise _Refused("malformed", f"malformed: {exc}", logging.INFO) from None
        if not parts.records:
            raise _Refused("malformed", "no EID-records", logging.INFO)
        site: Site | None = None
        placed: list[tuple[bytes, int, int, int, int, int]] = []
        allowance_of = self._allowance
        for index, (record_raw, ttl, iid, version, address, mask_len) in enumerate(parts.records):
            if version == 0:
                assert parts.message is not None  # only the full decoder yields non-IP EIDs
                eid = parts.message.records[index].eid
                raise _Refused("prefix-not-allowed", f"EID {eid} is not an IP prefix")
            width = 32 if version == 4 else 128
            if mask_len > width:
                raise _Refused(
                    "malformed", f"EID mask-len {mask_len} for {_ip(version, address)}",
                    logging.INFO,
                )  # fmt: skip
            net = address & _MASKS[width][mask_len]
            allowance = allowance_of(iid, version, net, mask_len)
            if allowance is None:
                raise _Refused(
                    "prefix-not-allowed",
                    f"EID-prefix {_shown(iid, version, net, mask_len)} is in no site's allowance",
                )
            if site is not None and allowance.site is not site:
                raise _Refused(
                    "mixed-sites",
                    f"EID-prefix {_shown(iid, version, net, mask_len)} belongs to site "
                    f"{allowance.site.name}, the others to site {site.name}",
                )
            site = allowance.site
            placed.append((record_raw, ttl, iid, version, net, mask_len))
        assert site is not None
        key = site.keys.get(parts.key_id)
        if key is None:
            raise _Refused("bad-auth", f"site {site.name}: unknown key-id {parts.key_id}")
        if not auth.verify(raw, key):
            raise _Refused(
                "bad-auth",
                f"site {site.name}: authentication failed (key-id {parts.key_id}, "
                f"algorithm {parts.alg_id}; wrong shared key or algorithm?)",
            )
        ttl_timeout = parts.ttl_timeout
        lifetimes = [self._lifetime(ttl_timeout, ttl) for _r, ttl, *_ in placed]
        self._check_nonce(site, parts.nonce, min(max(lifetimes), self.max_replay_window), now)
        actions: list[MsAction] = []
        store = self._store
        last_lifetime, until = -1.0, now
        fresh: list[Registration] = []  # new registrations expiring at `until`
        for (record_raw, _ttl, iid, version, net, length), lifetime in zip(
            placed, lifetimes, strict=True
        ):
            if lifetime <= 0:
                self._deregister(iid, version, net, length)
                continue
            if lifetime != last_lifetime:  # one float shared by the records of a message
                if fresh:
                    heapq.heappush(self._expiry, (until, tuple(fresh)))
                    fresh = []
                last_lifetime, until = lifetime, now + lifetime
            moved = store(site, parts, record_raw, (iid, version, net, length), until, source,
                          now, fresh)  # fmt: skip
            if moved is not None:
                actions.append(moved)
        if fresh:  # one expiry entry for the records of a message, not one each
            heapq.heappush(self._expiry, (until, tuple(fresh)))
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

    def _allowance(self, iid: int, version: int, net: int, length: int) -> _Allowance | None:
        table = self._allowed.get((iid, version))
        if table is None:
            return None
        # The longest allowed prefix owns its space, even when nested in another site's
        # allowance: a site that takes no more-specifics does not leave a gap for the outer one.
        allowance = table.longest(net, length, _MASKS[_WIDTH[version]])
        if allowance is None:
            return None
        if allowance.length == length or allowance.site.accept_more_specifics:
            return allowance
        return None

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

    def _check_nonce(self, site: Site, nonce: int, window: float, now: float) -> None:
        """Refuse a nonce this site used within its replay window, then remember this one.

        Only authenticated messages get here, so an attacker cannot fill the table; a nonce is
        kept for the lifetime of what it registered (capped at max_replay_window) and swept by
        `expire`. A replay after that window is accepted: LISP has no timestamp to catch it.
        """
        if nonce == 0 and not self.accept_zero_nonce:
            raise _Refused(
                "zero-nonce",
                f"site {site.name}: nonce 0 cannot be checked for replay "
                "(make the xTR send random nonces, or set accept_zero_nonce)",
            )
        seen = self._nonces.setdefault(site.name, {})
        if nonce:
            until = seen.get(nonce)
            if until is not None and until > now:
                raise _Refused("replayed-nonce", f"site {site.name}: replayed nonce {nonce:#018x}")
            seen[nonce] = now + window

    def _store(
        self,
        site: Site,
        parts: RegisterParts,
        record_raw: bytes,
        key: tuple[int, int, int, int],
        until: float,
        source: tuple[str, int],
        now: float,
        fresh: list[Registration],
    ) -> Log | None:
        """Create or refresh one registration; a new one is appended to `fresh` (the caller
        queues it for expiry). An RLOC-set change is returned as a log line."""
        iid, version, net, length = key
        table = self._registered.get((iid, version))
        if table is None:
            table = self._registered[(iid, version)] = _PrefixTable()
        reg = table.get(net, length)
        moved: Log | None = None
        if reg is None:
            reg = Registration(site, iid, version, net, length, now)
            table.put(net, length, reg)
            self._bound_set((iid, version)).add(net, length)
            fresh.append(reg)
            self.counters["new-registration"] += 1
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
                moved = Log(logging.INFO, _clean(line), "rloc-set-changed")
        reg.raw = record_raw
        reg.xtr_id = parts.xtr_id
        reg.site_id = parts.site_id
        reg.source = source
        reg.proxy_reply = parts.proxy_reply
        reg.last_registered = now
        reg.expires = until
        return moved

    def _deregister(self, iid: int, version: int, net: int, length: int) -> None:
        table = self._registered.get((iid, version))
        if table is not None and table.get(net, length) is not None:
            table.remove(net, length)
            self._unbound(iid, version, net, length)
            self.counters["deregistered"] += 1
            self._membership += 1

    def _unbound(self, iid: int, version: int, net: int, length: int) -> None:
        """A registered prefix is gone: drop it from the hole bounds unless also configured."""
        allowed = self._allowed.get((iid, version))
        if allowed is None or allowed.get(net, length) is None:
            self._bound_set((iid, version)).discard(net, length)

    def _bound_set(self, key: tuple[int, int]) -> _PrefixSet:
        bounds = self._bounds.get(key)
        if bounds is None:
            bounds = self._bounds[key] = _PrefixSet(_WIDTH[key[1]])
        return bounds

    # -- expiry and status ------------------------------------------------------------------

    def expire(self, now: float) -> list[Registration]:
        """Remove and return the registrations whose lifetime is over; forget old nonces."""
        expired: list[Registration] = []
        heap = self._expiry
        later: dict[float, list[Registration]] = {}  # refreshed: queued again, by expiry
        while heap and heap[0][0] <= now:
            for reg in heapq.heappop(heap)[1]:
                table = self._registered.get((reg.iid, reg.version))
                if table is None or table.get(reg.net, reg.length) is not reg:
                    continue  # deregistered (or replaced) meanwhile
                if reg.expires > now:  # refreshed since this entry was pushed
                    later.setdefault(reg.expires, []).append(reg)
                    continue
                table.remove(reg.net, reg.length)
                self._unbound(reg.iid, reg.version, reg.net, reg.length)
                expired.append(reg)
        for when, regs in later.items():  # a message's records share their expiry float
            heapq.heappush(heap, (when, tuple(regs)))
        self.counters["expired"] += len(expired)
        if expired:
            self._membership += 1
        if now >= self._next_nonce_sweep:
            self._next_nonce_sweep = now + NONCE_SWEEP_INTERVAL
            for seen in self._nonces.values():
                for nonce in [n for n, until in seen.items() if until <= now]:
                    del seen[nonce]
        return expired

    def registrations(self) -> list[Registration]:
        """Every registration (expired ones not yet swept included), in a stable order."""
        regs = list(self._all_registrations())
        regs.sort(key=_order)
        return regs

    def _all_registrations(self) -> Iterator[Registration]:
        for table in self._registered.values():
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
        return sum(len(table) for table in self._registered.values())

    def lookup(self, eid: IpAddress, iid: int = 0, now: float | None = None) -> Registration | None:
        """The registration whose prefix is the longest match for `eid` (live at `now`)."""
        table = self._registered.get((iid, eid.version))
        if table is None:
            return None
        width = _WIDTH[eid.version]
        reg = table.longest(int(eid), width, _MASKS[width])
        if reg is not None and now is not None and reg.expires <= now:
            return None
        return reg

    # -- Map-Request ------------------------------------------------------------------------

    def handle_map_request(self, raw: bytes, source: tuple[str, int], now: float) -> list[MsAction]:
        """A Map-Request in an ECM (from an ITR, via us as map-resolver) or direct (type 1)."""
        self.counters["map-request"] += 1
        try:
            return self._map_request(raw, source, now)
        except _Refused as refused:
            self.counters[refused.reason] += 1
            line = _clean(f"dropped Map-Request from {_show(source)}: {refused.message}")
            return [Log(refused.level, line, refused.reason)]

    def _map_request(self, raw: bytes, source: tuple[str, int], now: float) -> list[MsAction]:
        ecm: EncapsulatedControl | None = None
        try:
            if raw and raw[0] >> 4 == 8:
                ecm = EncapsulatedControl.decode(raw)
                if ecm.to_etr:  # what we (or an RTR) send to an ETR: never back in a loop
                    raise _Refused("ecm-for-etr", "ECM marked for an ETR", logging.INFO)
                if ecm.ttl <= 1:
                    raise _Refused("ttl-exceeded", "ECM inner TTL exhausted", logging.INFO)
                inner_type = ecm.message[0] >> 4 if ecm.message else -1
                if inner_type != 1:
                    raise _Refused(
                        "unsupported-type", f"ECM carries type {inner_type}, not a Map-Request",
                        logging.INFO,
                    )  # fmt: skip
                request = MapRequest.decode(ecm.message)
                reply_port = ecm.source_port
            else:
                request = MapRequest.decode(raw)
                reply_port = source[1]
        except DecodeError as exc:
            raise _Refused("malformed", f"malformed: {exc}", logging.INFO) from None
        if request.probe:
            raise _Refused("probe-not-for-ms", "RLOC-probe sent to the map-server", logging.INFO)
        if not request.records:
            raise _Refused("malformed", "no EID-records", logging.INFO)
        if not 0 < reply_port < 65536:
            raise _Refused("malformed", f"reply port {reply_port}", logging.INFO)
        # Record Count is "normally 1" (RFC 9301); like other implementations answer the first.
        asked = request.records[0]
        split = _split_eid(asked.eid)
        if split is None:
            raise _Refused("unsupported-eid", f"EID {asked.eid} is not an IP address", logging.INFO)
        iid, eid = split
        as_lcaf = isinstance(asked.eid, InstanceId)
        width = _WIDTH[eid.version]
        masks = _MASKS[width]
        itr = self._reply_address(request, source, ecm)
        if itr is None:
            raise _Refused("no-itr-rloc", "no ITR-RLOC with an IP address to answer", logging.INFO)
        reply_to = (str(itr), reply_port)

        table = self._registered.get((iid, eid.version))
        reg = None
        if table is not None:
            # By address, whatever the requested mask-len: a negative answer must never cover a
            # registered more-specific of a short requested prefix.
            reg = table.longest(int(eid), width, masks)
            if reg is not None and reg.expires <= now:
                reg = None  # expired, not swept yet
        if reg is None:
            return [self._negative(request.nonce, iid, eid, as_lcaf, reply_to)]
        if self.policy_check is not None:
            verdict = self.policy_check(self._requester(request, source, now), iid, eid)
            if verdict is not True:
                if verdict is None:
                    action, ttl = self.unregistered_action, self.unregistered_ttl
                    self.counters["requester-unknown"] += 1
                else:
                    action, ttl = Action.DROP_POLICY_DENIED, self.policy_denied_ttl
                    self.counters["policy-denied"] += 1
                record = EidRecord(_make_eid(iid, reg.version, reg.net, as_lcaf), reg.length, (),
                                   ttl, action)  # fmt: skip
                self.counters["negative-reply"] += 1
                return [SendTo(MapReply(request.nonce, (record,)).encode(), reply_to)]
        etr = None if (reg.proxy_reply or reg.site.proxy_reply) else self._pick_etr(reg, source)
        if etr is None:
            self.counters["proxy-reply"] += 1
            record = reg.record
            eid_out = _make_eid(iid, reg.version, reg.net, as_lcaf)
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
            parsed = _parse_host(source[0])
            if parsed is None:
                raise _Refused("malformed", f"source {source[0]!r} is not an IP", logging.INFO)
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
        key = (iid, eid.version)
        width = _WIDTH[eid.version]
        bounds = self._bounds.get(key)
        length = bounds.hole(int(eid)) if bounds is not None else 0
        allowed = self._allowed.get(key)
        inside = allowed is not None and allowed.longest(int(eid), width, _MASKS[width]) is not None
        if inside:
            action, ttl = self.unregistered_action, self.unregistered_ttl
        else:
            action, ttl = self.outside_action, self.outside_ttl
        net = int(eid) & _MASKS[width][length]
        record = EidRecord(_make_eid(iid, eid.version, net, as_lcaf), length, (), ttl, action)
        self.counters["negative-reply"] += 1
        return SendTo(MapReply(nonce, (record,)).encode(), reply_to)

    def _requester(self, request: MapRequest, source: tuple[str, int], now: float) -> str | None:
        """The site whose live registration holds the request's source EID and one of its
        ITR-RLOCs (or the address it came from); None if no site does."""
        split = _split_eid(request.source_eid)
        if split is None:
            return None
        reg = self.lookup(split[1], split[0], now)
        if reg is None:
            return None
        registered = {ip_of(r.address) for r in reg.record.rlocs} - {None}
        heard = {ip_of(a) for a in request.itr_rlocs} | {_parse_host(source[0])}
        return reg.site.name if registered & heard else None

    @staticmethod
    def _reply_address(
        request: MapRequest, source: tuple[str, int], ecm: EncapsulatedControl | None
    ) -> IpAddress | None:
        """The first ITR-RLOC of the family we heard from (outer, then inner source), else any."""
        ips = [ip for ip in (ip_of(a) for a in request.itr_rlocs) if ip is not None]
        outer = _parse_host(source[0])
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
        outer = _parse_host(source[0])
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
