"""RTR failover (mesh.rtr_client): a node behind a NAT with two RTRs; the one it is reached
through is killed; both ends move to the other RTR and traffic resumes. The outage is printed.

    ms, rtr (10.0.6.2), rtr2 (10.0.7.2), p (public) ── wan ── nat ── n (192.168.3.2)
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen

import pytest

from lispmesh.waiting import wait_until
from netlab.lab import Lab
from netlab.testing import lab_up
from tests.integration.test_rtr_nat import (
    ADDRESSES,
    _answered,
    _dump,
    _longest_silence,
    _peer,
    _ping,
    _pinger,
    _status,
    _tcp,
    eid,
    topology,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Path]]:
    workdir = tmp_path_factory.mktemp("rtrfail")
    with lab_up(topology(workdir, rtrs=2), workdir) as built:
        yield built, workdir


def test_killing_the_rtr_moves_both_ends_to_the_other_one(lab: tuple[Lab, Path]) -> None:
    netlab_lab, workdir = lab
    run = workdir / "run"
    wait_until(lambda: _ping(netlab_lab, "p", eid("n")), 60, "p reaches n")
    wait_until(lambda: _ping(netlab_lab, "n", eid("p")), 30, "n reaches p")

    both = [ADDRESSES["rtr"], ADDRESSES["rtr2"]]

    def registered_rtrs() -> list[str]:
        doc = _status(run, "p") or {"xtr": {"map_cache": []}}
        entry = [e for e in doc["xtr"]["map_cache"] if e["prefix"].startswith("10.1.3.0")]
        return [r["address"] for r in entry[0]["rlocs"] if r["address"] in both] if entry else []

    wait_until(lambda: _ping(netlab_lab, "p", eid("n")) and registered_rtrs() == both, 30,
               "p knows both RTRs of n")  # fmt: skip
    # Both RTRs saw n's data port at one outside address:port: the port-restricted NAT's
    # mapping is endpoint-independent (hole punching could work).
    relay = (_status(run, "n") or {}).get("xtr", {}).get("nat_relay", {})
    assert relay.get("data_mapping") == "endpoint-independent", relay
    pings: list[Popen[str]] = []
    try:
        pings = [_pinger(netlab_lab, "p", eid("n")), _pinger(netlab_lab, "n", eid("p"))]
        for ping in pings:
            wait_until(lambda: _answered(ping), 20, "pings answered")  # noqa: B023
        rtr = _status(run, "rtr")
        assert rtr is not None
        os.kill(rtr["pid"], signal.SIGKILL)
        killed = time.time()
        for ping in pings:
            wait_until(lambda: _answered(ping, after=killed + 0.2), 30, "pings again")  # noqa: B023
            ping.kill()
            ping.wait(timeout=5)
        to_n, to_p = (_longest_silence(p, killed) for p in pings)
    finally:
        for ping in pings:
            if ping.poll() is None:
                ping.kill()
                ping.wait(timeout=5)
    relay = wait_until(lambda: (_status(run, "n") or {}).get("xtr", {}).get("nat_relay"), 10,
                       "n's relay status")  # fmt: skip
    assert relay["via"] == "rtr2", relay
    peer = wait_until(lambda: _peer(run, "p", "n"), 10, "p knows n")
    assert peer["path"] == "rtr:rtr2", f"{peer}\n{_dump(run)}"
    _tcp(netlab_lab, run, "p", "n")
    print(f"\noutage when the RTR died: p -> n {to_n:.2f} s, n -> p {to_p:.2f} s")
