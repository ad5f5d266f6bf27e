"""lisp.map_cache: longest-prefix match, expiry on an injected clock, negative entries, iids.

The randomized tests compare against a brute-force LPM (scan every entry) and check the search
structure's internal invariants (markers, their bmps, reference counts) after every step.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import lisp.map_cache as mc
from lisp.address import MacAddress
from lisp.lcaf import InstanceId
from lisp.map_cache import MapCache, MapCacheEntry
from lisp.records import TTL_UNLIMITED, Action, EidRecord, RlocRecord

Net = IPv4Network | IPv6Network
RLOC = (RlocRecord(IPv4Address("192.0.2.1")),)


def net(text: str) -> Net:
    return ip_network(text)


def positive(iid: int, prefix: str, expires_at: float = math.inf) -> MapCacheEntry:
    return MapCacheEntry(iid, net(prefix), RLOC, Action.NO_ACTION, expires_at)


def negative(
    iid: int, prefix: str, action: int = Action.NATIVELY_FORWARD, expires_at: float = math.inf
) -> MapCacheEntry:
    return MapCacheEntry(iid, net(prefix), (), action, expires_at)


def found(cache: MapCache, iid: int, address: str, now: float = 0.0) -> str | None:
    entry = cache.lookup(iid, ip_address(address), now)
    return None if entry is None else str(entry.prefix)


def brute_lpm(
    entries: Iterator[MapCacheEntry] | list[MapCacheEntry],
    iid: int,
    version: int,
    address: int,
    now: float,
) -> MapCacheEntry | None:
    best = None
    for e in entries:
        p = e.prefix
        if e.iid != iid or p.version != version or e.expires_at <= now:
            continue
        if address & int(p.netmask) == int(p.network_address) and (
            best is None or p.prefixlen > best.prefix.prefixlen
        ):
            best = e
    return best


def check_invariants(cache: MapCache) -> None:
    """White-box: every table's markers, bmps and reference counts are what a rebuild makes."""
    count = 0
    for tables in (cache._v4, cache._v6):
        for table in tables.values():
            assert table.count > 0  # empty tables are dropped
            assert set(table.real) == set(table.probe) == set(table.refs) == set(table.lengths)
            refs: dict[int, dict[int, int]] = {m: {} for m in table.lengths}
            for length, prefixes in table.real.items():
                count += len(prefixes)
                for key, slot in prefixes.items():
                    assert slot.entry is not None and slot.length == length
                    assert int(slot.entry.prefix.network_address) == key
                    for m in table.paths[length]:
                        km = key & table.masks[m]
                        refs[m][km] = refs[m].get(km, 0) + 1
            assert refs == table.refs
            for m in table.lengths:
                assert table.mkeys[m] == sorted(refs[m])
                assert set(table.probe[m]) == set(refs[m]) | set(table.real[m])
                for key, slot in table.probe[m].items():
                    want = table.lpm_between(key, -1, m) or mc._NO_MATCH
                    assert slot is want, (m, hex(key))
    assert count == len(cache) == len(list(cache))


# --- plain behaviour ---------------------------------------------------------------------------


def test_longest_prefix_wins_ipv4() -> None:
    cache = MapCache()
    for p in ("10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32"):
        cache.insert(positive(0, p))
    assert found(cache, 0, "10.1.2.3") == "10.1.2.3/32"
    assert found(cache, 0, "10.1.2.4") == "10.1.2.0/24"
    assert found(cache, 0, "10.1.3.4") == "10.1.0.0/16"
    assert found(cache, 0, "10.2.3.4") == "10.0.0.0/8"
    assert found(cache, 0, "11.0.0.1") is None
    check_invariants(cache)


def test_longest_prefix_wins_ipv6() -> None:
    cache = MapCache()
    for p in ("fd00::/8", "fd00:1::/32", "fd00:1:2::/48", "fd00:1:2:3::/64", "fd00:1:2:3::9/128"):
        cache.insert(positive(7, p))
    assert found(cache, 7, "fd00:1:2:3::9") == "fd00:1:2:3::9/128"
    assert found(cache, 7, "fd00:1:2:3::8") == "fd00:1:2:3::/64"
    assert found(cache, 7, "fd00:1:2:4::1") == "fd00:1:2::/48"
    assert found(cache, 7, "fd00:1:3::1") == "fd00:1::/32"
    assert found(cache, 7, "fc00::1") is None
    check_invariants(cache)


