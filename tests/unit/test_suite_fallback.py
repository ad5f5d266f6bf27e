"""An ETR that does not run the offered cipher suite still answers, without a Security-Key
(RFC 8061 §5; issue 16 item 4), and the ITR falls back by its policy: no path and a counter by
default, plaintext only with `security.plaintext_fallback`."""

from __future__ import annotations

from lisp import MapReply, decode_control
from lisp.crypto import packet_key_id
from tests.unit import test_xtr_memory as memory
from tests.unit.test_xtr_memory import CONTROL_PORT, DATA_PORT, MakeNode, Wire, ipv4_packet, rloc

pki = memory.pki
mesh = memory.mesh
CHACHA = "chacha20-poly1305"


def _replies_to(wire: Wire, address: str) -> list[MapReply]:
    found = []
    for _source, dest, payload in wire.seen:
        if dest[0] == address and dest[1] == CONTROL_PORT and payload[0] >> 4 == 2:
            message = decode_control(payload)
            assert isinstance(message, MapReply)
            found.append(message)
    return found


def test_an_etr_of_another_suite_answers_without_a_key_and_the_itr_refuses(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, make = mesh
    n1, n2 = make(1), make(2, cipher_suite=CHACHA)
    wire.tick()
    n1.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.2.1"))
    wire.pump()
    assert n2.xtr.ctx.stats["kx-answered-without-key"] == 1
    assert n2.xtr.ctx.drops["kx-cipher-mismatch"] == 1
    (reply,) = _replies_to(wire, rloc(1))
    (record,) = reply.records
    assert [str(r.address) for r in record.rlocs] == [rloc(2)]  # a plain RLOC: no key LCAF
    assert n1.xtr.ctx.drops["peer-without-encryption"] == 1
    assert n1.xtr.path_table.paths == {} and wire.to(rloc(2), DATA_PORT) == []


def test_with_plaintext_fallback_both_sides_carry_plaintext(mesh: tuple[Wire, MakeNode]) -> None:
    wire, make = mesh
    n1 = make(1, plaintext_fallback=True)
    n2 = make(2, cipher_suite=CHACHA, plaintext_fallback=True)
    wire.tick()
    packet = ipv4_packet("10.1.1.1", "10.1.2.1")
    n1.xtr.inside_packet(packet)
    wire.pump()
    assert n1.xtr.ctx.stats["kx-fallback-plaintext"] == 1
    assert n2.inside == [packet]
    (sent,) = wire.to(rloc(2), DATA_PORT)
    assert packet_key_id(sent) == 0
    # Plaintext from an RLOC that never fell back stays refused.
    forged = sent[:8] + ipv4_packet("10.1.3.1", "10.1.2.1")
    wire.queue.append(((rloc(3), DATA_PORT), (rloc(2), DATA_PORT), forged))
    wire.pump()
    assert n2.inside == [packet] and n2.xtr.ctx.drops["plaintext-refused"] == 1


def test_lispers_trigger_probe_is_answered_for_the_prefix_in_its_source_eid(
    mesh: tuple[Wire, MakeNode],
) -> None:
    """lispers.net's trigger RLOC-probe (lisp-wire.md §2.1): the probed prefix in the Source-EID
    field, the EID-record AFI 0 / mask 0. It is answered as a probe of our database-mapping."""
    from ipaddress import ip_address

    from lisp import MapRequest, RequestRecord
    from lisp.address import NO_ADDRESS

    wire, make = mesh
    n1, n2 = make(1), make(2)
    wire.tick()
    n1.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.2.1"))
    wire.pump()  # n2 now holds n1's key: it answers n1's unsigned probes
    probe = MapRequest(
        nonce=0x1122334455667788,
        itr_rlocs=(ip_address(rloc(1)),),
        records=(RequestRecord(NO_ADDRESS, 0),),
        source_eid=ip_address("10.1.2.0"),
        probe=True,
    )
    wire.queue.append(((rloc(1), CONTROL_PORT), (rloc(2), CONTROL_PORT), probe.encode()))
    wire.pump()
    (reply,) = [r for r in _replies_to(wire, rloc(1)) if r.nonce == probe.nonce]
    assert reply.probe
    (record,) = reply.records
    assert (str(record.eid), record.mask_len) == ("10.1.2.0", 24)
    assert n2.xtr.ctx.drops["map-request-not-ours"] == 0


def test_the_xtr_id_is_128_random_bits(mesh: tuple[Wire, MakeNode]) -> None:
    _wire, make = mesh
    ids = [make(i).xtr.registrar.xtr_id for i in (1, 2)]
    for xtr_id in ids:
        raw = xtr_id.to_bytes(16, "big")
        assert raw[:8] != raw[8:] and xtr_id >> 64 != 0
    assert ids[0] != ids[1]
