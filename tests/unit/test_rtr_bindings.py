"""The RTR's NAT binding table and data-plane Info-Request framing (lisp.rtr_bindings)."""

from __future__ import annotations

import pytest

from lisp.address import DistinguishedName
from lisp.data_header import DataHeader
from lisp.errors import DecodeError
from lisp.info import InfoMessage
from lisp.rtr_bindings import Learned, Moved, NatBindings, frame, unframe

A_OUT = ("203.0.113.7", 40341)
M_OUT = ("198.51.100.9", 50000)


def test_data_plane_info_request_is_framed_as_lispers_net_does() -> None:
    info = InfoMessage(0xABC, eid=DistinguishedName("edge-1-eth1"))
    packet = frame(info)
    assert packet[:8] == bytes.fromhex("08000000ffffff00")  # I bit, instance-id 0xFFFFFF
    assert unframe(packet) == info
    data = DataHeader(instance_id=5).encode() + b"\x45" + bytes(19)
    assert unframe(data) is None  # ordinary data: not ours to read
    sealed = DataHeader(instance_id=0xFFFFFF, key_id=1).encode() + info.encode()
    for bad in (sealed, packet[:12], b"\x08\x00"):
        with pytest.raises(DecodeError):
            unframe(bad)


def test_learn_refresh_move_and_go_stale() -> None:
    table = NatBindings(stale_after=30.0)
    first = table.observe("a", "eth1", A_OUT, 0.0)
    assert isinstance(first, Learned) and first.binding.endpoint == A_OUT
    assert table.observe("a", "eth1", A_OUT, 10.0) is None  # a refresh
    moved = table.observe("a", "eth1", ("203.0.113.7", 41000), 20.0)  # the NAT rebound
    assert isinstance(moved, Moved) and moved.old == A_OUT
    assert moved.binding.first_seen == 0.0 and moved.binding.last_seen == 20.0
    found = table.lookup("a", 49.9)
    assert found is not None and found.endpoint == ("203.0.113.7", 41000)
    assert table.lookup("a", 50.0) is None  # 30 s without a refresh
    assert [b.node for b in table.expire(50.0)] == ["a"] and len(table) == 0
    # After staleness the next packet is a new binding, not a move from a forgotten one.
    table.observe("a", "eth1", A_OUT, 60.0)
    assert isinstance(table.observe("a", "eth1", M_OUT, 91.0), Learned)


def test_a_node_spoofing_anothers_endpoint_moves_only_its_own_binding() -> None:
    table = NatBindings()
    table.observe("a", "eth1", A_OUT, 0.0)
    table.observe("m", "eth1", M_OUT, 0.0)
    # m (authenticated with its own key) sends from a's outside address:port
    assert isinstance(table.observe("m", "eth1", A_OUT, 1.0), Moved)
    a = table.lookup("a", 2.0)
    assert a is not None and a.endpoint == A_OUT and a.last_seen == 0.0
    # and claiming a's name is impossible: the caller names the node it authenticated
    assert table.lookup("a", 2.0, uplink="eth1") == a


def test_lookup_prefers_the_freshest_uplink() -> None:
    table = NatBindings(stale_after=30.0)
    table.observe("a", "lte", ("10.9.0.1", 1), 0.0)
    table.observe("a", "wifi", ("10.8.0.1", 2), 5.0)
    assert table.lookup("a", 6.0).endpoint == ("10.8.0.1", 2)  # type: ignore[union-attr]
    assert table.lookup("a", 6.0, uplink="lte").endpoint == ("10.9.0.1", 1)  # type: ignore[union-attr]
    assert table.lookup("a", 31.0).endpoint == ("10.8.0.1", 2)  # type: ignore[union-attr]
    assert table.lookup("b", 1.0) is None


def test_memory_is_bounded_per_node_and_in_all() -> None:
    table = NatBindings(per_node=2, limit=3)
    for i, name in enumerate(("u1", "u2", "u3")):
        table.observe("a", name, ("10.0.0.1", 1000 + i), float(i))
    assert [row["uplink"] for row in table.status(3.0)] == ["u2", "u3"]  # u1 least recent
    table.observe("b", "eth1", ("10.0.0.2", 1), 4.0)
    assert table.observe("c", "eth1", ("10.0.0.3", 1), 5.0) is None  # full: refused, counted
    assert table.counters["table-full"] == 1 and table.lookup("c", 5.0) is None
    # a known node may still take a new uplink, at the cost of its own least recent one
    assert isinstance(table.observe("b", "eth2", ("10.0.0.2", 2), 6.0), Learned)
    assert len(table) == 3 and table.lookup("b", 6.0, uplink="eth1") is None
    assert table.lookup("a", 6.0) is not None
    assert table.status(6.0)[0]["endpoint"] == "10.0.0.1:1001"