def test_default_route_and_host_route() -> None:
    cache = MapCache()
    cache.insert(negative(0, "0.0.0.0/0", Action.SEND_MAP_REQUEST))
    cache.insert(positive(0, "203.0.113.7/32"))
    default = cache.lookup(0, IPv4Address("198.51.100.1"), 0.0)
    assert default is not None and default.negative and default.action == Action.SEND_MAP_REQUEST
    assert found(cache, 0, "203.0.113.7") == "203.0.113.7/32"
    assert cache.lookup(0, IPv6Address("::1"), 0.0) is None  # families never mix


def test_instance_ids_are_isolated() -> None:
    cache = MapCache()
    a, b = positive(1, "10.0.0.0/24"), negative(2, "10.0.0.0/24", Action.DROP_POLICY_DENIED)
    cache.insert(a)
    cache.insert(b)
    assert len(cache) == 2
    assert cache.lookup(1, IPv4Address("10.0.0.5"), 0.0) is a
    assert cache.lookup(2, IPv4Address("10.0.0.5"), 0.0) is b
    assert cache.lookup(3, IPv4Address("10.0.0.5"), 0.0) is None
    assert cache.remove(1, net("10.0.0.0/24")) is a
    assert cache.lookup(1, IPv4Address("10.0.0.5"), 0.0) is None
    assert cache.lookup(2, IPv4Address("10.0.0.5"), 0.0) is b
    check_invariants(cache)


def test_negative_entry_covers_what_positive_ones_do_not() -> None:
    # A negative Map-Reply for 10.0.0.0/8 (no locators) under a registered /24.
    cache = MapCache()
    record = EidRecord(
        InstanceId(5, IPv4Address("10.0.0.0")), 8, (), 15, Action.NATIVELY_FORWARD, map_version=3
    )
    neg = MapCacheEntry.from_record(record, now=100.0)
    cache.insert(neg)
    cache.insert(positive(5, "10.9.9.0/24"))
    assert neg.negative and neg.iid == 5 and neg.map_version == 3
    assert neg.prefix == net("10.0.0.0/8")
    assert cache.lookup(5, IPv4Address("10.1.1.1"), 101.0) is neg
    hit = cache.lookup(5, IPv4Address("10.9.9.9"), 101.0)
    assert hit is not None and not hit.negative


def test_insert_replaces_remove_and_exact() -> None:
    cache = MapCache()
    first, second = positive(0, "10.0.0.0/16"), negative(0, "10.0.0.0/16")
    assert cache.insert(first) is None
    assert cache.insert(second) is first
    assert len(cache) == 1
    assert cache.exact(0, net("10.0.0.0/16")) is second
    assert cache.exact(0, net("10.0.0.0/17")) is None
    assert cache.exact(1, net("10.0.0.0/16")) is None
    assert cache.remove(0, net("10.0.0.0/17")) is None
    assert cache.remove(9, net("10.0.0.0/16")) is None
    assert cache.remove(0, net("10.0.0.0/16")) is second
    assert cache.remove(0, net("10.0.0.0/16")) is None
    assert len(cache) == 0 and list(cache) == []
    assert not cache._v4  # the emptied table is gone


def test_covering_lists_live_entries_longest_first() -> None:
    cache = MapCache()
    cache.insert(positive(0, "10.0.0.0/8"))
    cache.insert(positive(0, "10.1.0.0/16", expires_at=5.0))
    cache.insert(positive(0, "10.1.2.0/24"))
    cache.insert(positive(0, "10.2.0.0/16"))
    got = [str(e.prefix) for e in cache.covering(0, IPv4Address("10.1.2.3"), 1.0)]
    assert got == ["10.1.2.0/24", "10.1.0.0/16", "10.0.0.0/8"]
    got = [str(e.prefix) for e in cache.covering(0, IPv4Address("10.1.2.3"), 5.0)]
    assert got == ["10.1.2.0/24", "10.0.0.0/8"]
    assert cache.covering(1, IPv4Address("10.1.2.3"), 1.0) == []


# --- time --------------------------------------------------------------------------------------


