"""The C data path (mesh/_fastpath.c) driven from the xTR's state.

The xTR (mesh.xtr) stays the one place that decides: which prefix goes to which RLOC with which
key, which ITR keys open which packets. `FastPath` mirrors those decisions into the engine
whenever they change, and reads its counters back, so status, rekeying by packet count and the
idle expiry of old keys work the same with either data path. The pure-Python path in mesh.xtr
remains the portable reference; `available()` says whether the C module was built.

Invariants that keep the AEAD safe: one engine path per EncapState (one key, one counter shared
by every route using it), a path's counter is read back before it is ever removed and restored
if it comes back, and once a key is in the engine only the engine seals with it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network
from typing import Any, Protocol

from mesh.keys import DecapSlot, EncapState

_fastpath: Any
try:
    _fastpath = importlib.import_module("mesh._fastpath")
except ImportError:  # not built (no compiler or libssl-dev): the Python path serves
    _fastpath = None

IpNetwork = IPv4Network | IPv6Network


class RouteTarget(Protocol):
    """What mesh.xtr.Path offers: the key, the remote RLOC, the local uplink."""

    encap: EncapState
    remote: tuple[str, int]


def available() -> bool:
    return _fastpath is not None


class FastPath:
    def __init__(self, tun_fd: int, instance_id: int, cipher_suite: int) -> None:
        if _fastpath is None:
            raise RuntimeError("the C data path (mesh._fastpath) is not built")
        self.engine: Any = _fastpath.Engine(tun_fd, True, instance_id)
        self.cipher_suite = cipher_suite
        self._path_ids: dict[int, int] = {}  # id(EncapState) -> engine path id
        self._states: dict[int, EncapState] = {}
        self._slot_ids: dict[int, int] = {}  # id(DecapSlot) -> engine slot id
        self._slots: dict[int, DecapSlot] = {}
        self._decap_keys: set[tuple[str, int]] = set()
        self._next_id = 0

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # ------------------------------------------------------------------ encap

    def sync_paths(
        self, paths: Mapping[tuple[int, IpNetwork], RouteTarget], fds: Mapping[int, int]
    ) -> None:
        """Install `paths` ((iid, prefix) -> Path) as the engine's routes. `fds` maps
        id(path) -> the data socket of the path's local uplink."""
        wanted: dict[int, EncapState] = {}
        for path in paths.values():
            wanted[id(path.encap)] = path.encap
        for key, state in wanted.items():
            if key not in self._path_ids:
                pid = self._new_id()
                self.engine.set_path(
                    pid, self.cipher_suite, state.key, state.salt, state.header, state.counter
                )
                self._path_ids[key] = pid
                self._states[key] = state
        routes = []
        for (_iid, prefix), path in sorted(paths.items(), key=lambda item: -item[0][1].prefixlen):
            routes.append(
                (
                    prefix.version,
                    prefix.network_address.packed,
                    prefix.prefixlen,
                    self._path_ids[id(path.encap)],
                    fds[id(path)],
                    path.remote[0],
                    path.remote[1],
                )
            )
        self.engine.set_routes(routes)
        for key in list(self._path_ids):
            if key not in wanted:
                pid = self._path_ids.pop(key)
                state = self._states.pop(key)
                self._read_back(pid, state)
                self.engine.remove_path(pid)

    def _read_back(self, pid: int, state: EncapState) -> None:
        found = self.engine.path_state(pid)
        if found is not None:
            state.counter = max(state.counter, found[0])

    # ------------------------------------------------------------------ decap

    def sync_decap(self, decap: Mapping[tuple[str, int], DecapSlot]) -> None:
        live: dict[int, DecapSlot] = {id(slot): slot for slot in decap.values()}
        for key, slot in live.items():
            if key not in self._slot_ids:
                sid = self._new_id()
                allowed = [
                    (net.version, net.network_address.packed, net.prefixlen)
                    for _iid, net in slot.peer_eids
                ]
                self.engine.set_slot(sid, self.cipher_suite, slot.key, allowed)
                self._slot_ids[key] = sid
                self._slots[key] = slot
        for (rloc, key_id), slot in decap.items():
            self.engine.set_decap_key(rloc, key_id, self._slot_ids[id(slot)])
        for rloc, key_id in self._decap_keys - set(decap):
            self.engine.remove_decap_key(rloc, key_id)
        self._decap_keys = set(decap)
        for key in list(self._slot_ids):
            if key not in live:
                self.engine.remove_slot(self._slot_ids.pop(key))
                self._slots.pop(key)

    # ------------------------------------------------------------------ counters

    def read_counters(self, now: float) -> None:
        """Copy the engine's per-key counters into the xTR's states (status, rekey by count,
        idle expiry of old ITR keys)."""
        for key, pid in self._path_ids.items():
            self._read_back(pid, self._states[key])
        for key, sid in self._slot_ids.items():
            found = self.engine.slot_state(sid)
            if found is None:
                continue
            slot = self._slots[key]
            if found[0] > slot.packets:
                slot.packets = found[0]
                slot.last_used = now

    def stats(self) -> dict[str, int]:
        return dict(self.engine.stats())
