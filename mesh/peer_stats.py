"""The peers table of an xTR's status: per remote node, the path in use and its traffic.

One row per peer the xTR holds keys with: its EIDs, the path (`direct`; `relay` once RTRs
exist), the RLOC in use and our uplink towards it, every RLOC of its mappings with its probe
state and RTT, the last key exchange, and packets/bytes sealed to it and opened from it. Byte
counts come from the C data path; the Python data path counts packets only (bytes are None).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mesh.xtr import Xtr

PATH_DIRECT = "direct"


def rtt_ms(xtr: Xtr, rloc: str) -> float | None:
    """The last RLOC-probe round trip to `rloc`, in ms (None before the first reply)."""
    state = xtr.prober.state(rloc)
    if state is None or state.rtt is None:
        return None
    return round(state.rtt * 1000, 2)


def _traffic(xtr: Xtr, name: str) -> dict[str, int | None]:
    fast_sent, fast_received = xtr.fast.traffic() if xtr.fast is not None else ({}, {})
    packets_sent = packets_received = 0
    bytes_sent: int | None = 0 if xtr.fast is not None else None
    bytes_received: int | None = bytes_sent
    for state in {id(s): s for s in xtr.keys.encap.values() if s.peer_name == name}.values():
        packets, octets = fast_sent.get(id(state), (state.counter, 0))
        packets_sent += packets
        if bytes_sent is not None:
            bytes_sent += octets
    for slot in {id(s): s for s in xtr.keys.decap.values() if s.peer_name == name}.values():
        packets, octets = fast_received.get(id(slot), (slot.packets, 0))
        packets_received += packets
        if bytes_received is not None:
            bytes_received += octets
    return {
        "packets_sent": packets_sent,
        "bytes_sent": bytes_sent,
        "packets_received": packets_received,
        "bytes_received": bytes_received,
    }


def peer_rows(xtr: Xtr, now: float) -> list[dict[str, Any]]:
    rows = []
    for info in xtr.peers.values():
        keys = [k for k, encap in xtr.entry_encap.items() if encap.peer_name == info.name]
        in_use = next((xtr.paths[k] for k in keys if k in xtr.paths), None)
        rlocs: dict[str, dict[str, Any]] = {}
        for iid, prefix in keys:
            entry = xtr.map_cache.exact(iid, prefix)
            for record in entry.rlocs if entry is not None else ():
                address = str(record.address)
                rlocs[address] = {
                    "address": address,
                    "priority": record.priority,
                    "up": xtr.prober.is_up(address, now),
                    "rtt_ms": rtt_ms(xtr, address),
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
                "path": PATH_DIRECT if in_use is not None else None,
                "rloc": rloc,
                "local_rloc": in_use.local.key if in_use is not None else None,
                "rtt_ms": rtt_ms(xtr, rloc) if rloc is not None else None,
                "encrypted": in_use is not None and xtr.encrypt,
                "rlocs": list(rlocs.values()),
                **_traffic(xtr, info.name),
            }
        )
    return rows