def test_from_record_ttl_is_minutes_and_unlimited_never_expires() -> None:
    eid = IPv4Address("10.0.0.0")
    e = MapCacheEntry.from_record(EidRecord(eid, 24, RLOC, ttl=10), now=1000.0)
    assert e.expires_at == 1600.0 and e.installed_at == 1000.0 and e.iid == 0
    assert e.rlocs == RLOC and not e.negative
    assert e.remaining(1300.0) == 300.0 and e.remaining(2000.0) == 0.0
    forever = MapCacheEntry.from_record(EidRecord(eid, 24, ttl=TTL_UNLIMITED), now=5.0)
    assert forever.expires_at == math.inf and not forever.expired(1e12)
    at_once = MapCacheEntry.from_record(EidRecord(eid, 24, ttl=0), now=5.0)
    assert at_once.expired(5.0)
    with pytest.raises(ValueError):
        MapCacheEntry.from_record(EidRecord(MacAddress(b"\x00" * 6), 48), now=0.0)


def test_expired_entry_is_absent_purged_and_uncovers_the_shorter_one() -> None:
    cache = MapCache()
    cache.insert(positive(0, "10.0.0.0/8", expires_at=100.0))
    cache.insert(positive(0, "10.1.0.0/16", expires_at=50.0))
    assert found(cache, 0, "10.1.0.1", now=49.9) == "10.1.0.0/16"
    assert found(cache, 0, "10.1.0.1", now=50.0) == "10.0.0.0/8"  # expires_at is exclusive
    assert cache.exact(0, net("10.1.0.0/16")) is None  # purged by the lookup
    assert len(cache) == 1
    assert found(cache, 0, "10.1.0.1", now=100.0) is None
    assert len(cache) == 0
    assert cache.expire(1000.0) == []  # stale heap items are skipped


def test_expire_returns_expired_in_order_and_respects_refresh() -> None:
    cache = MapCache()
    a = positive(0, "10.0.0.0/24", expires_at=30.0)
    b = positive(0, "10.0.1.0/24", expires_at=10.0)
    c = positive(0, "fd00::/64", expires_at=20.0)
    d = positive(0, "10.0.2.0/24")  # unlimited
    for e in (a, b, c, d):
        cache.insert(e)
    assert cache.next_expiry() == 10.0
    refreshed = positive(0, "10.0.1.0/24", expires_at=40.0)  # a new Map-Reply for b
    cache.insert(refreshed)
    assert cache.next_expiry() == 20.0
    assert cache.expire(5.0) == []
    assert cache.expire(30.0) == [c, a]
    assert cache.exact(0, net("10.0.1.0/24")) is refreshed
    assert cache.expire(40.0) == [refreshed]
    assert list(cache) == [d] and cache.next_expiry() == math.inf
    check_invariants(cache)


def test_due_for_refresh_lists_live_entries_expiring_within_margin() -> None:
    cache = MapCache()
    entries = [positive(0, f"10.0.{i}.0/24", expires_at=float(i)) for i in range(1, 50)]
    for e in random.Random(1).sample(entries, len(entries)):
        cache.insert(e)
    cache.insert(positive(0, "10.1.0.0/16"))  # unlimited: never due
    cache.insert(positive(0, "10.0.7.0/24", expires_at=100.0))  # refreshed: no longer due
    due = cache.due_for_refresh(now=5.0, margin=10.0)
    assert [e.expires_at for e in due] == [6.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0]
    assert cache.due_for_refresh(now=0.0, margin=0.5) == []
    assert MapCache().due_for_refresh(0.0, 10.0) == []


def test_heap_stays_proportional_under_refreshes() -> None:
    cache = MapCache()
    for t in range(5000):
        cache.insert(positive(0, f"10.0.{t % 10}.0/24", expires_at=1000.0 + t))
    assert len(cache) == 10
    assert len(cache._heap) <= 2 * len(cache) + 1025
    assert [e.expires_at for e in cache.expire(1e9)] == [1000.0 + t for t in range(4990, 5000)]


