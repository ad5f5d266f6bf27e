"""The lispers.net profile wired per peer (issue 16 item 3; mesh.lispers_peer): key exchange in
the ITR's suite without signatures, lispers.net's KDF and framing on the wire (the framing of
lisp/lispers_profile.py, which reproduces its golden vector), keyed probes only."""

from __future__ import annotations

from ipaddress import ip_address

from lisp import EncapsulatedControl, MapReply, MapRequest, RequestRecord, decode_control
from lisp.crypto import EcdhKeyPair
from lisp.crypto_suites import CS_AES128_CBC_SHA256, CS_AES128_GCM
from lisp.kx_lcaf import extract_security
from lisp.lcaf import AfiList, SecurityKey
from lisp.lispers_profile import LispersCipher, lispers_keys
from mesh.keys import data_header
from tests.unit import test_xtr_memory as memory
from tests.unit.test_xtr_memory import CONTROL_PORT, DATA_PORT, MakeNode, Wire, ipv4_packet, rloc

pki = memory.pki
mesh = memory.mesh
LISPERS = "10.77.0.99"  # a lispers.net xTR, played by the test


def test_two_nodes_using_the_profile_with_each_other_speak_lispers_framing(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, make = mesh
    n1 = make(1, lispers_peers=[f"{rloc(2)}/32"])
    n2 = make(2, lispers_peers=[f"{rloc(1)}/32"])
    wire.tick()
    packet = ipv4_packet("10.1.1.1", "10.1.2.1")
    n1.xtr.inside_packet(packet)
    wire.pump()
    assert n2.inside == [packet]
    (sent,) = wire.to(rloc(2), DATA_PORT)
    # lispers.net's own framing and KDF open it: ITR epoch key with the ETR's key.
    encrypt_key, icv_key = lispers_keys(n1.xtr.ctx.keys.epoch.pair, n2.xtr.ctx.keys.etr_pair.public)
    assert LispersCipher(CS_AES128_GCM, encrypt_key, icv_key).open(sent) == packet
    assert sent[:8] == data_header(0, 1)
    # Probes to a lispers.net RLOC are keyed and carry one ITR-RLOC (no plain duplicate).
    wire.run(1.0)
    probes = [decode_control(p) for p in wire.to(rloc(2), CONTROL_PORT)]
    probes = [p for p in probes if isinstance(p, MapRequest) and p.probe]
    assert probes and all(len(p.itr_rlocs) == 1 for p in probes)
    assert all(extract_security(p.itr_rlocs[0])[0] is not None for p in probes)
    assert n2.inside[-1] == packet and n1.xtr.ctx.stats["lispers-key-exchanges"] >= 1


def test_a_lispers_itr_offering_cs2_gets_our_key_and_its_cbc_packets_open(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, make = mesh
    n2 = make(2, lispers_peers=[f"{LISPERS}/32"])
    wire.tick()
    itr = EcdhKeyPair.generate()
    offer = SecurityKey(CS_AES128_CBC_SHA256, (itr.public,), ip_address(LISPERS))
    request = MapRequest(
        nonce=0xAABBCCDD00112233,
        itr_rlocs=(offer,),
        records=(RequestRecord(ip_address("10.1.2.0"), 24),),
        source_eid=ip_address("10.99.0.1"),
        probe=True,
    )
    wire.queue.append(((LISPERS, CONTROL_PORT), (rloc(2), CONTROL_PORT), request.encode()))
    wire.pump()
    (raw,) = [p for _, d, p in wire.seen if d[0] == LISPERS]
    reply = decode_control(raw)
    assert isinstance(reply, MapReply) and reply.nonce == request.nonce
    (record,) = reply.records
    address = record.rlocs[0].address
    assert isinstance(address, AfiList)  # lispers.net's layout: {RLOC, Security-Key}, no proof
    key, proof, ip = extract_security(address)
    assert key is not None and proof is None and str(ip) == rloc(2)
    assert key.cipher_suite == CS_AES128_CBC_SHA256
    encrypt_key, icv_key = lispers_keys(itr, key.keys[0])
    inner = ipv4_packet("10.99.0.1", "10.1.2.1", b"from lispers.net")
    sealed = LispersCipher(CS_AES128_CBC_SHA256, encrypt_key, icv_key).seal(
        data_header(0, 1), inner, bytes(range(16))
    )
    wire.queue.append(((LISPERS, DATA_PORT), (rloc(2), DATA_PORT), sealed))
    wire.queue.append(((LISPERS, DATA_PORT), (rloc(2), DATA_PORT), sealed))  # no replay window
    wire.pump()
    assert n2.inside == [inner, inner]


def test_without_the_opt_in_a_lispers_key_is_refused(mesh: tuple[Wire, MakeNode]) -> None:
    wire, make = mesh
    n2 = make(2)
    wire.tick()
    offer = SecurityKey(CS_AES128_CBC_SHA256, (EcdhKeyPair.generate().public,), ip_address(LISPERS))
    request = MapRequest(
        nonce=7,
        itr_rlocs=(offer,),
        records=(RequestRecord(ip_address("10.1.2.0"), 24),),
        source_eid=ip_address("10.99.0.1"),
    )
    wire.queue.append(((LISPERS, CONTROL_PORT), (rloc(2), CONTROL_PORT), request.encode()))
    wire.pump()
    assert n2.xtr.ctx.stats.get("lispers-key-exchanges", 0) == 0
    assert not any(k[0] == LISPERS for k in n2.xtr.ctx.keys.decap)


def test_with_lispers_peers_our_keyed_requests_do_not_repeat_our_rloc(
    mesh: tuple[Wire, MakeNode],
) -> None:
    """The resolve through the map-resolver may reach a lispers.net ETR, which would delete our
    key on seeing our RLOC again as a plain ITR-RLOC; a lispmesh ETR still verifies it."""
    wire, make = mesh
    n1 = make(1, lispers_peers=[f"{LISPERS}/32"])
    n2 = make(2)  # an ordinary, authenticated peer
    wire.tick()
    packet = ipv4_packet("10.1.1.1", "10.1.2.1")
    n1.xtr.inside_packet(packet)
    wire.pump()
    assert n2.inside == [packet]
    assert n2.xtr.ctx.drops["kx-auth-failed"] == 0
    sent = [p for s, d, p in wire.seen if s[0] == rloc(1) and d == ("10.77.0.1", CONTROL_PORT)]
    ecms = [m for m in map(decode_control, sent) if isinstance(m, EncapsulatedControl)]
    (request,) = [m for m in (decode_control(e.message) for e in ecms) if isinstance(m, MapRequest)]
    assert len(request.itr_rlocs) == 1  # the key (and its proof), our RLOC inside it only
    key, proof, ip = extract_security(request.itr_rlocs[0])
    assert key is not None and proof is not None and str(ip) == rloc(1)
