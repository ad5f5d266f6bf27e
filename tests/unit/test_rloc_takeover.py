"""Decryption-slot takeover (issue 12 finding 10), performed against real xTRs in memory: an
enrolled node signs a key exchange that claims another node's RLOC. The ETR looks packets up by
(source RLOC, key-id), so taking that slot would cut the owner off; it must be refused."""

from __future__ import annotations

from ipaddress import ip_address

from lisp import MapRequest, RequestRecord
from lisp.crypto import EcdhKeyPair
from lisp.kx_lcaf import build_request_itr_rloc
from mesh.kx import requested_eids
from mesh.xtr import CONTROL_PORT
from tests.unit import test_xtr_memory as memory
from tests.unit.test_xtr_memory import MakeNode, Node, Wire, ipv4_packet, joined, rloc

pki = memory.pki
mesh = memory.mesh


def _send(wire: Wire, node: Node, payload: bytes) -> None:
    node.xtr.now = wire.now
    node.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.2.1", payload))
    wire.pump()


def _claim(wire: Wire, attacker: Node, victim_rloc: str, etr: str) -> None:
    """`attacker` signs (with its own, valid certificate) a keyed Map-Request for the ETR's EID
    whose only ITR-RLOC is `victim_rloc`, under the key-id the victim uses."""
    kx = attacker.xtr.ctx.kx
    assert kx is not None
    suite = attacker.xtr.ctx.keys.cipher_suite
    records = (RequestRecord(ip_address("10.1.2.0"), 24),)
    public = EcdhKeyPair.generate().public
    proof = kx.request_proof(7, suite, 1, public, (ip_address(victim_rloc),),
                             requested_eids(records))  # fmt: skip
    itr = build_request_itr_rloc(suite, public, ip_address(victim_rloc), proof)
    request = MapRequest(nonce=7, itr_rlocs=(itr,), records=records, probe=True)
    wire.queue.append(((rloc(3), CONTROL_PORT), (etr, CONTROL_PORT), request.encode()))
    wire.pump()


def test_an_enrolled_peer_cannot_take_over_another_peers_rloc(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, _ = mesh
    n1, n2, n3 = joined(mesh, 1, 2, 3)
    _send(wire, n1, b"before")
    assert n2.inside[-1][28:] == b"before"
    _claim(wire, n3, rloc(1), rloc(2))
    assert n2.xtr.ctx.drops["kx-rloc-taken"] == 1
    assert {d["peer"] for d in n2.status()["keys"]["decap"]} == {"n1"}
    _send(wire, n1, b"after")  # n1 is not cut off
    assert n2.inside[-1][28:] == b"after"
    assert n2.xtr.ctx.drops["decrypt-failure"] == 0


def test_an_rloc_silent_long_enough_may_move_to_another_node(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, _ = mesh
    n1, n2, n3 = joined(mesh, 1, 2, 3)
    _send(wire, n1, b"before")
    # n1 is gone for good and its address goes to n3 (DHCP): after the takeover delay, n3's
    # claim of that address is accepted.
    wire.cut.add(rloc(1))
    wire.now += 301  # the clock the wire hands the xTRs
    _claim(wire, n3, rloc(1), rloc(2))
    assert n2.xtr.ctx.drops["kx-rloc-taken"] == 0
    assert "n3" in {d["peer"] for d in n2.status()["keys"]["decap"]}
