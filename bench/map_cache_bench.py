"""Map-cache benchmark: lookups/s with 100,000 prefixes, side by side with references.

Run from the repository root: `python3 bench/map_cache_bench.py` (about 30-40 s). Machines are
noisy, so every figure is printed next to reference implementations measured in the same run:

* naive-33/129: one dict per possible prefix length, probed longest first (what a first version
  would do);
* present-lengths: the same, probing only the lengths that hold prefixes (good when few lengths);
* call floor: a function with the same signature that does nothing; no lookup can beat it.

Each rate is the best of four interleaved timed passes over a fixed list of (iid, version,
address-int) queries, loop overhead included. Distributions: "realistic" (mostly /32 and /128
hosts, /24 /16 /64 /48 site prefixes, a few /8, IPv4 and IPv6, two instance-ids; 90% of queries
hit a prefix) and "adversarial" (prefix lengths uniform over /8../32, or /16../128 for IPv6).
"""

from __future__ import annotations

import gc
import math
import random
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lisp.map_cache import MapCache, MapCacheEntry
from lisp.records import Action, RlocRecord

Query = tuple[int, int, int]
Lookup = Callable[[int, int, int, float], object]
IIDS = (0, 1000)
RLOC = (RlocRecord(ip_network("192.0.2.1/32").network_address),)


class NaiveLpm:
    """Reference: one dict per prefix length, probing all 33 (or 129) lengths longest first."""

    def __init__(self, entries: Iterable[MapCacheEntry], only_present: bool = False) -> None:
        self.tables: dict[tuple[int, int], list[tuple[int, dict[int, MapCacheEntry]]]] = {}
        by_len: dict[tuple[int, int], dict[int, dict[int, MapCacheEntry]]] = {}
        for e in entries:
            width = e.prefix.max_prefixlen
            lengths = by_len.setdefault((e.iid, e.prefix.version), {})
            if not lengths:
                lengths.update({n: {} for n in range(width + 1)})
            lengths[e.prefix.prefixlen][int(e.prefix.network_address)] = e
        for k, lengths in by_len.items():
            width = max(lengths)
            self.tables[k] = [
                (((1 << n) - 1) << (width - n), d)
                for n, d in sorted(lengths.items(), reverse=True)
                if d or not only_present
            ]

    def lookup_int(self, iid: int, version: int, address: int, now: float) -> object:
        for mask, d in self.tables.get((iid, version), ()):
            e = d.get(address & mask)
            if e is not None and e.expires_at > now:
                return e
        return None


def call_floor(iid: int, version: int, address: int, now: float) -> object:
    return None


def entry(iid: int, net: IPv4Network | IPv6Network, rng: random.Random) -> MapCacheEntry:
    if rng.random() < 0.1:  # negative Map-Replies are common
        return MapCacheEntry(iid, net, (), Action.NATIVELY_FORWARD, math.inf)
    return MapCacheEntry(iid, net, RLOC, Action.NO_ACTION, 1e9)


def realistic(n: int, rng: random.Random) -> list[MapCacheEntry]:
    """Mostly hosts; sites as /24 and /16 (v4) or /64 and /48 (v6); a few /8; 70% IPv4."""
    v4_mix = ((32, 0.75), (24, 0.15), (16, 0.09), (8, 0.01))
    v6_mix = ((128, 0.7), (64, 0.2), (48, 0.1))
    seen: set[tuple[int, IPv4Network | IPv6Network]] = set()
    out = []
    while len(out) < n:
        iid = rng.choice(IIDS)
        if rng.random() < 0.7:
            length = rng.choices([m for m, _ in v4_mix], [w for _, w in v4_mix])[0]
            # EIDs cluster in a few /8s, as allocations from a controller's pools do.
            addr = (rng.choice((10, 100, 172, 192)) << 24) | rng.getrandbits(24)
            net: IPv4Network | IPv6Network = ip_network((addr, length), strict=False)
        else:
            length = rng.choices([m for m, _ in v6_mix], [w for _, w in v6_mix])[0]
            addr = (0xFD00 << 112) | (rng.getrandbits(8) << 96) | rng.getrandbits(64)
            net = ip_network((addr, length), strict=False)
        if (iid, net) not in seen:
            seen.add((iid, net))
            out.append(entry(iid, net, rng))
    return out


def adversarial(n: int, rng: random.Random, version: int) -> list[MapCacheEntry]:
    """Prefix lengths uniform over /8../32 (IPv4) or /16../128 (IPv6), random bits, one iid."""
    width, shortest = (32, 8) if version == 4 else (128, 16)
    seen: set[IPv4Network | IPv6Network] = set()
    out = []
    while len(out) < n:
        net = ip_network((rng.getrandbits(width), rng.randint(shortest, width)), strict=False)
        if net not in seen:
            seen.add(net)
            out.append(entry(0, net, rng))
    return out


