"""A flood of keyed Map-Requests (issue 12 finding 9): bounded per claimed ITR-RLOC and in all
before any public-key work, and a request seen before costs no second ECDSA verify."""

from __future__ import annotations

import pytest

from mesh import kx as kx_module
from mesh.rate_limit import TokenBuckets
from mesh.xtr import CONTROL_PORT
from tests.unit import test_xtr_memory as memory
from tests.unit.test_kx_replay import WallClock, _keyed_requests_to, _nodes, _send
from tests.unit.test_xtr_memory import MakeNode, Wire, rloc

mesh = memory.mesh
pki = memory.pki


def test_token_buckets_allow_a_burst_then_the_rate() -> None:
    buckets = TokenBuckets(rate=2.0, burst=4.0, max_keys=2)
    assert [buckets.allow("a", 0.0) for _ in range(6)] == [True] * 4 + [False] * 2
    assert buckets.allow("b", 0.0)  # another source has its own bucket
    assert not buckets.allow("a", 0.2) and buckets.allow("a", 0.5)  # 2 per second
    buckets.allow("c", 0.5)  # a third key: the least recent ("b") is forgotten
    assert len(buckets._buckets) == 2


def test_a_flood_of_replayed_requests_costs_few_verifies_and_data_flows(
    mesh: tuple[Wire, MakeNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = WallClock()
    wire, (n1, n2) = _nodes(mesh, clock, 1, 2)
    _send(wire, n1, b"first")
    recorded = _keyed_requests_to(wire, rloc(2))
    assert recorded
    verifies = []
    real = kx_module.verify_proof

    def counting(*args: object, **kwargs: object) -> object:
        verifies.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(kx_module, "verify_proof", counting)
    source, payload = recorded[0]
    for _ in range(500):  # within one xTR tick: no time to refill the buckets
        wire.queue.append((source, (rloc(2), CONTROL_PORT), payload))
    wire.pump(limit=2000)
    drops = n2.xtr.ctx.drops
    assert drops["kx-rate-limited"] >= 500 - 20
    assert len(verifies) == 0  # the copies that got through were verified before: cached
    _send(wire, n1, b"during the flood")
    assert n2.inside[-1][28:] == b"during the flood"
