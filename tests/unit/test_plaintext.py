"""Plain RFC 9300 data (issue 16 item 1): with `security.encryption: false` the ITR sends KK = 0
and the ETR opens it, in both data paths; with encryption on, plaintext stays refused."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from lisp.crypto import packet_key_id
from mesh import _fastpath  # type: ignore[attr-defined]
from mesh.keys import data_header, plain_encap
from tests.unit import test_xtr_memory as memory
from tests.unit.test_xtr_memory import DATA_PORT, MakeNode, Wire, ipv4_packet, rloc

pki = memory.pki
mesh = memory.mesh


def test_plaintext_flows_both_ways_when_encryption_is_off(mesh: tuple[Wire, MakeNode]) -> None:
    wire, make = mesh
    n1, n2 = make(1, encryption=False), make(2, encryption=False)
    wire.tick()
    there, back = ipv4_packet("10.1.1.1", "10.1.2.1"), ipv4_packet("10.1.2.1", "10.1.1.1")
    n1.xtr.inside_packet(there)
    wire.pump()
    n2.xtr.inside_packet(back)
    wire.pump()
    assert n2.inside == [there] and n1.inside == [back]
    sent = wire.to(rloc(2), DATA_PORT)
    assert sent == [data_header(0, 0) + there]  # KK = 0, the inner packet in the clear
    assert n1.xtr.ctx.drops["no-path"] == 0


def test_plaintext_to_a_node_with_encryption_on_is_refused_and_counted(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, make = mesh
    n1, n2 = make(1, encryption=False), make(2)
    wire.tick()
    n1.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.2.1"))
    wire.pump()
    (sent,) = wire.to(rloc(2), DATA_PORT)
    assert packet_key_id(sent) == 0
    assert n2.inside == []
    assert n2.xtr.ctx.drops["plaintext-refused"] == 1


def test_an_encrypting_itr_never_falls_back_to_plaintext(mesh: tuple[Wire, MakeNode]) -> None:
    wire, make = mesh
    n1, _n2 = make(1), make(2, encryption=False)
    wire.tick()
    n1.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.2.1"))
    wire.pump()
    assert wire.to(rloc(2), DATA_PORT) == []
    assert n1.xtr.ctx.drops["peer-without-encryption"] >= 1


@pytest.fixture
def loopback() -> Iterator[tuple[socket.socket, socket.socket, int, int]]:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    try:
        yield receiver, sender, read_end, write_end
    finally:
        receiver.close()
        sender.close()
        os.close(read_end)
        os.close(write_end)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except BlockingIOError:
        return b""


@pytest.mark.parametrize("accept", [True, False])
def test_the_c_engine_opens_plaintext_only_with_encryption_off(
    loopback: tuple[socket.socket, socket.socket, int, int], accept: bool
) -> None:
    receiver, sender, read_end, write_end = loopback
    engine = _fastpath.Engine(write_end, False, 7)
    engine.set_plaintext(accept)
    inner = ipv4_packet("10.1.1.1", "10.1.2.1")
    sender.sendto(data_header(7, 0) + inner, receiver.getsockname())
    sender.sendto(data_header(8, 0) + inner, receiver.getsockname())  # another instance
    slow = engine.pump_outside(receiver.fileno(), 8)
    if accept:
        assert slow == [] and _read(read_end) == inner and _read(read_end) == b""
        assert engine.stats()["plain-opened"] == 1 and engine.stats()["wrong-instance"] == 1
    else:  # to Python, which refuses and counts it (mesh.xtr)
        assert len(slow) == 2 and _read(read_end) == b""


def test_the_c_engine_seals_a_plaintext_path_like_python() -> None:
    engine = _fastpath.Engine(-1, False, 0)
    state = plain_encap(1000, 0.0)
    engine.set_path(3, 0, state.key, state.salt, state.header, 0)
    inner = ipv4_packet("10.1.1.1", "10.1.2.1", b"x" * 300)
    assert engine.seal_one(3, inner) == state.seal(inner) == data_header(1000, 0) + inner
