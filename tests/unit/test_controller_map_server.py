"""The embedded map-server: one site per node; replacing the sites withdraws what a removed
site registered and keeps the rest (lisp.map_server.MapServer.replace_sites)."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

from lisp import EidRecord, MapRegister, RlocRecord
from lisp.auth import sign
from lisp.map_server import MapServer, Site


def _register(ms: MapServer, prefix: str, key: bytes, nonce: int, now: float = 0.0) -> None:
    net = ip_network(prefix)
    record = EidRecord(net.network_address, net.prefixlen, (RlocRecord(ip_address("192.0.2.1")),))
    raw = sign(MapRegister(nonce=nonce, records=(record,), want_map_notify=True).encode(), key)
    ms.handle(raw, ("192.0.2.1", 4342), now)


def _site(name: str, prefix: str, key: bytes) -> Site:
    return Site(name, {0: key}, ((0, ip_network(prefix)),))


def test_replace_sites_withdraws_only_removed_sites() -> None:
    a, b = _site("a", "10.250.0.0/24", b"key-a-key-a"), _site("b", "10.250.1.0/24", b"key-b-key-b")
    ms = MapServer([a, b])
    _register(ms, "10.250.0.0/24", b"key-a-key-a", 1)
    _register(ms, "10.250.1.0/24", b"key-b-key-b", 2)
    assert ms.registration_count() == 2
    withdrawn = ms.replace_sites([_site("a", "10.250.0.0/24", b"new-key-a-1")], 1.0)
    assert [r.site.name for r in withdrawn] == ["b"]
    assert ms.lookup(ip_address("10.250.1.1")) is None
    assert ms.lookup(ip_address("10.250.0.1")) is not None
    # The kept site uses its new key from now on; b cannot register any more.
    _register(ms, "10.250.0.0/24", b"key-a-key-a", 3)
    assert ms.counters["bad-auth"] == 1
    _register(ms, "10.250.0.0/24", b"new-key-a-1", 4)
    _register(ms, "10.250.1.0/24", b"key-b-key-b", 5)
    assert ms.counters["prefix-not-allowed"] == 1
    assert ms.counters["withdrawn"] == 1


def test_a_bad_site_set_changes_nothing() -> None:
    a = _site("a", "10.250.0.0/24", b"key-a-key-a")
    ms = MapServer([a])
    _register(ms, "10.250.0.0/24", b"key-a-key-a", 1)
    try:
        ms.replace_sites([a, _site("a", "10.250.3.0/24", b"x" * 10)], 1.0)
    except ValueError:
        pass
    else:
        raise AssertionError("duplicate site names must be refused")
    assert ms.registration_count() == 1 and ms.sites == (a,)


def test_embedded_map_server_has_one_site_per_live_node() -> None:
    from ipaddress import IPv4Network, IPv6Network

    from controller_api.embedded_ms import EmbeddedMapServer
    from controller_api.store import NodeRow

    def node(name: str, slot: int, revoked: bool) -> NodeRow:
        return NodeRow(
            name, name, slot, 0, IPv4Network(f"10.250.{slot}.0/24"),
            IPv6Network(f"fd00:1:0:{slot}::/64"), (), None, None, "", "", name, 0.0,
            f"site-key-{name}", "", 0.0, 1.0 if revoked else None, 0, "", 0, "", None, {}, {},
        )  # fmt: skip

    ms = EmbeddedMapServer("127.0.0.1", 0, 0, (IPv4Network("10.250.0.0/16"),
                                               IPv6Network("fd00:1::/48")))  # fmt: skip
    ms.set_nodes([node("a", 0, False), node("b", 1, True)])
    names = sorted(s.name for s in ms.core.sites)
    assert names == ["eid-pools", "node-a"]
    # A pool EID nobody registered: "not registered yet", never "not in the overlay".
    _register(ms.core, "10.250.0.0/24", b"site-key-a", 1)
    assert ms.core.registration_count() == 1
    assert ms.set_nodes([node("a", 0, True)]) == 1


def test_a_node_site_refuses_more_specifics_unless_allowed() -> None:
    """The attack: an enrolled node registers host routes (/32) inside its own /24 to flood the
    embedded map-server; its site takes its prefixes whole only, unless the knob allows more."""
    from ipaddress import IPv4Network, IPv6Network

    from controller_api.embedded_ms import EmbeddedMapServer
    from controller_api.store import NodeRow

    row = NodeRow(
        "a", "a", 0, 0, IPv4Network("10.250.0.0/24"), IPv6Network("fd00:1:0:0::/64"), (), None,
        None, "", "", "a", 0.0, "site-key-a", "", 0.0, None, 0, "", 0, "", None, {}, {},
    )  # fmt: skip
    pools = (IPv4Network("10.250.0.0/16"), IPv6Network("fd00:1::/48"))
    strict = EmbeddedMapServer("127.0.0.1", 0, 0, pools)
    strict.set_nodes([row])
    for n in range(1, 4):
        _register(strict.core, f"10.250.0.{n}/32", b"site-key-a", n)
    assert strict.core.registration_count() == 0
    assert strict.core.counters["prefix-not-allowed"] == 3
    _register(strict.core, "10.250.0.0/24", b"site-key-a", 9)  # the whole prefix: fine
    assert strict.core.registration_count() == 1
    lenient = EmbeddedMapServer("127.0.0.1", 0, 0, pools, node_more_specifics=True)
    lenient.set_nodes([row])
    _register(lenient.core, "10.250.0.1/32", b"site-key-a", 1)
    assert lenient.core.registration_count() == 1
