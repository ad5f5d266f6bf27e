"""The data path as one interface, and its portable Python implementation (the reference).

The xTR decides (which prefix goes to which RLOC with which key, which ITR keys open which
packets, which policy holds); a `DataPath` carries packets by those decisions. Two implement it:
`PythonDataPath` here, and `FastPath` in mesh.fastpath (the C engine, mesh/_fastpath.c). Nothing
outside the two asks which one runs; the xTR and the node runtime only call this interface:

    install_paths / install_decap   mirror the xTR's routes and decap keys (after each change)
    set_local                       our instance-id and EID prefixes: what opened packets must
                                    carry and be addressed to
    set_policy / policy_status      the network policy, enforced where packets are handled
    egress_check / ingress_check    the policy hooks the xTR calls itself (None: nothing to check,
                                    either no policy or the engine enforces it)
    send                            seal and send one inside packet on its path
    deliver                         open and deliver an outside packet that came through an RTR
                                    as if from `rloc`; False: not handled (no key here)
    decap_slot                      the key that opens an outside packet in Python (None: no key
                                    here; with the C engine every key lives in the engine)
    pump_inside / pump_outside      read a batch from the TUN / a data socket; what comes back
                                    is for the xTR's Python path (all of it, or the engine's misses)
    read_counters / drop_counts / traffic / stats   the engine's figures, for status and rekeying
    received_from                   RLOCs whose packets the engine opened since the last call
                                    (passive liveness: the xTR then need not probe them)
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from common.policy_format import NodePolicy
from lisp.crypto import CryptoError
from mesh.config import IpNetwork
from mesh.keys import DecapSlot
from mesh.policy import PolicyEngine
from mesh.xtr_types import Path, Transport

PathKey = tuple[int, IpNetwork]
PolicyHook = Callable[[bytes, float], str | None]  # (packet, now) -> drop reason or None
Traffic = tuple[dict[int, tuple[int, int]], dict[int, tuple[int, int]]]
TUN_READ_SIZE = 65536


class DataPath(Protocol):
    name: str  # "python" or "c", as status reports it
    egress_check: PolicyHook | None
    ingress_check: PolicyHook | None

    def install_paths(self, paths: Mapping[PathKey, Path]) -> None: ...
    def install_decap(self, decap: Mapping[tuple[str, int], DecapSlot]) -> None: ...
    def set_local(self, instance_id: int, prefixes: Sequence[IpNetwork]) -> None: ...
    def set_policy(self, policy: NodePolicy | None, now: float) -> None: ...
    def policy_status(self, now: float) -> dict[str, Any]: ...
    def send(self, path: Path, packet: bytes) -> bool: ...
    def deliver(self, packet: bytes, rloc: str) -> bool: ...
    def decap_slot(
        self, decap: Mapping[tuple[str, int], DecapSlot], rloc: str, key_id: int
    ) -> DecapSlot | None: ...
    def pump_inside(self, tun_fd: int, limit: int) -> list[bytes]: ...
    def pump_outside(
        self, sock: socket.socket, limit: int
    ) -> list[tuple[bytes, tuple[str, int]]]: ...
    def read_counters(self, now: float) -> None: ...
    def drop_counts(self) -> dict[str, int]: ...
    def traffic(self) -> Traffic | None: ...
    def stats(self) -> dict[str, int]: ...
    def received_from(self) -> set[str]: ...


class PythonDataPath:
    """The reference: seals with the xTR's EncapState, opens with its DecapSlots, checks the
    policy with mesh.policy's engine, reads and sends through the runtime's transport."""

    name = "python"

    def __init__(self, transport: Transport, now: float) -> None:
        self.transport = transport
        self.policy = PolicyEngine(None, now)
        self.egress_check: PolicyHook | None = None
        self.ingress_check: PolicyHook | None = None
        self.drops: Counter[str] = Counter()  # what this path counts itself

    # Keys and routes live in the xTR's own objects, which this path reads directly.
    def install_paths(self, paths: Mapping[PathKey, Path]) -> None:
        pass

    def install_decap(self, decap: Mapping[tuple[str, int], DecapSlot]) -> None:
        pass

    def set_local(self, instance_id: int, prefixes: Sequence[IpNetwork]) -> None:
        pass  # the xTR checks opened packets' instance-id and destination itself

    def set_policy(self, policy: NodePolicy | None, now: float) -> None:
        self.policy.replace_policy(policy, now)
        self.egress_check = self._egress if policy is not None else None
        self.ingress_check = self._ingress if policy is not None else None

    def policy_status(self, now: float) -> dict[str, Any]:
        return self.policy.status(now)

    def _egress(self, packet: bytes, now: float) -> str | None:
        return None if self.policy.check(packet, "egress", now).allowed else "denied"

    def _ingress(self, packet: bytes, now: float) -> str | None:
        return None if self.policy.check(packet, "ingress", now).allowed else "denied"

    def send(self, path: Path, packet: bytes) -> bool:
        try:
            sealed = path.encap.seal(packet)
        except CryptoError:  # the key's hard limit (lisp.crypto.REJECT_AFTER_COUNTER)
            self.drops["key-exhausted"] += 1
            return True
        if path.relay is not None:
            sealed = path.relay + sealed
        self.transport.send_data(path.local, sealed, path.remote)
        return True

    def deliver(self, packet: bytes, rloc: str) -> bool:
        return False  # the keys are the xTR's: it opens relayed packets itself

    def decap_slot(
        self, decap: Mapping[tuple[str, int], DecapSlot], rloc: str, key_id: int
    ) -> DecapSlot | None:
        return decap.get((rloc, key_id))

    def pump_inside(self, tun_fd: int, limit: int) -> list[bytes]:
        packets: list[bytes] = []
        for _ in range(limit):
            try:
                packets.append(os.read(tun_fd, TUN_READ_SIZE))
            except BlockingIOError:
                break
            except OSError:
                if not packets:
                    raise
                break  # hand over what was read; the error shows at the next readiness
        return packets

    def pump_outside(self, sock: socket.socket, limit: int) -> list[tuple[bytes, tuple[str, int]]]:
        packets: list[tuple[bytes, tuple[str, int]]] = []
        for _ in range(limit):
            try:
                packet, source = sock.recvfrom(65535)
            except BlockingIOError:
                break
            except OSError:
                if not packets:
                    raise
                break
            packets.append((packet, (source[0], source[1])))
        return packets

    def read_counters(self, now: float) -> None:
        pass

    def drop_counts(self) -> dict[str, int]:
        return dict(self.drops)

    def traffic(self) -> Traffic | None:
        return None  # packets are counted in the keys themselves; bytes are not counted

    def stats(self) -> dict[str, int]:
        return {}  # the xTR counts what this path does in its own stats and drops

    def received_from(self) -> set[str]:
        return set()  # the xTR opens these packets itself and notes their source
