"""What the xTR and its parts share: ports and limits, the transport it sends through, the
uplinks, paths, outstanding misses and requests, and what it knows of peers."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from mesh.config import IpAddress, IpNetwork
from mesh.keys import EncapState

DATA_PORT = 4341
CONTROL_PORT = 4342
FLOW_CACHE_LIMIT = 65536
MAP_REPLY_TTL_MINUTES = 15
NEGATIVE_HOLD_SECONDS = 5.0  # how long a failed key exchange blocks a prefix before retrying
SMR_INTERVAL = 1.0  # at most one Solicit-Map-Request per peer RLOC per second, each way


class Transport(Protocol):
    def send_data(self, local: LocalRloc, packet: bytes, dest: tuple[str, int]) -> None: ...
    def send_control(self, local: LocalRloc, packet: bytes, dest: tuple[str, int]) -> None: ...
    def write_inside(self, packet: bytes) -> None: ...


@dataclass
class LocalRloc:
    address: IpAddress
    interface: str | None
    priority: int
    weight: int
    up: bool = True

    @property
    def key(self) -> str:
        return str(self.address)


@dataclass(slots=True)
class Path:
    """Where packets to one map-cache entry go: the key to seal with and the RLOC to send to."""

    encap: EncapState
    remote: tuple[str, int]
    local: LocalRloc
    mtu: int = 65535  # the largest inner packet that fits the path (mesh.pmtu)
    # Through an RTR (mesh.rtr): the relay shim to put before each sealed packet, and the RTR's
    # name; None: direct.
    relay: bytes | None = None
    via: str | None = None
    peer_behind_rtr: bool = False  # the peer is the one behind the RTR (not, or not only, us)


@dataclass
class Miss:
    """Packets waiting for the Map-Reply of one destination address."""

    version: int
    address: int
    queue: deque[bytes]
    last_request: float = float("-inf")
    first_seen: float = 0.0


@dataclass
class Pending:
    """An outstanding Map-Request: what it asked and with which of our keys."""

    kind: str  # "resolve" or "probe"
    key_id: int | None
    sent_at: float
    rloc: str | None = None
    eid: tuple[int, IpNetwork] | None = None


@dataclass
class PeerInfo:
    """What we know of a remote node, for status."""

    name: str
    eids: set[str] = field(default_factory=set)
    last_key_exchange: float | None = None
