"""The hard key limits (lisp.crypto REJECT_AFTER_*), in memory: a key that sealed 2**32 packets, or
whose peer never answered a rekey for three rekey periods, seals nothing more; the mapping stays
(the mapping system may be down) and the next keyed probe brings a fresh key (issue 12, LOW: the
limits were defined, never enforced)."""

from __future__ import annotations

import os

import pytest

from lisp.crypto import CS_AES128_GCM, REJECT_AFTER_COUNTER
from mesh import fastpath
from mesh.keys import data_header
from tests.unit import test_xtr_memory as memory
from tests.unit.test_xtr_memory import MakeNode, Node, Wire, ipv4_packet, joined, rloc

mesh = memory.mesh
pki = memory.pki


def _send(wire: Wire, node: Node, payload: bytes) -> bytes:
    packet = ipv4_packet("10.1.1.1", "10.1.2.1", payload)
    node.xtr.now = wire.now
    node.xtr.inside_packet(packet)
    wire.pump()
    return packet


def test_a_key_past_its_packet_limit_seals_nothing_more(mesh: tuple[Wire, MakeNode]) -> None:
    wire, _ = mesh
    n1, n2 = joined(mesh, 1, 2)
    _send(wire, n1, b"first")
    (state,) = n1.xtr.ctx.keys.encap.values()
    state.counter = REJECT_AFTER_COUNTER  # as if it had sealed 2**32 packets
    _send(wire, n1, b"one too many")
    assert n2.inside[-1][28:] == b"first"
    assert n1.status()["drops"]["key-exhausted"] == 1
    wire.tick(0.1)  # the key is dropped; the rekey it is due for probes with a new one
    assert state not in n1.xtr.ctx.keys.encap.values()
    assert n1.xtr.ctx.stats["keys-expired"] == 1
    assert _send(wire, n1, b"under a new key") == n2.inside[-1]
    (fresh,) = n1.xtr.ctx.keys.encap.values()
    assert fresh.key != state.key and fresh.counter == 1


def test_a_key_its_peer_never_replaced_expires_after_three_rekeys(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, make = mesh
    n1, n2 = make(1, rekey_after_seconds=10), make(2, rekey_after_seconds=10)
    wire.tick()
    _send(wire, n1, b"first")
    (state,) = n1.xtr.ctx.keys.encap.values()
    wire.cut.add(rloc(2))  # n2 is unreachable: n1's rekeys go unanswered
    paths = n1.xtr.path_table
    wire.run(9.0, step=0.5)
    assert list(paths.entry_encap.values()) == [state]  # still sealing: make-before-break
    # (Unused since, the key would go at the second rekey already: idle mappings are not
    # rekeyed, test_idle_probing; three periods is the limit for a key in use.)
    wire.run(22.0, step=0.5)
    assert paths.entry_encap == {}  # 3 rekey periods old: it seals nothing more
    (entry,) = n1.status()["map_cache"]  # the mapping stays (the map-server may be down too)
    assert entry["prefix"] == "10.1.2.0/24"
    wire.cut.clear()
    wire.run(10.0, step=0.5)  # the next packet (or rekey) probes n2 with a fresh key
    assert _send(wire, n1, b"after") == n2.inside[-1]


@pytest.mark.skipif(not fastpath.available(), reason="mesh._fastpath is not built")
def test_the_engine_refuses_to_seal_past_the_limit() -> None:
    from mesh import _fastpath  # type: ignore[attr-defined]

    engine = _fastpath.Engine(-1, False, 0)
    engine.set_path(1, CS_AES128_GCM, os.urandom(16), os.urandom(4), data_header(0, 1),
                    REJECT_AFTER_COUNTER - 1)  # fmt: skip
    assert engine.seal_one(1, b"\x45" + bytes(27))  # the last counter this key may use
    with pytest.raises(RuntimeError, match="seal failed"):
        engine.seal_one(1, b"\x45" + bytes(27))
    assert engine.stats()["key-exhausted"] == 0  # seal_one (tests) counts nothing
