"""The node's uplinks (RLOCs): facts of this machine, never configured by the controller.

Default: every interface with a global address, except lo and the overlay TUN; `--uplink IF`
(repeatable) restricts to those interfaces.
"""

from __future__ import annotations

from collections.abc import Sequence

from controller_api.netinfo import LocalAddress, global_addresses
from mesh.config import IpNetwork, Rloc


def discover(
    only: Sequence[str] = (), exclude: Sequence[str] = (), eids: Sequence[IpNetwork] = ()
) -> list[LocalAddress]:
    found = []
    for local in global_addresses():
        if only and local.interface not in only:
            continue
        if local.interface in exclude or any(local.address in net for net in eids):
            continue
        found.append(local)
    return found


def as_rlocs(uplinks: Sequence[LocalAddress]) -> tuple[Rloc, ...]:
    # Equal priority: peers share load over every uplink and fail over when one dies.
    return tuple(Rloc(address=u.address, interface=u.interface) for u in uplinks)