def queries(entries: list[MapCacheEntry], count: int, rng: random.Random) -> list[Query]:
    """90% addresses inside an installed prefix (random host bits), 10% anywhere."""
    out = []
    for _ in range(count):
        e = rng.choice(entries)
        width, version = e.prefix.max_prefixlen, e.prefix.version
        if rng.random() < 0.9:
            host = rng.getrandbits(width - e.prefix.prefixlen) if e.prefix.prefixlen < width else 0
            out.append((e.iid, version, int(e.prefix.network_address) | host))
        else:
            out.append((e.iid, version, rng.getrandbits(width)))
    return out


def rates(lookups: list[Lookup], qs: list[Query], passes: int = 4) -> list[float]:
    """Best lookups/s of each function over `passes` rounds. Each round times every function in
    turn (repeating the query list for >= 0.12 s), so a noisy spell hits them all alike."""
    best = [0.0] * len(lookups)
    for _ in range(passes):
        for i, lookup in enumerate(lookups):
            done, start = 0, time.perf_counter()
            while True:
                for iid, version, address in qs:
                    lookup(iid, version, address, 0.0)
                done += len(qs)
                elapsed = time.perf_counter() - start
                if elapsed >= 0.12:
                    break
            best[i] = max(best[i], done / elapsed)
    return best


def check_same(cache: MapCache, ref: NaiveLpm, qs: list[Query]) -> None:
    for q in qs[:2000]:
        got, want = cache.lookup_int(*q, 0.0), ref.lookup_int(*q, 0.0)
        assert got is want, (q, got, want)


def row(name: str, entries: list[MapCacheEntry], rng: random.Random) -> None:
    cache = MapCache()
    for e in entries:
        cache.insert(e)
    naive, present = NaiveLpm(entries), NaiveLpm(entries, only_present=True)
    qs = queries(entries, 20_000, rng)
    check_same(cache, naive, qs)
    *figures, floor = rates(
        [cache.lookup_int, naive.lookup_int, present.lookup_int, call_floor], qs
    )
    lengths = sorted({(e.prefix.version, e.prefix.prefixlen) for e in entries})
    cells = "".join(f"{f / 1000:>12,.0f}k" for f in figures)
    print(f"{name:<26}{len(entries):>9,}{len(lengths):>8}{cells}{floor / 1000:>12,.0f}k")


def insert_and_memory(entries: list[MapCacheEntry], label: str) -> None:
    gc.collect()
    best = 0.0
    for _ in range(2):
        cache = MapCache()
        start = time.perf_counter()
        for e in entries:
            cache.insert(e)
        best = max(best, len(entries) / (time.perf_counter() - start))
    # Refresh: the same prefixes again (a Map-Reply renewing an entry) is the common update.
    start = time.perf_counter()
    for e in entries:
        cache.insert(e)
    refresh = len(entries) / (time.perf_counter() - start)
    del cache
    gc.collect()
    tracemalloc.start()
    cache = MapCache()
    for e in entries:
        cache.insert(e)
    structure, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"{label:<26} insert {best / 1000:>6,.0f}k/s   refresh {refresh / 1000:>6,.0f}k/s   "
        f"index {structure / len(entries):>5,.0f} B/entry"
    )


def entry_size(rng: random.Random) -> float:
    """Bytes of one entry object with its prefix (allocated by the caller, not the cache)."""
    gc.collect()
    tracemalloc.start()
    sample = realistic(2000, rng)
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del sample
    return used / 2000


def main() -> None:
    start = time.perf_counter()
    rng = random.Random(20240601)
    sets = {
        "realistic": realistic(100_000, rng),
        "adversarial IPv4 /8../32": adversarial(100_000, rng, 4),
        "adversarial IPv6 /16../128": adversarial(100_000, rng, 6),
    }
    print(f"Python {sys.version.split()[0]}; lookups/s, best of 4 passes, loop overhead included")
    head = "".join(f"{h:>13}" for h in ("map_cache", "naive-33/129", "present-len", "call floor"))
    print(f"{'distribution':<26}{'prefixes':>9}{'lengths':>8}{head}")
    for name, entries in sets.items():
        row(name, entries, rng)
    for name, entries in sets.items():
        row(name, rng.sample(entries, 1000), rng)
    print()
    for name, entries in sets.items():
        insert_and_memory(entries, name)
    print(
        f"{'(entry objects, realistic)':<26} {entry_size(rng):,.0f} B/entry allocated by the caller"
    )
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
