"""Probing only what is in use (issue 19.5), in memory with the injected clock.

An idle path costs nothing but a rare keepalive probe, a path carrying traffic both ways is
kept alive by that traffic alone, and a path we send on that stops answering fails over within
the dead time. The timers are node_config's: probe_interval 0.3 s, probe_dead_after 1.5 s.
"""

from __future__ import annotations

from lisp import MapRequest, decode_control
from mesh.xtr import ACTIVE_POLL, CONTROL_PORT, IDLE_POLL
from tests.unit import test_xtr_memory as memory
from tests.unit.test_xtr_memory import MakeNode, Node, Wire, ipv4_packet, joined, rloc

pki = memory.pki
mesh = memory.mesh
DEAD_AFTER = 1.5
IDLE_INTERVAL = 300.0  # mesh.config's default probe_idle_interval


def _send(wire: Wire, src: Node, dst: Node, payload: bytes = b"x") -> None:
    a, b = src.name[1:], dst.name[1:]
    src.xtr.now = wire.now
    src.xtr.inside_packet(ipv4_packet(f"10.1.{a}.1", f"10.1.{b}.1", payload))
    wire.pump()


def _exchange(wire: Wire, a: Node, b: Node, rounds: int) -> None:
    """Packets both ways, one each per 0.1 s tick."""
    for _ in range(rounds):
        _send(wire, a, b)
        _send(wire, b, a)
        wire.tick(0.1)


def _probes_to(wire: Wire, address: str, since: int = 0) -> int:
    """Liveness RLOC-probes seen on the wire towards `address` (from the `since`-th datagram
    on); the padded ones of path MTU discovery (mesh.pmtu, 576 bytes and more) do not count."""
    count = 0
    for _, dest, payload in wire.seen[since:]:
        if dest == (address, CONTROL_PORT) and len(payload) < 512:
            message = decode_control(payload)
            if isinstance(message, MapRequest) and message.probe:
                count += 1
    return count


