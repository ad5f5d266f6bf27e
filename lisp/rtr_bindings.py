"""The NAT bindings an RTR keeps (sans-IO): which outside address:port reaches each node uplink that
sits behind a NAT. The first part of the RTR role (issue 15); the relay itself is not built yet.

Data-plane Info-Requests: lispers.net's ETR sends each RTR an Info-Request inside a LISP data header
with instance-id 0xFFFFFF, to UDP 4341 (lisp-wire.md §1.7). The source address:port that packet
arrives from is the NAT's mapping of the ETR's *data* port: exactly what the RTR needs to send
data back through the NAT. `frame` / `unframe` build and read such packets.

Whose binding a packet refreshes is never taken from its source address nor from the name it
claims: the caller gives `observe` the node name it authenticated (the peer whose key opened the
packet; the hostname of a plain lispers.net Info-Request only for peers configured as
unauthenticated). A node that spoofs another's outside address:port as its source therefore moves
only its own binding, never the other's (two nodes may even claim one endpoint; each keeps its own).

A binding is refreshed by every observation and is stale `stale_after` seconds after the last one
(lispers.net: 30 s), when `lookup` stops returning it and `expire` drops it. A changed address:port
for the same node uplink is a move (a NAT rebinding, a new uplink address): `observe` returns it so
the RTR can move the node's keys and encapsulation to the new endpoint without a rekey. Memory is
bounded: at most `per_node` uplinks per node (the least recently seen goes) and `limit` bindings in
all (new ones are refused, counted, while full).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from lisp.data_header import HEADER_LEN, DataHeader
from lisp.errors import DecodeError
from lisp.info import InfoMessage

CONTROL_IID = 0xFFFFFF  # the instance-id that marks a data-plane control message
Endpoint = tuple[str, int]


def frame(info: InfoMessage) -> bytes:
    """A data-plane Info-Request: LISP data header (instance-id 0xFFFFFF) + the message."""
    return DataHeader(instance_id=CONTROL_IID).encode() + info.encode()


def unframe(packet: bytes) -> InfoMessage | None:
    """The Info message of a data-plane control packet; None for any other data packet.
    DecodeError when it is marked as control but malformed."""
    header = DataHeader.decode(packet)
    if header.instance_id != CONTROL_IID:
        return None
    if header.key_id:
        raise DecodeError("data-plane control packet with a key-id (it is never encrypted)")
    return InfoMessage.decode(packet[HEADER_LEN:])


@dataclass(frozen=True)
class Binding:
    node: str
    uplink: str  # the node's name for the uplink (lispers.net: hostname-ifname)
    endpoint: Endpoint
    first_seen: float
    last_seen: float


@dataclass(frozen=True)
class Learned:
    binding: Binding


@dataclass(frozen=True)
class Moved:
    binding: Binding
    old: Endpoint


class NatBindings:
    def __init__(self, stale_after: float = 30.0, per_node: int = 8, limit: int = 65536) -> None:
        self.stale_after = stale_after
        self.per_node = per_node
        self.limit = limit
        self._bindings: dict[tuple[str, str], Binding] = {}
        self._by_node: dict[str, list[str]] = {}  # node -> its uplinks, least recently seen first
        self.counters: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._bindings)

    def observe(
        self, node: str, uplink: str, endpoint: Endpoint, now: float
    ) -> Learned | Moved | None:
        """An authenticated packet of `node`'s `uplink` came from `endpoint`. Returns what changed
        (None: a refresh, or refused because the table is full)."""
        key = (node, uplink)
        old = self._bindings.get(key)
        if old is not None and old.last_seen + self.stale_after <= now:
            self._remove(key)  # stale: what comes now is a new binding, not a move
            old = None
        if old is None:
            if len(self._bindings) >= self.limit and node not in self._by_node:
                self.counters["table-full"] += 1
                return None
            uplinks = self._by_node.setdefault(node, [])
            while uplinks and (len(uplinks) >= self.per_node or len(self._bindings) >= self.limit):
                self.counters["evicted"] += 1
                self._remove((node, uplinks[0]))
                uplinks = self._by_node.setdefault(node, [])
            binding = Binding(node, uplink, endpoint, now, now)
            self._store(key, binding)
            self.counters["learned"] += 1
            return Learned(binding)
        binding = Binding(node, uplink, endpoint, old.first_seen, now)
        self._store(key, binding)
        if old.endpoint != endpoint:
            self.counters["moved"] += 1
            return Moved(binding, old.endpoint)
        return None

    def lookup(self, node: str, now: float, uplink: str | None = None) -> Binding | None:
        """The freshest binding of `node` (of that uplink, if given) that is not stale."""
        names = [uplink] if uplink is not None else self._by_node.get(node, [])
        fresh = [
            b
            for name in names
            if (b := self._bindings.get((node, name))) is not None
            and now < b.last_seen + self.stale_after
        ]
        return max(fresh, key=lambda b: b.last_seen, default=None)

    def expire(self, now: float) -> list[Binding]:
        """Drop the stale bindings; returns them (the RTR forgets their paths)."""
        gone = [b for b in self._bindings.values() if now >= b.last_seen + self.stale_after]
        for b in gone:
            self._remove((b.node, b.uplink))
        return gone

    def status(self, now: float) -> list[dict[str, object]]:
        return [
            {
                "node": b.node,
                "uplink": b.uplink,
                "endpoint": f"{b.endpoint[0]}:{b.endpoint[1]}",
                "age": round(now - b.first_seen, 1),
                "last_seen_ago": round(now - b.last_seen, 1),
                "stale": now >= b.last_seen + self.stale_after,
            }
            for b in sorted(self._bindings.values(), key=lambda b: (b.node, b.uplink))
        ]

    def _store(self, key: tuple[str, str], binding: Binding) -> None:
        self._bindings[key] = binding
        uplinks = self._by_node.setdefault(key[0], [])
        if key[1] in uplinks:
            uplinks.remove(key[1])
        uplinks.append(key[1])  # most recently seen last

    def _remove(self, key: tuple[str, str]) -> None:
        self._bindings.pop(key, None)
        uplinks = self._by_node.get(key[0])
        if uplinks is not None:
            if key[1] in uplinks:
                uplinks.remove(key[1])
            if not uplinks:
                del self._by_node[key[0]]