def test_reinserting_the_same_entry_object_keeps_one_live_timer() -> None:
    cache = MapCache()
    same = positive(0, "10.0.0.0/24", expires_at=50.0)
    for _ in range(3000):
        cache.insert(same)
    assert len(cache._heap) <= 2 * len(cache) + 1025
    assert cache.due_for_refresh(0.0, 100.0) == [same]
    cache.insert(positive(0, "10.0.0.0/24"))  # now unlimited: the old timer must not fire
    assert cache.next_expiry() == math.inf
    assert cache.expire(100.0) == []
    assert len(cache) == 1


# --- randomized equivalence with a brute-force LPM ---------------------------------------------

# Addresses cluster around a few bases so random prefixes nest, overlap and share markers.
V4_BASES = (0x0A000000, 0x0A010200, 0xC0A80000, 0xFFFFFFFF)
V6_BASES = (0xFD00 << 112, (0xFD00 << 112) | (1 << 64), 0x2001_0DB8 << 96, (1 << 128) - 1)


@st.composite
def addresses(draw: st.DrawFn, version: int) -> int:
    bases, width = (V4_BASES, 32) if version == 4 else (V6_BASES, 128)
    base = draw(st.sampled_from(bases))
    shift = draw(st.integers(0, width - 1))
    return (base ^ (draw(st.integers(0, 15)) << shift)) & ((1 << width) - 1)


@st.composite
def prefixes(draw: st.DrawFn, version: int) -> Net:
    width = 32 if version == 4 else 128
    return ip_network((draw(addresses(version)), draw(st.integers(0, width))), strict=False)


@st.composite
def entries(draw: st.DrawFn) -> MapCacheEntry:
    version = draw(st.sampled_from((4, 6)))
    expires = draw(st.sampled_from((math.inf, 10.0, 20.0, 30.0, 40.0)))
    rlocs = draw(st.sampled_from(((), RLOC)))
    return MapCacheEntry(draw(st.integers(0, 1)), draw(prefixes(version)), rlocs, 0, expires)


