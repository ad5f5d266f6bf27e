"""EIDs for apps: every replica gets an address from the app's pool (one IPv4 and one IPv6, the
same offset in both), or all replicas share one anycast address, and keeps it for the app's
life: a replica that moves to another node is still reached at the same EID, which is the point
of running workloads on a LISP mesh.

Assignment is a pure function of what is taken; `claim_eids` commits it through the Store in one
compare-and-set on the pool's record, so two controllers (or two apps) never get one address.
An address stays with its app until the app is removed (`release_eids`), including those of
replicas scaled away, so scaling down and up again gives a replica its old EID back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Set
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from common.errors import LispmeshError
from controller_api.apps.fenced import commit
from controller_api.apps.spec import AppSpec
from controller_api.store import PLACEMENTS, Fence, ObjectWrite, Store

ANYCAST = -1  # the replica key of an app's one shared EID
_RECORD = "eid-pool/"


class EidPoolExhausted(LispmeshError):
    pass


@dataclass(frozen=True)
class AppPool:
    name: str
    pool4: IPv4Network
    pool6: IPv6Network

    @property
    def size(self) -> int:
        """Offsets 1..size are usable (0 is the network; the IPv4 broadcast is left out)."""
        return min(self.pool4.num_addresses - 2, self.pool6.num_addresses - 1)

    def eid(self, offset: int) -> AppEid:
        return AppEid(self.pool4[offset], self.pool6[offset])


@dataclass(frozen=True)
class AppEid:
    ipv4: IPv4Address
    ipv6: IPv6Address

    def __str__(self) -> str:
        return f"{self.ipv4} {self.ipv6}"


def assign(pool: AppPool, app: AppSpec, held: Mapping[int, int], taken: Set[int]) -> dict[int, int]:
    """replica (or ANYCAST) -> offset for every replica of `app`: what it `held` is kept, the
    rest get the lowest offsets not `taken` (by any app, this one included)."""
    wanted = [ANYCAST] if app.eid.mode == "anycast" else list(range(app.replicas))
    out = dict(held)
    used = set(taken) | set(held.values())
    free = (o for o in range(1, pool.size + 1) if o not in used)
    for replica in wanted:
        if replica in out:
            continue
        offset = next(free, None)
        if offset is None:
            raise EidPoolExhausted(
                f"app {app.name}: the EID pool {pool.name} ({pool.pool4}, {pool.pool6}) is full"
            )
        out[replica] = offset
    return out


def _owner(app: str, replica: int) -> str:
    return f"{app}/{'anycast' if replica == ANYCAST else replica}"


def _parse_owner(owner: str) -> tuple[str, int]:
    app, _, replica = owner.rpartition("/")
    return app, ANYCAST if replica == "anycast" else int(replica)


def _read(store: Store, pool: AppPool) -> tuple[dict[int, str], int]:
    record = store.get_object(PLACEMENTS, _RECORD + pool.name)
    if record is None:
        return {}, 0
    return {int(k): v for k, v in json.loads(record.value).items()}, record.revision


def eids_by_replica(store: Store, pool: AppPool) -> dict[tuple[str, int], AppEid]:
    """(app, replica or ANYCAST) -> its EID, for every address of the pool that is taken."""
    owners, _ = _read(store, pool)
    return {_parse_owner(v): pool.eid(o) for o, v in owners.items()}


def claim_eids(
    store: Store, pool: AppPool, app: AppSpec, fence: Fence | None = None
) -> dict[int, AppEid]:
    """The EIDs of `app`'s replicas, assigning (and storing) those it has not got yet. Raises
    `controller_api.store.Conflict` if another writer changed the pool in between: call again."""
    owners, revision = _read(store, pool)
    held = {
        r: o for o, (a, r) in ((o, _parse_owner(v)) for o, v in owners.items()) if a == app.name
    }
    offsets = assign(pool, app, held, set(owners))
    if offsets != held:
        for replica, offset in offsets.items():
            owners[offset] = _owner(app.name, replica)
        value = json.dumps({str(k): v for k, v in sorted(owners.items())})
        write = ObjectWrite(PLACEMENTS, _RECORD + pool.name, value, revision)
        commit(store, [write], fence)
    return {r: pool.eid(o) for r, o in offsets.items()}


def release_eids(store: Store, pool: AppPool, app: str, fence: Fence | None = None) -> int:
    """Give back every EID of `app` (it was removed); how many."""
    owners, revision = _read(store, pool)
    kept = {o: v for o, v in owners.items() if _parse_owner(v)[0] != app}
    if len(kept) != len(owners):
        value = json.dumps({str(k): v for k, v in sorted(kept.items())}) if kept else None
        write = ObjectWrite(PLACEMENTS, _RECORD + pool.name, value, revision)
        commit(store, [write], fence)
    return len(owners) - len(kept)
