"""Interface-name shortening and namespace naming (no root needed)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from netlab import naming

IFNAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=60)


@given(IFNAME)
def test_shortened_names_fit_and_are_deterministic(name: str) -> None:
    short = naming.shorten_ifname(name)
    assert len(short.encode()) <= 15
    assert short == naming.shorten_ifname(name)
    if len(name) <= 15:
        assert short == name


@given(IFNAME, IFNAME)
def test_long_names_sharing_a_head_do_not_collide(a: str, b: str) -> None:
    head = "uplink-to-the-"
    x, y = head + a, head + b
    if x != y:
        # 16 bits of hash: a collision is possible in theory, never for these short suffixes
        # in practice; hypothesis would find one if the hash were not mixed in.
        assert naming.shorten_ifname(x) != naming.shorten_ifname(y) or len(x) <= 15


def test_readable_head_is_kept() -> None:
    assert naming.shorten_ifname("to-wifi-access-point").startswith("to-wifi-ac")


def test_namespace_names() -> None:
    assert naming.ns_name("clab", "lab", "r1") == "clab-lab-r1"
    assert naming.ns_name("", "lab", "r1") == "r1"
    assert naming.ns_name("__lab-name", "lab", "r1") == "lab-r1"
    assert naming.mgmt_ns_name("clab", "lab") == "clab-lab--mgmt"


def test_bad_interface_names() -> None:
    for bad in ("", ".", "..", "a/b", "a b", "a:b", "é"):
        assert naming.ifname_problem(bad) is not None
    assert naming.ifname_problem("eth1") is None