def test_an_idle_peer_gets_no_probes_until_the_idle_keepalive(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, _ = mesh
    n1, n2 = joined(mesh, 1, 2)
    _send(wire, n1, n2, b"hello")
    _send(wire, n2, n1, b"back")
    assert n2.inside and n1.inside
    wire.run(2.0)  # whatever the first exchange still owed is settled
    mark = len(wire.seen)
    wire.run(IDLE_INTERVAL - 10.0, step=1.0)
    assert _probes_to(wire, rloc(2), mark) == 0 and _probes_to(wire, rloc(1), mark) == 0
    # The idle xTR asks to be run again no sooner than its idle poll.
    assert n1.xtr.tick(wire.now) >= wire.now + IDLE_POLL - 1e-9
    wire.run(20.0, step=1.0)  # past the idle interval: one keepalive each way, answered
    assert _probes_to(wire, rloc(2), mark) == 1 and _probes_to(wire, rloc(1), mark) == 1
    assert n1.status()["map_cache"][0]["rlocs"][0]["up"] is True


def test_traffic_both_ways_keeps_a_path_alive_without_probes(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, _ = mesh
    n1, n2 = joined(mesh, 1, 2)
    _exchange(wire, n1, n2, 20)  # the path MTU check of a path put in use is done
    mark = len(wire.seen)
    for _ in range(100):  # 10 s of a ping-like exchange
        _send(wire, n1, n2)
        _send(wire, n2, n1)
        wire.tick(0.1)
    assert len(n2.inside) == 120 and len(n1.inside) == 120
    assert _probes_to(wire, rloc(2), mark) == 0 and _probes_to(wire, rloc(1), mark) == 0
    # While packets flow the xTR polls its counters fast, to see a silent path in time.
    _send(wire, n1, n2)
    _send(wire, n2, n1)
    assert n1.xtr.tick(wire.now) <= wire.now + ACTIVE_POLL + 1e-9


def test_one_way_traffic_is_probed_and_fails_over_within_the_dead_time(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, _ = mesh
    n1, n2 = joined(mesh, 1, (2, 2))
    _send(wire, n1, n2)
    mark = len(wire.seen)
    for _ in range(20):  # n2 never answers with data: n1 probes the RLOC it sends to
        _send(wire, n1, n2)
        wire.tick(0.1)
    assert _probes_to(wire, rloc(2, 0), mark) >= 4
    assert _probes_to(wire, rloc(2, 1), mark) == 0  # the idle second uplink is left alone
    cut_at = wire.now
    wire.cut.add(rloc(2, 0))
    failed_over = None
    for _ in range(40):
        _send(wire, n1, n2)
        wire.tick(0.1)
        if n1.status()["map_cache"][0]["in_use"] == rloc(2, 1):
            failed_over = wire.now
            break
    assert failed_over is not None, "never failed over"
    # Within the dead time (plus a counter poll and a tick of the harness).
    assert failed_over - cut_at <= DEAD_AFTER + ACTIVE_POLL + 0.1 + 1e-9
    delivered = len(n2.inside)
    _send(wire, n1, n2, b"after the failover")
    assert len(n2.inside) == delivered + 1


def test_a_path_carrying_traffic_both_ways_fails_over_when_its_peer_goes_silent(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, _ = mesh
    n1, n2 = joined(mesh, 1, (2, 2))
    _exchange(wire, n1, n2, 20)
    probes = n1.xtr.ctx.stats["probes"]
    _exchange(wire, n1, n2, 10)
    assert n1.xtr.ctx.stats["probes"] == probes  # the traffic vouches for the path
    cut_at = wire.now
    wire.cut.add(rloc(2, 0))  # n2 still sends from 10.77.0.12 in the harness: all of it lost
    failed_over = None
    for _ in range(40):
        _send(wire, n1, n2)
        wire.tick(0.1)
        if n1.status()["map_cache"][0]["in_use"] == rloc(2, 1):
            failed_over = wire.now
            break
    assert failed_over is not None and failed_over - cut_at <= DEAD_AFTER + ACTIVE_POLL + 0.2


def test_a_down_rloc_is_probed_with_backoff_and_taken_back_when_it_answers(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, _ = mesh
    n1, n2 = joined(mesh, 1, (2, 2))
    _send(wire, n1, n2)
    wire.cut.add(rloc(2, 0))
    for _ in range(30):
        _send(wire, n1, n2)
        wire.tick(0.1)
    assert n1.status()["map_cache"][0]["in_use"] == rloc(2, 1)
    mark = len(wire.seen)
    wire.run(60.0, step=0.5)  # no traffic: the dead RLOC is retried ever more rarely
    retries = _probes_to(wire, rloc(2, 0), mark)
    assert 2 <= retries <= 8
    wire.cut.discard(rloc(2, 0))
    wire.run(130.0, step=1.0)  # the next retry (at most the idle interval away) answers
    assert n1.status()["map_cache"][0]["rlocs"][0]["up"] is True
    _send(wire, n1, n2, b"back on the first uplink")
    assert n1.status()["map_cache"][0]["in_use"] == rloc(2, 0)


def test_rekeying_skips_idle_peers_and_their_next_packet_resolves_afresh(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, _ = mesh
    n1, n2, n3 = joined(mesh, 1, 2, 3)
    _send(wire, n1, n2)
    _send(wire, n1, n3)
    wire.run(2.0)
    n1.xtr.ctx.keys.epoch.created_at = wire.now  # the epoch that ends at the rekey begins here
    _exchange(wire, n1, n2, 3)  # only n2's mapping is used during it
    mark = len(wire.seen)
    n1.xtr.prober.rekey()
    wire.pump()
    keyed_to = {  # n1's keyed probes (a key and a signed proof: far bigger than a liveness one)
        d[0] for s, d, p in wire.seen[mark:] if s[0] == rloc(1) and d[1] == CONTROL_PORT
        and len(p) > 512
    }  # fmt: skip
    assert keyed_to == {rloc(2)}  # not n3
    in_use = {e["prefix"]: e["in_use"] for e in n1.status()["map_cache"]}
    # n3's key went (its mapping stays, for the checkpoint): no path until it is used again.
    assert in_use == {"10.1.2.0/24": rloc(2), "10.1.3.0/24": None}
    assert n1.xtr.ctx.stats["rekey-idle-forgotten"] == 1
    before = len(n3.inside)
    _send(wire, n1, n3, b"after the rekey")
    assert len(n3.inside) == before + 1 and n3.inside[-1].endswith(b"after the rekey")
    assert n1.status()["keys"]["itr_key_id"] == 2
    assert n1.xtr.ctx.stats["rekey-on-use"] == 1


def test_a_mapping_whose_rlocs_are_all_down_is_asked_again_while_traffic_lasts(
    mesh: tuple[Wire, MakeNode],
) -> None:
    """Its node died, and the EID may have moved (a replica replaced elsewhere keeps its EID):
    the map-resolver is asked again, once per map_request_retry (0.5 s here), only while
    packets come for it."""
    wire, _ = mesh
    n1, n2 = joined(mesh, 1, 2)
    _send(wire, n1, n2)
    assert n2.inside
    wire.cut.add(rloc(2))
    for _ in range(30):  # 3 s: down after 1.5 s, then asked again about every 0.5 s
        _send(wire, n1, n2)
        wire.tick(0.1)
    asked = n1.xtr.ctx.stats["map-requests-moved"]
    assert 2 <= asked <= 4
    wire.run(5.0)  # no traffic: no more questions
    assert n1.xtr.ctx.stats["map-requests-moved"] == asked
