"""The C data path (mesh/_fastpath.c) driven from the xTR's state: one of the two
implementations of mesh.datapath.DataPath (the other is the Python reference there).

The xTR (mesh.xtr) stays the one place that decides: which prefix goes to which RLOC with which
key, which ITR keys open which packets. `FastPath` mirrors those decisions into the engine
whenever they change, and reads its counters back, so status, rekeying by packet count and the
idle expiry of old keys work the same with either data path. The pure-Python path in mesh.xtr
remains the portable reference; `available()` says whether the C module was built.

Invariants that keep the AEAD safe: one engine path per EncapState (one key, one counter shared
by every route using it), a path's counter is read back before it is ever removed and restored
if it comes back, and once a key is in the engine only the engine seals with it.

The network policy (mesh.policy; its format common.policy_format) is enforced inside the engine
when it runs: `set_policy` hands it the compiled rules, `policy_status` reads its counters and flow
log back in the shape the Python reference engine reports.
"""

from __future__ import annotations

import importlib
import socket
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Network, IPv6Network
from typing import Any, Protocol

from common.policy_format import NodePolicy, PolicyRule
from mesh.keys import DecapSlot, EncapState
from mesh.policy import (
    DEFAULT_DENY,
    FLOW_LOG_SIZE,
    MAX_FLOWS,
    FlowLogEntry,
    PolicyCounters,
    RuleCounters,
    address_text,
    policy_status,
)

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
    local: Any
    mtu: int  # the largest inner packet the path carries (larger ones go to Python)


# The C engine's per-packet buffers (SEG_BUF in mesh/_fastpath.c) hold 2048 bytes of LISP
# data: header (8), IV (12), inner packet, tag (16). A larger inner packet (a TUN MTU above this)
# would be cut on receive, so such an MTU runs on the Python data path (node.py decides).
MAX_INNER_PACKET = 2048 - 8 - 12 - 16


def available() -> bool:
    return _fastpath is not None


def engine_rules(rules: tuple[PolicyRule, ...]) -> list[tuple[Any, ...]]:
    """Rules as the engine takes them: (id, allow, protocol or -1, src, dst, port ranges)."""

    def prefixes(nets: tuple[IpNetwork, ...]) -> list[tuple[int, bytes, int]]:
        return [(n.version, n.network_address.packed, n.prefixlen) for n in nets]

    return [
        (
            r.id,
            r.action == "allow",
            -1 if r.protocol is None else r.protocol,
            prefixes(r.src),
            prefixes(r.dst),
            list(r.ports),
        )
        for r in rules
    ]


RuleNames = dict[tuple[int, str, int], str]  # (policy version, direction, rule id) -> name


def flow_log_entries(raw: list[tuple[Any, ...]], names: RuleNames) -> list[FlowLogEntry]:
    """The engine's flow log as mesh.policy entries (names from the policy that decided)."""
    entries = []
    for when, version, direction, src, dst, protocol, sport, dport, allowed, rule_id in raw:
        name = DEFAULT_DENY if rule_id is None else names.get((version, direction, rule_id), "?")
        entries.append(
            FlowLogEntry(
                when,
                version,
                direction,
                address_text(src),
                address_text(dst),
                protocol,
                sport,
                dport,
                allowed,
                rule_id,
                name,
            )
        )
    return entries


# Drop reasons the engine counts itself (merged into the xTR's drops in status).
ENGINE_DROP_REASONS = (
    "foreign-destination",
    "key-exhausted",
    "decrypt-failure",
    "replay",
    "spoofed-source",
    "wrong-instance",
    "malformed",
    "policy-denied",
)


