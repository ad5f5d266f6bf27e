"""Which name, slot and EID prefixes a new node gets, given what is taken: pure functions, the
same for every backend (a backend only makes the claim atomic).

Slot i is the i-th /len4 of pool4 and the i-th /len6 of pool6, counted per instance-id (virtual
networks may reuse the same prefixes). Slots of revoked nodes stay taken: traffic for a revoked
node's EIDs must never reach a newcomer. Names are unique across instance-ids.

A backend that claims optimistically (etcd) retries when another writer took the same slot or
name first; `attempt` > 0 then picks at random among the lowest few free choices, so writers
racing for the lowest one stop colliding every round. Attempt 0 is always the lowest.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Network, IPv6Network
from typing import TypeVar

from controller_api.store.model import Allocation, EidPools, NewNode, PoolExhausted

T = TypeVar("T")
_SPREAD_MAX = 16
NAME_MAX = 63


def capacity(pools: EidPools) -> int:
    return min(1 << (pools.len4 - pools.pool4.prefixlen), 1 << (pools.len6 - pools.pool6.prefixlen))


def eids_of(pools: EidPools, slot: int) -> tuple[IPv4Network, IPv6Network]:
    eid4 = IPv4Network((int(pools.pool4.network_address) + (slot << (32 - pools.len4)), pools.len4))
    eid6 = IPv6Network(
        (int(pools.pool6.network_address) + (slot << (128 - pools.len6)), pools.len6)
    )
    return eid4, eid6


def _pick(candidates: Iterator[T], attempt: int) -> T | None:
    spread = min(attempt + 1, _SPREAD_MAX)
    first = list(itertools.islice(candidates, spread))
    if not first:
        return None
    return first[0] if attempt == 0 else random.choice(first)


def _names(wish: str) -> Iterator[str]:
    yield wish
    for n in itertools.count(2):
        suffix = f"-{n}"
        yield wish[: NAME_MAX - len(suffix)] + suffix


def allocate(
    new: NewNode,
    pools: EidPools,
    used_slots: Iterable[int],
    taken_names: Iterable[str],
    attempt: int = 0,
) -> Allocation:
    """The allocation for `new` given the slots used in its instance-id and all taken names."""
    used, taken, size = set(used_slots), set(taken_names), capacity(pools)
    slot = _pick((i for i in range(size) if i not in used), attempt)
    if slot is None:
        raise PoolExhausted(
            f"the EID pools are full ({size} nodes in {pools.pool4} and {pools.pool6})"
        )
    name = _pick((n for n in _names(new.requested_name) if n not in taken), attempt)
    assert name is not None  # the candidate names never run out
    eid4, eid6 = eids_of(pools, slot)
    return Allocation(name, slot, new.instance_id, eid4, eid6)
