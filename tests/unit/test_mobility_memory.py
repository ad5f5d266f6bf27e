"""Mobility in memory (mesh.mobility): a node's uplink changes address while it talks to a peer;
it re-registers, re-keys from the new address, SMRs the peer, and traffic flows both ways again
without either side's ITR being restarted."""

from __future__ import annotations

from ipaddress import ip_address

import tests.unit.test_xtr_memory as memory
from lisp import MapRequest, RequestRecord
from mesh.xtr import CONTROL_PORT
from tests.unit.test_xtr_memory import MakeNode, Node, Wire, ipv4_packet, joined, rloc

pki = memory.pki  # the module's identities (a fixture)
mesh = memory.mesh
NEW = "10.77.0.61"


def _send(wire: Wire, node: Node, src: str, dst: str, payload: bytes) -> bytes:
    packet = ipv4_packet(src, dst, payload)
    node.xtr.now = wire.now
    node.xtr.inside_packet(packet)
    wire.pump()
    return packet


def _move(wire: Wire, node: Node, address: str) -> None:
    """What the runtime does when the uplink's address changes: the old address is gone."""
    local = node.xtr.locals[0]
    del wire.nodes[local.key]
    wire.cut.add(local.key)
    node.xtr.now = wire.now
    node.xtr.readdress(local, ip_address(address))
    wire.nodes[address] = node
    wire.pump()


def test_a_moved_node_is_reached_at_its_new_address_both_ways(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, _ = mesh
    n1, n2 = joined(mesh, 1, 2)
    assert _send(wire, n2, "10.1.2.1", "10.1.1.1", b"before") in n1.inside
    assert _send(wire, n1, "10.1.1.1", "10.1.2.1", b"back") in n2.inside
    _move(wire, n1, NEW)
    wire.run(3.0)  # the map-server confirms, the SMRs go out, n2 asks the mapping system again
    assert wire.ms.registration_count() == 2
    assert n2.xtr.ctx.stats["smr-re-resolved"] >= 1, n2.xtr.ctx.drops
    (entry,) = [e for e in n2.status()["map_cache"] if e["prefix"].startswith("10.1.1.0")]
    assert [r["address"] for r in entry["rlocs"]] == [NEW], entry
    assert _send(wire, n2, "10.1.2.1", "10.1.1.1", b"after") in n1.inside
    assert _send(wire, n1, "10.1.1.1", "10.1.2.1", b"after-back") in n2.inside
    assert n1.status()["uplink_moves"] == [{"uplink": None, "from": rloc(1), "to": NEW}]
    # The peer took our key for the new address from the keyed probe (no SMR round needed).
    assert any(r == NEW for r, _ in n2.xtr.ctx.keys.decap)


def test_a_forged_smr_cannot_redirect_a_mapping(mesh: tuple[Wire, MakeNode]) -> None:
    """An SMR from a stranger naming n1's EIDs only makes n2 ask the mapping system again
    (rate-limited); the answer is n1's own, so the mapping keeps n1's RLOC."""
    wire, _ = mesh
    n1, n2 = joined(mesh, 1, 2)
    assert _send(wire, n2, "10.1.2.1", "10.1.1.1", b"before") in n1.inside
    forged = MapRequest(
        nonce=7,
        itr_rlocs=(ip_address("10.77.0.66"),),
        records=(RequestRecord(ip_address("10.1.1.0"), 24),),
        smr=True,
    )
    for _ in range(3):
        wire.queue.append((("10.77.0.66", CONTROL_PORT), (rloc(2), CONTROL_PORT), forged.encode()))
    wire.run(1.0)
    drops = n2.xtr.ctx.drops
    assert n2.xtr.ctx.stats["smr-re-resolved"] == 1 and drops["smr-rate-limited"] == 2
    (entry,) = [e for e in n2.status()["map_cache"] if e["prefix"].startswith("10.1.1.0")]
    assert [r["address"] for r in entry["rlocs"]] == [rloc(1)]
    assert _send(wire, n2, "10.1.2.1", "10.1.1.1", b"after") in n1.inside


def test_a_mapping_whose_rlocs_all_died_is_asked_for_again(mesh: tuple[Wire, MakeNode]) -> None:
    """The SMRs of a moved node are lost: its peer's probes find the old RLOC dead while
    traffic lasts, and the peer asks the mapping system again instead of waiting for the TTL."""
    wire, _ = mesh
    n1, n2 = joined(mesh, 1, 2)
    assert _send(wire, n2, "10.1.2.1", "10.1.1.1", b"before") in n1.inside
    n1.xtr.mobility.smr = lambda rloc: None  # every SMR is lost
    _move(wire, n1, NEW)
    for _ in range(30):
        _send(wire, n2, "10.1.2.1", "10.1.1.1", b"lost")
        wire.tick(0.1)
    assert n2.xtr.ctx.stats["smr-re-resolved"] == 0
    assert n2.xtr.ctx.stats["re-resolved-stranded"] >= 1
    assert _send(wire, n2, "10.1.2.1", "10.1.1.1", b"after") in n1.inside
