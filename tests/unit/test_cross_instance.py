"""Cross-instance spoofing (issue 12 finding 2), performed against real xTRs in memory: a node of
instance-id 7, certified for the same prefix as an instance-0 node (the controller hands the same
prefix out in each instance), takes a key from an instance-0 ETR and sends as that prefix."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path

from lisp import MapRequest, RequestRecord
from lisp.crypto import EcdhKeyPair, PacketCipher, derive_data_key
from lisp.kx_lcaf import build_request_itr_rloc
from mesh.keys import data_header
from mesh.kx import KxAuthority, requested_eids
from mesh.xtr import CONTROL_PORT, DATA_PORT
from tests.lab_identities import provision_lab_identities
from tests.unit import test_xtr_memory as memory
from tests.unit.test_xtr_memory import MakeNode, Wire, ipv4_packet, joined, rloc

pki = memory.pki
mesh = memory.mesh
ATTACKER = rloc(7)


def test_a_node_of_another_instance_cannot_pose_as_the_same_prefix_here(
    mesh: tuple[Wire, MakeNode], pki: dict[str, Path]
) -> None:
    wire, _ = mesh
    n1, n2 = joined(mesh, 1, 2)
    # x7: enrolled with the mesh CA, in instance-id 7, holding n1's prefix there.
    (x7,) = provision_lab_identities(
        pki["n1"].parent, "memory-ca", {"x7": [(7, "10.1.1.0/24")]}
    ).values()
    kx = KxAuthority.from_files("x7", str(x7 / "node.key"), str(x7 / "node.crt"),
                                str(x7 / "ca.crt"))  # fmt: skip
    suite = n2.xtr.ctx.keys.cipher_suite
    pair = EcdhKeyPair.generate()
    records = (RequestRecord(ip_address("10.1.2.0"), 24),)  # n2's EID, in instance 0
    proof = kx.request_proof(9, suite, 1, pair.public, (ip_address(ATTACKER),),
                             requested_eids(records))  # fmt: skip
    itr = build_request_itr_rloc(suite, pair.public, ip_address(ATTACKER), proof)
    request = MapRequest(nonce=9, itr_rlocs=(itr,), records=records, probe=True)
    wire.queue.append(((ATTACKER, CONTROL_PORT), (rloc(2), CONTROL_PORT), request.encode()))
    wire.pump()
    assert n2.xtr.ctx.drops["kx-wrong-instance"] == 1
    assert not [p for _, d, p in wire.seen if d[0] == ATTACKER]  # no key handed out
    # x7 seals a packet "from" n1's EID with the key it would have had, with no I bit.
    key = derive_data_key(pair, n2.xtr.ctx.keys.etr_pair.public, suite)
    spoofed = ipv4_packet("10.1.1.5", "10.1.2.1", b"spoofed")
    sealed = PacketCipher(suite, key, 1).seal(data_header(0, 1), spoofed, 1)
    wire.queue.append(((ATTACKER, DATA_PORT), (rloc(2), DATA_PORT), sealed))
    wire.pump()
    assert spoofed not in n2.inside
    assert n2.xtr.ctx.drops["no-key"] == 1
    del n1
