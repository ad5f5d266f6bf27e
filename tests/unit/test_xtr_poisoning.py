"""Map-cache poisoning (issue 12 finding 3), performed against real xTRs in memory: anyone who
sees an ITR's Map-Requests knows their nonces, so forged replies carry the right nonce here."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

from lisp import Action, EidRecord, MapReply, RlocRecord
from lisp.records import TTL_UNLIMITED
from mesh.xtr import CONTROL_PORT
from tests.unit import test_xtr_memory as memory
from tests.unit.test_xtr_memory import MS, MakeNode, Node, Wire, ipv4_packet, joined, rloc

ATTACKER = "10.77.0.99"
pki = memory.pki  # the fixtures: a lab CA per module, and the in-memory mesh
mesh = memory.mesh


def _pending(node: Node, kind: str) -> int:
    nonces = [n for n, p in node.xtr.resolver.pending.items() if p.kind == kind]
    assert nonces, f"no outstanding {kind}"
    return nonces[-1]


def _inject(wire: Wire, source: str, node: Node, reply: MapReply) -> None:
    wire.queue.appendleft(((source, CONTROL_PORT), (rloc(1), CONTROL_PORT), reply.encode()))


def _eid(node: Node, text: str) -> Any:
    return node.xtr.ctx.eid_address(ip_address(text))


def test_a_peer_cannot_black_hole_a_prefix_with_a_negative_reply(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, _ = mesh
    n1, _n2, n3 = joined(mesh, 1, 2, 3)
    n1.xtr.now = wire.now
    packet = ipv4_packet("10.1.1.1", "10.1.3.1")
    n1.xtr.inside_packet(packet)  # n1 resolves n3's EID; the request is on the wire
    nonce = _pending(n1, "resolve")
    # n2 (an enrolled peer, or anyone on the path) answers first: "nothing lives in 10.1.0.0/16,
    # drop it", with a TTL that never expires.
    forged = EidRecord(_eid(n1, "10.1.0.0"), 16, (), TTL_UNLIMITED, Action.DROP_NO_REASON)
    _inject(wire, rloc(2), n1, MapReply(nonce, (forged,)))
    wire.pump()
    assert n1.xtr.ctx.drops["negative-reply-not-from-resolver"] == 1
    assert n3.inside == [packet]  # the real answer still won: the packet got through
    (entry,) = n1.status()["map_cache"]
    assert entry["prefix"] == "10.1.3.0/24" and entry["in_use"] == rloc(3)


def test_a_negative_reply_from_the_resolver_must_cover_what_was_asked(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, _ = mesh
    (n1,) = joined(mesh, 1)
    n1.xtr.now = wire.now
    n1.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.9.1"))
    nonce = _pending(n1, "resolve")
    # Spoofed from the resolver's address, but about a prefix n1 never asked for.
    other = EidRecord(_eid(n1, "10.1.2.0"), 24, (), TTL_UNLIMITED, Action.DROP_NO_REASON)
    _inject(wire, MS, n1, MapReply(nonce, (other,)))
    wire.pump()  # then the map-server's own negative reply for 10.1.9.1
    assert n1.xtr.ctx.drops["map-reply-not-asked"] == 1
    (entry,) = n1.status()["map_cache"]
    assert entry["prefix"] != "10.1.2.0/24" and entry["rlocs"] == []
    # A negative entry is kept at most 15 minutes, whatever the reply said.
    assert entry["ttl_remaining"] <= 15 * 60


def test_an_unsigned_probe_reply_cannot_move_a_prefix(mesh: tuple[Wire, MakeNode]) -> None:
    wire, _ = mesh
    n1, n2 = joined(mesh, 1, 2)
    n1.xtr.now = wire.now
    n1.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.2.1"))
    wire.pump()
    assert n1.status()["map_cache"][0]["in_use"] == rloc(2)
    # n1 probes n2's RLOC without a key (the liveness probe); the attacker answers first,
    # pointing n2's prefix at itself, and slips in n3's prefix too.
    # (n1 sent data and heard nothing back: it probes once the probe interval has passed.)
    for _ in range(2):
        wire.now += 0.5
        n1.xtr.tick(wire.now)
    nonce = _pending(n1, "probe")
    moved = EidRecord(_eid(n1, "10.1.2.0"), 24, (RlocRecord(ip_address(ATTACKER)),), 1440)
    extra = EidRecord(_eid(n1, "10.1.3.0"), 24, (RlocRecord(ip_address(ATTACKER)),), 1440)
    _inject(wire, rloc(2), n1, MapReply(nonce, (moved, extra), probe=True))
    wire.pump()
    drops = n1.xtr.ctx.drops
    assert drops["probe-reply-unsigned-change"] == 1 and drops["probe-reply-other-prefix"] == 1
    (entry,) = n1.status()["map_cache"]
    assert entry["prefix"] == "10.1.2.0/24" and entry["in_use"] == rloc(2)
    assert [r["address"] for r in entry["rlocs"]] == [rloc(2)]
    packet = ipv4_packet("10.1.1.1", "10.1.2.1", b"still to n2")
    n1.xtr.inside_packet(packet)
    wire.pump()
    assert n2.inside[-1] == packet
    assert not [d for _, d, _ in wire.seen if d[0] == ATTACKER]


def test_a_genuine_keyless_probe_reply_keeps_the_entry_alive(mesh: tuple[Wire, MakeNode]) -> None:
    wire, _ = mesh
    n1, _n2 = joined(mesh, 1, 2)
    n1.xtr.now = wire.now
    n1.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.2.1"))
    wire.pump()
    before = n1.status()["map_cache"][0]["ttl_remaining"]
    for _ in range(20):  # one-way traffic: several probe rounds, answered by n2 itself
        n1.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.2.1"))
        wire.tick(0.1)
    assert n1.xtr.ctx.stats["probe-replies"] > 0
    (entry,) = n1.status()["map_cache"]
    assert entry["ttl_remaining"] >= before - 0.5  # renewed, not running down
    assert n1.xtr.ctx.drops["probe-reply-unsigned-change"] == 0


def test_a_new_policy_forgets_what_the_old_one_denied(mesh: tuple[Wire, MakeNode]) -> None:
    # The agent calls this when the controller's policy changes (found broken by a lab test
    # after the xTR restructure: the agent looked for a map-cache attribute that had moved).
    from lisp.map_cache import MapCacheEntry

    wire, _ = mesh
    (n1,) = joined(mesh, 1)
    cache = n1.xtr.path_table.map_cache
    for prefix, action in (("10.1.2.0/24", Action.DROP_POLICY_DENIED),
                           ("10.1.3.0/24", Action.DROP_NO_REASON)):  # fmt: skip
        record = EidRecord(_eid(n1, prefix.split("/")[0]), 24, (), 1, action)
        cache.insert(MapCacheEntry.from_record(record, wire.now))
    assert n1.xtr.forget_policy_denied() == 1
    assert [str(e.prefix) for e in cache] == ["10.1.3.0/24"]