@pytest.fixture(params=[False, True], ids=["reweigh", "incremental-only"])
def incremental(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Also run with tables never rebuilt for growth, so only new lengths rebuild."""
    if request.param:
        monkeypatch.setattr(mc, "_REWEIGH_UP_TO", 0)
    return bool(request.param)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(entries(), max_size=60),
    st.lists(st.tuples(st.integers(0, 1), st.sampled_from((4, 6))), min_size=1, max_size=10),
    st.data(),
)
def test_lookup_matches_brute_force(
    incremental: bool,
    installed: list[MapCacheEntry],
    probes: list[tuple[int, int]],
    data: st.DataObject,
) -> None:
    cache, ref = MapCache(), {}
    for e in installed:
        cache.insert(e)
        ref[(e.iid, e.prefix)] = e
    check_invariants(cache)
    live = list(ref.values())
    for iid, version in probes:
        address = data.draw(addresses(version))
        want = brute_lpm(live, iid, version, address, 0.0)
        assert cache.lookup_int(iid, version, address, 0.0) is want
    # Take half away again and ask once more.
    for key in list(ref)[::2]:
        assert cache.remove(*key) is ref.pop(key)
    check_invariants(cache)
    for iid, version in probes:
        address = data.draw(addresses(version))
        want = brute_lpm(list(ref.values()), iid, version, address, 0.0)
        assert cache.lookup_int(iid, version, address, 0.0) is want


class MapCacheMachine(RuleBasedStateMachine):
    """Insert, replace, remove, look up, let time pass and expire, in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.cache = MapCache()
        self.ref: dict[tuple[int, Net], MapCacheEntry] = {}
        self.now = 0.0

    @initialize(seed_all_lengths=st.booleans())
    def seed(self, seed_all_lengths: bool) -> None:
        # One prefix of every length first, so later inserts go down the incremental path
        # (a length never seen before rebuilds the table instead).
        if seed_all_lengths:
            for version, width in ((4, 32), (6, 128)):
                for length in range(1, width + 1):
                    address = V4_BASES[2] if version == 4 else V6_BASES[2]
                    bit = 1 << (width - length)
                    e = MapCacheEntry(0, ip_network((address ^ bit, length), strict=False))
                    self.put(e)

    def put(self, entry: MapCacheEntry) -> None:
        old = self.cache.insert(entry)
        assert old is self.ref.get((entry.iid, entry.prefix))
        self.ref[(entry.iid, entry.prefix)] = entry

    @rule(entry=entries())
    def insert(self, entry: MapCacheEntry) -> None:
        self.put(entry)

    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        if self.ref:
            key = data.draw(st.sampled_from(sorted(self.ref, key=str)))
            assert self.cache.remove(*key) is self.ref.pop(key)

    @rule(iid=st.integers(0, 1), version=st.sampled_from((4, 6)), data=st.data())
    def lookup(self, iid: int, version: int, data: st.DataObject) -> None:
        address = data.draw(addresses(version))
        want = brute_lpm(list(self.ref.values()), iid, version, address, self.now)
        assert self.cache.lookup_int(iid, version, address, self.now) is want

    @rule(dt=st.sampled_from((1.0, 5.0, 10.0)))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def expire(self) -> None:
        gone = self.cache.expire(self.now)
        assert all(e.expired(self.now) for e in gone)
        assert [e.expires_at for e in gone] == sorted(e.expires_at for e in gone)
        assert all(not e.expired(self.now) for e in self.cache)

    @invariant()
    def same_live_entries(self) -> None:
        # Lookups purge expired entries on their own, so compare what is alive.
        for e in self.cache:
            assert self.ref[(e.iid, e.prefix)] is e
        live = {k for k, e in self.ref.items() if not e.expired(self.now)}
        assert {k for k, e in self.cache_items() if not e.expired(self.now)} == live
        due = self.cache.due_for_refresh(self.now, 10.0)
        want = sorted(
            (e for e in self.ref.values() if self.now < e.expires_at <= self.now + 10.0),
            key=lambda e: e.expires_at,
        )
        assert [e.expires_at for e in due] == [e.expires_at for e in want]
        assert {id(e) for e in due} == {id(e) for e in want}
        # Forget what the cache purged so the reference tracks it.
        for k in [k for k, e in self.ref.items() if e.expired(self.now)]:
            if self.cache.exact(*k) is None:
                del self.ref[k]
        check_invariants(self.cache)

    def cache_items(self) -> Iterator[tuple[tuple[int, Net], MapCacheEntry]]:
        for e in self.cache:
            yield (e.iid, e.prefix), e


TestMapCacheMachine = MapCacheMachine.TestCase
TestMapCacheMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


def per_length_lpm(
    ref: dict[Net, MapCacheEntry], width: int
) -> dict[int, dict[int, MapCacheEntry]]:
    """A second, simple reference for big tables: one dict per length, probed longest first."""
    by_len: dict[int, dict[int, MapCacheEntry]] = {n: {} for n in range(width, -1, -1)}
    for p, e in ref.items():
        by_len[p.prefixlen][int(p.network_address)] = e
    return by_len


def naive(by_len: dict[int, dict[int, MapCacheEntry]], width: int, a: int) -> MapCacheEntry | None:
    for n, d in by_len.items():
        e = d.get(a & (((1 << n) - 1) << (width - n)))
        if e is not None:
            return e
    return None


@pytest.mark.fuzz
@pytest.mark.parametrize("version", [4, 6])
def test_thousands_of_prefixes_of_every_length(version: int, incremental: bool) -> None:
    """Large enough for tables past the reweighing size and deep trees; removes half, refills."""
    rng = random.Random(version)
    width = 32 if version == 4 else 128
    bases = [rng.getrandbits(width) for _ in range(8)]

    def near() -> int:
        return rng.choice(bases) ^ rng.getrandbits(rng.randint(1, width))

    def fill(count: int) -> None:
        for _ in range(count):
            e = MapCacheEntry(0, ip_network((near(), rng.randint(0, width)), strict=False), RLOC)
            assert cache.insert(e) is ref.get(e.prefix)
            ref[e.prefix] = e

    def compare() -> None:
        by_len = per_length_lpm(ref, width)
        for a in queries:
            assert cache.lookup_int(0, version, a, 0.0) is naive(by_len, width, a)

    cache, ref = MapCache(), {}
    fill(12_000 if version == 4 else 5_000)
    queries = [near() for _ in range(3000)]
    compare()
    for p in rng.sample(sorted(ref, key=str), len(ref) // 2):
        assert cache.remove(0, p) is ref.pop(p)
    compare()
    fill(1000)
    check_invariants(cache)
    compare()
