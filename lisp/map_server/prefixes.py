"""Prefix structures of the map-server: longest-prefix tables and the sets behind negative replies.

Lookups are longest-prefix matches over one dict per (instance-id, family, mask-len), mask-lens
present sorted longest first: at most 33 (IPv4) or 129 (IPv6) dict probes, usually a handful.
Prefixes are plain ints (network, mask-len) here; `network` makes an ipaddress object of one.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network
from typing import Generic, TypeVar

from lisp.address import IpAddress
from lisp.map_server.site import Prefix

WIDTH = {4: 32, 6: 128}
MASKS = {w: tuple(((1 << n) - 1) << (w - n) for n in range(w + 1)) for w in (32, 128)}


def network(version: int, net: int, length: int) -> Prefix:
    if version == 4:
        return IPv4Network((net, length))
    return IPv6Network((net, length))


def shown(iid: int, version: int, net: int, length: int) -> str:
    """`[iid]prefix`, the way log lines name an EID-prefix."""
    return f"[{iid}]{network(version, net, length)}"


V = TypeVar("V")


class PrefixTable(Generic[V]):
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


class PrefixSet:
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
        masks = MASKS[self.width]
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
    width = WIDTH[address.version]
    members = PrefixSet(width)
    for prefix in prefixes:
        if prefix.version == address.version:
            members.add(int(prefix.network_address), prefix.prefixlen)
    length = members.hole(int(address))
    return network(address.version, int(address) & MASKS[width][length], length)
