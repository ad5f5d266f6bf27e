"""The map-cache: EID-prefix → locators, consulted by the ITR once per packet (RFC 9301 §6).

Longest-prefix match per (instance-id, address family), TTL expiry against a clock the caller
passes in (`now`, monotonic seconds; nothing here reads a clock), and negative entries (no
locators, an ACT such as NATIVELY_FORWARD or DROP_*) installed by negative Map-Replies.

Lookup is a binary search on prefix lengths (Waldvogel, Varghese, Turner, Plattner: "Scalable
High Speed IP Routing Lookups", SIGCOMM 1997). Each table keeps one hash table per prefix length
present, arranged as a binary search tree over those lengths. A hit at length M means "a longer
match may exist, go longer"; a miss means "go shorter". For that to be right, every prefix leaves a
*marker* (its first M bits) at each length M where the search for it turns longer, and each marker
carries its *best matching prefix* (bmp), the longest real prefix of length <= M covering it, so
the search can end on a marker without backtracking. The tree is weighted towards the lengths
holding most prefixes (see `_Table.rebuild`), so a lookup costs about 1.5 dict probes for a typical
EID mix (mostly host routes), ~5 with every length /8../32 present and ~7 with 113 IPv6 lengths,
instead of one probe per length. Markers and bmps are maintained incrementally on insert and
remove. A table's tree is rebuilt (O(n)) only when a prefix length it never held arrives, and each
time a small table doubles; see bench/map_cache_bench.py for figures.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TypeAlias

from lisp.records import TTL_UNLIMITED, Action, EidRecord, RlocRecord

Prefix: TypeAlias = IPv4Network | IPv6Network

_WIDTH = {4: 32, 6: 128}
# _MASKS[width][length]: the netmask of a prefix of that length, as an int.
_MASKS = {w: tuple(((1 << n) - 1) << (w - n) for n in range(w + 1)) for w in (32, 128)}


@dataclass(frozen=True, slots=True)
class MapCacheEntry:
    """One EID-prefix of one instance-id and what to do with packets to it.

    `expires_at` is on the caller's monotonic clock (math.inf: never). An entry without locators is
    negative: the packet is handled according to `action` instead of being encapsulated.
    """

    iid: int
    prefix: Prefix
    rlocs: tuple[RlocRecord, ...] = ()
    action: int = Action.NO_ACTION
    expires_at: float = math.inf
    installed_at: float = 0.0
    map_version: int = 0

    @property
    def negative(self) -> bool:
        return not self.rlocs

    def expired(self, now: float) -> bool:
        return self.expires_at <= now

    def remaining(self, now: float) -> float:
        """Seconds of life left (0 once expired, math.inf if unlimited)."""
        return max(0.0, self.expires_at - now)

    @classmethod
    def from_record(cls, record: EidRecord, now: float) -> MapCacheEntry:
        """The entry a Map-Reply record installs. Record TTLs are in minutes; 0 means "do not
        keep" (the entry is born expired), TTL_UNLIMITED never expires. ValueError if the EID is
        not an IP prefix (L2 EIDs are not kept here)."""
        ttl = math.inf if record.ttl == TTL_UNLIMITED else record.ttl * 60.0
        return cls(
            iid=record.instance_id,
            prefix=record.prefix,
            rlocs=record.rlocs,
            action=record.action,
            expires_at=now + ttl,
            installed_at=now,
            map_version=record.map_version,
        )


class _Slot:
    """The cell one prefix's entry lives in. Markers point at slots, not entries, so refreshing an
    entry (the most common update: same prefix, new TTL) is one assignment however many markers
    refer to it. `seq` names the expiry-heap item of the current entry (0: none)."""

    __slots__ = ("entry", "length", "seq")

    def __init__(self, entry: MapCacheEntry | None, length: int) -> None:
        self.entry = entry
        self.length = length
        self.seq = 0


# The bmp of a marker no real prefix covers. Its length (-1) is shorter than any real one, so an
# insert always supersedes it; its entry is None, which is what a lookup that ends there returns.
_NO_MATCH = _Slot(None, -1)


# A node of the binary search over prefix lengths: (netmask, probe, longer, shorter, length).
# `probe` maps a masked address to its bmp slot, for real prefixes and markers alike. Tuples, not
# objects: the lookup loop indexes them and that measured faster than attribute access.
_Node: TypeAlias = "tuple[int, dict[int, _Slot], _Node | None, _Node | None, int]"

# While a table is small, rebuild it each time it doubles so the tree's shape follows the mix of
# prefix lengths it actually holds; past this size a rebuild would stall the data path too long.
_REWEIGH_UP_TO = 8192


class _Table:
    """The prefixes of one (instance-id, family). Invariant: `real`, `probe`, `refs` and `mkeys`
    have exactly the keys in `lengths`, the lengths of the search tree (a length stays in the tree
    after its last prefix goes, until the next rebuild: that costs a probe but is correct)."""

    __slots__ = (
        "count", "index", "lengths", "masks", "mkeys", "paths", "probe", "real", "rebuilt_at",
        "refs", "root",
    )  # fmt: skip

    def __init__(self, width: int) -> None:
        self.masks = _MASKS[width]
        self.real: dict[int, dict[int, _Slot]] = {}  # length -> network int -> slot
        self.probe: dict[int, dict[int, _Slot]] = {}  # length -> key -> bmp (what lookup probes)
        self.refs: dict[int, dict[int, int]] = {}  # length -> marker key -> prefixes needing it
        self.mkeys: dict[int, list[int]] = {}  # length -> sorted marker keys (range queries)
        self.paths: dict[int, tuple[int, ...]] = {}  # length -> where its search turns longer
        self.lengths: tuple[int, ...] = ()  # ascending
        self.index: dict[int, int] = {}  # length -> its position in `lengths`
        self.root: _Node | None = None
        self.count = 0
        self.rebuilt_at = 0

    def lpm_between(self, key: int, above: int, upto: int) -> _Slot | None:
        """Longest real prefix with above < length <= upto covering key (probing each length)."""
        masks, real, lengths = self.masks, self.real, self.lengths
        for i in range(self.index[upto], -1, -1):
            length = lengths[i]
            if length <= above:
                break
            slot = real[length].get(key & masks[length])
            if slot is not None:
                return slot
        return None

    def mark(self, length: int, key: int, keep_sorted: bool = True) -> None:
        """Leave the markers prefix key/length needs on its search path, with their bmps."""
        masks, bmp, above = self.masks, _NO_MATCH, -1
        for m in self.paths[length]:
            km = key & masks[m]
            refs = self.refs[m]
            n = refs.get(km, 0)
            refs[km] = n + 1
            if n == 0 and keep_sorted:
                insort(self.mkeys[m], km)
            probe = self.probe[m]
            slot = probe.get(km)
            if slot is None:
                # bmp at m: the longest prefix in (previous turn, m], else the bmp there.
                slot = probe[km] = self.lpm_between(km, above, m) or bmp
            bmp, above = slot, m

    def markers_inside(self, length: int, key: int) -> Iterator[tuple[dict[int, _Slot], int]]:
        """(probe dict, key) of every marker at a length > `length` inside prefix key/length.

        Walks the tree, skipping the longer subtree of a node that holds no marker for this
        prefix: a prefix inside it turning longer there would have left one. So an insert or
        remove visits a few nodes, not every longer length.
        """
        end = key + (1 << (len(self.masks) - 1 - length))
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node is None:
                continue
            m = node[4]
            if m < length:
                if key & node[0] in self.refs[m]:
                    stack.append(node[2])
            elif m == length:
                if key in self.refs[m]:
                    stack.append(node[2])
            else:
                keys = self.mkeys[m]
                lo = bisect_left(keys, key)
                hi = bisect_left(keys, end, lo)
                if lo < hi:
                    probe = node[1]
                    for k in keys[lo:hi]:
                        yield probe, k
                    stack.append(node[2])
                stack.append(node[3])

    def add(self, length: int, key: int, slot: _Slot) -> None:
        self.count += 1
        if length not in self.real:
            self.real[length] = {key: slot}
            self.rebuild()
            return
        self.real[length][key] = slot
        if self.count >= 2 * self.rebuilt_at and self.count <= _REWEIGH_UP_TO:
            self.rebuild()
            return
        self.mark(length, key)
        self.probe[length][key] = slot
        # The new prefix is now the bmp of the markers inside it whose bmp was shorter.
        for probe, km in self.markers_inside(length, key):
            if probe[km].length < length:
                probe[km] = slot

    def discard(self, length: int, key: int) -> _Slot | None:
        real = self.real.get(length)
        slot = None if real is None else real.pop(key, None)
        if slot is None:
            return None
        self.count -= 1
        for m in self.paths[length]:
            km = key & self.masks[m]
            refs = self.refs[m]
            n = refs[km] - 1
            if n:
                refs[km] = n
            else:
                del refs[km]
                keys = self.mkeys[m]
                del keys[bisect_left(keys, km)]
                if km not in self.real[m]:
                    del self.probe[m][km]
        # Whatever used this prefix as bmp falls back to the longest shorter prefix covering it.
        # (A marker with this bmp has nothing between `length` and its own length covering it.)
        fallback = self.lpm_between(key, -1, length) or _NO_MATCH
        if key in self.refs[length]:
            self.probe[length][key] = fallback
        else:
            del self.probe[length][key]
        for probe, km in self.markers_inside(length, key):
            if probe[km] is slot:
                probe[km] = fallback
        return slot

    def rebuild(self) -> None:
        """Recompute the tree, markers and bmps from `real`, dropping lengths left empty.

        The tree is weight-balanced: each subtree's root is the length holding the middle of its
        weight, a length weighing its share of the prefixes plus an equal share of the whole. The
        lengths most prefixes have sit near the root (a mostly-/32 table answers most lookups in
        one probe), and the equal share bounds the depth near log2(2 * number of lengths).
        """
        for length in [n for n, d in self.real.items() if not d]:
            del self.real[length]
        self.lengths = lengths = tuple(sorted(self.real))
        self.index = {n: i for i, n in enumerate(lengths)}
        self.rebuilt_at = self.count
        cum = [0.0]
        for n in lengths:
            cum.append(cum[-1] + len(self.real[n]) / self.count + 1 / len(lengths))
        self.probe = {n: dict(self.real[n]) for n in lengths}
        self.refs = {n: {} for n in lengths}
        self.paths = {}

        def build(lo: int, hi: int, turns: tuple[int, ...]) -> _Node | None:
            if lo >= hi:
                return None
            mid = min(max(bisect_right(cum, (cum[lo] + cum[hi]) / 2, lo, hi + 1) - 1, lo), hi - 1)
            m = lengths[mid]
            self.paths[m] = turns
            shorter = build(lo, mid, turns)
            longer = build(mid + 1, hi, (*turns, m))
            return (self.masks[m], self.probe[m], longer, shorter, m)

        self.root = build(0, len(lengths), ())
        for length, prefixes in self.real.items():
            for key in prefixes:
                self.mark(length, key, keep_sorted=False)
        self.mkeys = {m: sorted(refs) for m, refs in self.refs.items()}


_HeapItem: TypeAlias = tuple[float, int, _Slot]


class MapCache:
    """EID-prefixes per instance-id, IPv4 and IPv6, with longest-prefix match and expiry.

    Not thread-safe (the data path and the control path of one process share it in one thread).
    Time only enters through `now` arguments; entries carry absolute `expires_at` on that clock.
    """

    def __init__(self) -> None:
        self._v4: dict[int, _Table] = {}
        self._v6: dict[int, _Table] = {}
        # (expires_at, seq, slot) for every entry with a finite lifetime. An item is live while its
        # slot still carries its seq; a replaced or removed entry's item is skipped when it
        # surfaces (lazy deletion). Seq, not entry identity: the same entry may be re-inserted.
        self._heap: list[_HeapItem] = []
        self._seq = 0
        self._count = 0

    # --- the data path -------------------------------------------------------------------------

    def lookup_int(self, iid: int, version: int, address: int, now: float) -> MapCacheEntry | None:
        """Longest-prefix match for `address` given as an int (int.from_bytes of the 4 or 16
        address bytes of a packet; `version` 4 or 6). An expired match is purged and the next
        longest one is returned instead. None when nothing covers the address."""
        table = (self._v4 if version == 4 else self._v6).get(iid)
        if table is None:
            return None
        node = table.root
        best = _NO_MATCH
        while node is not None:
            slot = node[1].get(address & node[0])
            if slot is None:
                node = node[3]
            else:
                best = slot
                node = node[2]
        entry = best.entry
        if entry is None or entry.expires_at > now:
            return entry
        self._remove_entry(entry)
        return self.lookup_int(iid, version, address, now)

    def lookup(
        self, iid: int, address: IPv4Address | IPv6Address, now: float
    ) -> MapCacheEntry | None:
        """`lookup_int` for an ipaddress object."""
        return self.lookup_int(iid, address.version, int(address), now)

    # --- the control path ----------------------------------------------------------------------

    def insert(self, entry: MapCacheEntry) -> MapCacheEntry | None:
        """Install `entry`, replacing (and returning) any entry for the same iid and prefix."""
        prefix = entry.prefix
        tables = self._v4 if prefix.version == 4 else self._v6
        table = tables.get(entry.iid)
        if table is None:
            table = tables[entry.iid] = _Table(_WIDTH[prefix.version])
        length, key = prefix.prefixlen, int(prefix.network_address)
        real = table.real.get(length)
        slot = None if real is None else real.get(key)
        old = None
        if slot is None:
            slot = _Slot(entry, length)
            table.add(length, key, slot)
            self._count += 1
        else:
            old, slot.entry = slot.entry, entry
        if entry.expires_at == math.inf:
            slot.seq = 0
        else:
            self._seq += 1
            slot.seq = self._seq
            heapq.heappush(self._heap, (entry.expires_at, self._seq, slot))
            if len(self._heap) > 2 * self._count + 1024:
                # Refreshes leave stale items behind; keep the heap proportional to the cache.
                self._heap = [item for item in self._heap if item[2].seq == item[1]]
                heapq.heapify(self._heap)
        return old

    def remove(self, iid: int, prefix: Prefix) -> MapCacheEntry | None:
        """Remove and return the entry for exactly this prefix, if any."""
        tables = self._v4 if prefix.version == 4 else self._v6
        table = tables.get(iid)
        if table is None:
            return None
        slot = table.discard(prefix.prefixlen, int(prefix.network_address))
        if slot is None:
            return None
        entry, slot.entry, slot.seq = slot.entry, None, 0
        self._count -= 1
        if not table.count:
            del tables[iid]
        return entry

    def exact(self, iid: int, prefix: Prefix) -> MapCacheEntry | None:
        """The entry for exactly this prefix (expired or not), if any."""
        table = (self._v4 if prefix.version == 4 else self._v6).get(iid)
        if table is None:
            return None
        slot = table.real.get(prefix.prefixlen, {}).get(int(prefix.network_address))
        return None if slot is None else slot.entry

    def covering(
        self, iid: int, address: IPv4Address | IPv6Address, now: float
    ) -> list[MapCacheEntry]:
        """Every live entry covering `address`, longest first (for inspection, not the data
        path: it probes every length)."""
        table = (self._v4 if address.version == 4 else self._v6).get(iid)
        if table is None:
            return []
        value, found = int(address), []
        for length in reversed(table.lengths):
            slot = table.real[length].get(value & table.masks[length])
            if slot is not None and slot.entry is not None and slot.entry.expires_at > now:
                found.append(slot.entry)
        return found

    def expire(self, now: float) -> list[MapCacheEntry]:
        """Remove and return the entries expired at `now`, soonest expiry first."""
        heap, expired = self._heap, []
        while heap and heap[0][0] <= now:
            _, seq, slot = heapq.heappop(heap)
            entry = slot.entry
            if slot.seq == seq and entry is not None:
                self._remove_entry(entry)
                expired.append(entry)
        return expired

    def next_expiry(self) -> float:
        """When the soonest entry expires (math.inf if none does): when to call `expire`."""
        heap = self._heap
        while heap and heap[0][2].seq != heap[0][1]:
            heapq.heappop(heap)
        return heap[0][0] if heap else math.inf

    def due_for_refresh(self, now: float, margin: float) -> list[MapCacheEntry]:
        """Live entries expiring within `margin` seconds of `now`, soonest first, so an ITR can
        send Map-Requests before they lapse. Walks only the part of the heap that qualifies."""
        heap, limit, due = self._heap, now + margin, []
        stack = [0] if heap else []
        while stack:
            i = stack.pop()
            expires_at, seq, slot = heap[i]
            if expires_at > limit:
                continue  # heap order: nothing below this item qualifies either
            if slot.seq == seq and slot.entry is not None and expires_at > now:
                due.append(slot.entry)
            stack.extend(c for c in (2 * i + 1, 2 * i + 2) if c < len(heap))
        due.sort(key=lambda e: e.expires_at)
        return due

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[MapCacheEntry]:
        """Every stored entry (expired ones too, until `expire` or a lookup purges them)."""
        for tables in (self._v4, self._v6):
            for table in tables.values():
                for prefixes in table.real.values():
                    for slot in prefixes.values():
                        if slot.entry is not None:
                            yield slot.entry

    def _remove_entry(self, entry: MapCacheEntry) -> None:
        self.remove(entry.iid, entry.prefix)
