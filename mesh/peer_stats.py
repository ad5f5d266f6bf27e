"""The peers of an xTR: what it knows of each remote node, and the peers table of its status.

One row per peer the xTR holds keys with: its EIDs, the path (`direct`, or `rtr:<name>`
through an RTR), the RLOC in use and our uplink towards it, every RLOC of its mappings with its
probe state and RTT, the last key exchange, and packets/bytes sealed to it and opened from it. Byte
counts come from the C data path; the Python data path counts packets only (bytes are None).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mesh.config import IpNetwork
from mesh.paths import PathTable
from mesh.xtr_context import XtrContext
from mesh.xtr_types import Path, PeerInfo

PATH_DIRECT = "direct"


def rtt_ms(ctx: XtrContext, rloc: str) -> float | None:
    """The last RLOC-probe round trip to `rloc`, in ms (None before the first reply)."""
    state = ctx.prober.state(rloc)
    if state is None or state.rtt is None:
        return None
    return round(state.rtt * 1000, 2)


class PeerTable:
    def __init__(self, ctx: XtrContext, paths: PathTable) -> None:
        self.ctx = ctx
        self.paths = paths
        self.peers: dict[str, PeerInfo] = {}

    def key_exchanged(self, name: str, prefix: IpNetwork | None = None) -> None:
        """A key exchange with `name` succeeded now (for `prefix`, when we asked about one)."""
        info = self.peers.setdefault(name, PeerInfo(name))
        if prefix is not None:
            info.eids.add(str(prefix))
        info.last_key_exchange = self.ctx.now

    def forget(self, name: str) -> None:
        self.peers.pop(name, None)

    def _traffic(self) -> Callable[[str], dict[str, int | None]]:
        """Packets and bytes sealed to and opened from each peer, by name: one pass over the
        keys and one read of the engine's counters for the whole table."""
        ctx = self.ctx
        traffic = ctx.datapath.traffic()  # None: this data path counts no bytes
        fast_sent, fast_received = traffic if traffic is not None else ({}, {})
        zero: int | None = 0 if traffic is not None else None
        table: dict[str, dict[str, int | None]] = {}

        def row(name: str) -> dict[str, int | None]:
            found = table.get(name)
            if found is None:
                found = table[name] = {
                    "packets_sent": 0,
                    "bytes_sent": zero,
                    "packets_received": 0,
                    "bytes_received": zero,
                }
            return found

        def add(counts: dict[str, int | None], field: str, value: int) -> None:
            current = counts[field]
            if current is not None:
                counts[field] = current + value

        for state in {id(s): s for s in ctx.keys.encap.values()}.values():
            packets, octets = fast_sent.get(id(state), (state.counter, 0))
            counts = row(state.peer_name)
            add(counts, "packets_sent", packets)
            add(counts, "bytes_sent", octets)
        for slot in {id(s): s for s in ctx.keys.decap.values()}.values():
            packets, octets = fast_received.get(id(slot), (slot.packets, 0))
            counts = row(slot.peer_name)
            add(counts, "packets_received", packets)
            add(counts, "bytes_received", octets)
        return row

    def rows(self, now: float) -> list[dict[str, Any]]:
        ctx, table = self.ctx, self.paths
        rows = []
        traffic = self._traffic()
        keys_of: dict[str, list[tuple[int, IpNetwork]]] = {}
        for k, encap in table.entry_encap.items():
            keys_of.setdefault(encap.peer_name, []).append(k)
        for info in self.peers.values():
            keys = keys_of.get(info.name, [])
            in_use = next((table.paths[k] for k in keys if k in table.paths), None)
            rlocs: dict[str, dict[str, Any]] = {}
            for iid, prefix in keys:
                entry = table.map_cache.exact(iid, prefix)
                for record in entry.rlocs if entry is not None else ():
                    address = str(record.address)
                    rlocs[address] = {
                        "address": address,
                        "priority": record.priority,
                        "up": ctx.prober.is_up(address, now),
                        "rtt_ms": rtt_ms(ctx, address),
                    }
            rloc = in_use.remote[0] if in_use is not None else None
            rows.append(
                {
                    "name": info.name,
                    "eids": sorted(info.eids),
                    "last_key_exchange_ago": (
                        round(now - info.last_key_exchange, 1)
                        if info.last_key_exchange is not None
                        else None
                    ),
                    "path": _path_name(in_use),
                    "rloc": rloc,
                    "local_rloc": in_use.local.key if in_use is not None else None,
                    "rtt_ms": rtt_ms(ctx, rloc) if rloc is not None else None,
                    "encrypted": in_use is not None and ctx.encrypt,
                    "rlocs": list(rlocs.values()),
                    **traffic(info.name),
                }
            )
        return rows


def _path_name(path: Path | None) -> str | None:
    """`direct`, `rtr:<name>` (through that RTR, mesh.rtr), or None (no path)."""
    if path is None:
        return None
    return PATH_DIRECT if path.via is None else f"rtr:{path.via}"