class FastPath:
    """The C engine. `data_fd` gives the data socket of a path's local uplink (for its routes)."""

    name = "c"

    def __init__(
        self,
        tun_fd: int,
        instance_id: int,
        cipher_suite: int,
        data_fd: Callable[[Any], int] | None = None,
        plaintext: bool = False,
        mss_clamp: bool = False,
        send_relayed: Callable[[Any, bytes, tuple[str, int]], None] | None = None,
    ) -> None:
        if _fastpath is None:
            raise RuntimeError("the C data path (mesh._fastpath) is not built")
        self.engine: Any = _fastpath.Engine(tun_fd, True, instance_id)
        # security.encryption: false: KK = 0 packets are opened in the engine; otherwise they
        # go to Python, which refuses and counts them.
        self.engine.set_plaintext(plaintext)
        self.engine.set_mss_clamp(mss_clamp)
        self.cipher_suite = cipher_suite
        self.data_fd = data_fd
        # Packets to and from peers reached through an RTR go through Python (the xTR counts
        # them: relayed-out, relayed-in).
        self.send_relayed = send_relayed
        # The engine enforces the policy on every packet it handles, including those the xTR
        # injects: the xTR has nothing to check itself.
        self.egress_check: Callable[[bytes, float], str | None] | None = None
        self.ingress_check: Callable[[bytes, float], str | None] | None = None
        self._path_ids: dict[int, int] = {}  # id(EncapState) -> engine path id
        self._states: dict[int, EncapState] = {}
        self._slot_ids: dict[int, int] = {}  # id(DecapSlot) -> engine slot id
        self._slots: dict[int, DecapSlot] = {}
        self._decap_keys: set[tuple[str, int]] = set()
        self._key_packets: dict[tuple[str, int], int] = {}  # what received_from saw last
        self._next_id = 0
        self.policy: NodePolicy | None = None
        self._rule_names: RuleNames = {}

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # ------------------------------------------------------------------ the DataPath interface

    def install_paths(self, paths: Mapping[tuple[int, IpNetwork], RouteTarget]) -> None:
        fd_of = self.data_fd
        if fd_of is None:
            raise RuntimeError("FastPath.install_paths needs data_fd")
        # Relayed paths stay out of the engine (see send): their packets come back as misses.
        # So are paths in a framing only Python speaks (mesh.lispers_peer).
        direct = {
            k: p
            for k, p in paths.items()
            if getattr(p, "relay", None) is None and not p.encap.python_only
        }
        self.sync_paths(direct, {id(p): fd_of(p.local) for p in direct.values()})

    def install_decap(self, decap: Mapping[tuple[str, int], DecapSlot]) -> None:
        self.sync_decap(decap)

    def set_local(self, instance_id: int, prefixes: Sequence[IpNetwork]) -> None:
        self.engine.set_instance_id(instance_id)
        self.engine.set_local_eids(
            [(p.version, p.network_address.packed, p.prefixlen) for p in prefixes]
        )

    def send(self, path: RouteTarget, packet: bytes) -> bool:
        relay = getattr(path, "relay", None)
        if relay is None and path.encap.python_only:
            relay = b""  # a lispers.net peer: sealed here, never in the engine
        if relay is not None:
            # Relayed paths (through an RTR) are not in the engine: it has no shim to put in
            # front. Their keys are never installed, so sealing here keeps one counter per key.
            if id(path.encap) in self._path_ids or self.send_relayed is None:
                return False
            self.send_relayed(path.local, relay + path.encap.seal(packet), path.remote)
            return True
        # Once a key is in the engine only the engine seals with it (one counter per key).
        return bool(self.engine.inject(packet))

    def deliver(self, packet: bytes, rloc: str) -> bool:
        """A packet that came through an RTR, sealed by `rloc`: the engine holds its key (and
        replay window), so the engine opens it, checks it and writes it to the TUN."""
        try:
            return bool(self.engine.deliver_outside(rloc, packet))
        except ValueError:
            return False

    def decap_slot(
        self, decap: Mapping[tuple[str, int], DecapSlot], rloc: str, key_id: int
    ) -> DecapSlot | None:
        # Every installed key lives in the engine: what it hands back has no key here (opening
        # it in Python would split the replay window in two); except the keys it never holds.
        slot = decap.get((rloc, key_id))
        return slot if slot is not None and slot.python_only else None

    def pump_inside(self, tun_fd: int, limit: int) -> list[bytes]:
        return list(self.engine.pump_inside(limit) or ())

    def pump_outside(self, sock: socket.socket, limit: int) -> list[tuple[bytes, tuple[str, int]]]:
        return list(self.engine.pump_outside(sock.fileno(), limit) or ())

    def drop_counts(self) -> dict[str, int]:
        stats = self.stats()
        return {r: int(stats[r]) for r in ENGINE_DROP_REASONS if stats.get(r)}

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
                # A state without a key is the plaintext one (mesh.keys.plain_encap): suite 0.
                suite = self.cipher_suite if state.key else 0
                self.engine.set_path(pid, suite, state.key, state.salt, state.header, state.counter)
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
                    path.mtu,
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
        # Slots in a framing only Python speaks stay out (decap_slot hands them to Python).
        decap = {k: slot for k, slot in decap.items() if not slot.python_only}
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

    def received_from(self) -> set[str]:
        """Source RLOCs of packets the engine opened since the last call (per decap key, so a
        peer with several uplinks vouches only for the one its packets came from)."""
        seen: dict[tuple[str, int], int] = {}
        fresh: set[str] = set()
        for source, key_id, packets in self.engine.key_packets():
            key = (source, key_id)
            seen[key] = packets
            if packets != self._key_packets.get(key, 0):
                fresh.add(source)
        self._key_packets = seen
        return fresh

    def stats(self) -> dict[str, int]:
        return dict(self.engine.stats())

    def traffic(self) -> tuple[dict[int, tuple[int, int]], dict[int, tuple[int, int]]]:
        """(packets, bytes) sealed per installed EncapState and opened per DecapSlot, keyed by
        id() of the state or slot (the peers table of status)."""
        sent: dict[int, tuple[int, int]] = {}
        for key, pid in self._path_ids.items():
            found = self.engine.path_state(pid)
            if found is not None:
                sent[key] = (int(found[1]), int(found[2]))
        received: dict[int, tuple[int, int]] = {}
        for key, sid in self._slot_ids.items():
            found = self.engine.slot_state(sid)
            if found is not None:
                received[key] = (int(found[0]), int(found[1]))
        return sent, received

    # ------------------------------------------------------------------ policy

    def set_policy(
        self,
        policy: NodePolicy | None,
        now: float,
        max_flows: int = MAX_FLOWS,
        log_size: int = FLOW_LOG_SIZE,
    ) -> None:
        """Enforce `policy` in the engine (None: no policy, allow everything). Flows the new
        rules still allow survive the change."""
        if policy is None:
            self.engine.clear_policy()
            self._rule_names.clear()
        else:
            self.engine.set_policy(
                policy.version,
                engine_rules(policy.egress),
                engine_rules(policy.ingress),
                now,
                max_flows=max_flows,
                log_size=log_size,
            )
            # The flow log outlives a policy update: keep the rule names of the versions in it.
            logged = {entry[1] for entry in self.engine.read_flow_log()}
            self._rule_names = {k: v for k, v in self._rule_names.items() if k[0] in logged}
            for direction, rules in (("egress", policy.egress), ("ingress", policy.ingress)):
                for rule in rules:
                    self._rule_names[(policy.version, direction, rule.id)] = rule.name
        self.policy = policy

    def flow_log(self) -> list[FlowLogEntry]:
        return flow_log_entries(self.engine.read_flow_log(), self._rule_names)

    def policy_counters(self, now: float) -> tuple[PolicyCounters, int, int] | None:
        """(counters, live flows, table bound) from the engine, or None without a policy."""
        stats = self.engine.policy_stats(now)
        if stats is None:
            return None
        egress, ingress = stats["rules"]
        default_egress, default_ingress = stats["default_deny"]
        counters = PolicyCounters(
            rules=([RuleCounters(*c) for c in egress], [RuleCounters(*c) for c in ingress]),
            default_deny=(RuleCounters(*default_egress), RuleCounters(*default_ingress)),
            malformed=stats["malformed"],
            revoked=stats["revoked"],
        )
        return counters, stats["flows"], stats["max_flows"]

    def policy_status(self, now: float) -> dict[str, Any]:
        found = self.policy_counters(now)
        if found is None or self.policy is None:
            return policy_status(None, PolicyCounters(), [], 0, 0, now, "c")
        counters, flows, max_flows = found
        return policy_status(self.policy, counters, self.flow_log(), flows, max_flows, now, "c")
