"""Benchmark: failover time (issue 19.4; goal < 1 s); join time is bench/join_bench.py.

Failover: an xTR n1 with two uplinks and a peer n2 (tests/integration/overlay.py, a map-server
and two `lispmesh node run`s on one bridge); n2 pings n1's EID every 20 ms, then n1's primary
is cut, two ways: `link`, n1's uplink goes down (`ip link set eth1 down`: n1 knows, n2 does
not), and `path`, the path from n2 to n1's primary RLOC dies (an nftables drop in n2's
namespace: nobody is told, n2's prober must find out). The outage is the gap between ping
replies around the cut (ping -D timestamps). Repeated --rounds times each (restored, and the
pings back on the primary, between rounds). Timers: the product defaults (common.timers.Timers),
unless given.

Join- and restart-to-reachable: bench/join_bench.py (this file's join part re-joined a fresh n3 on
the old n3's underlay address, which peers refuse by design, and timed out).

Usage (root):  python3 bench/failover_bench.py [--rounds 3] [--json]
                                               [--probe-interval S] [--dead-after S]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.timers import Timers
from tests.integration.overlay import OverlayLab, XtrSpec, eid4, rloc

GOAL_FAILOVER = 1.0


def _ping_times(output: str) -> list[float]:
    return [float(line.split("]")[0][1:]) for line in output.splitlines()
            if line.startswith("[") and "bytes from" in line]  # fmt: skip


NFT_TABLE = "lispmesh_failover_bench"


def cut(lab: OverlayLab, how: str) -> None:
    if how == "link":  # n1's uplink goes down: n1 knows, n2 does not
        lab.exec("n1", ["ip", "link", "set", "eth1", "down"])
    else:  # the path to n1's primary RLOC dies somewhere: nobody is told
        script = (f"add table inet {NFT_TABLE}\n"
                  f"add chain inet {NFT_TABLE} out {{ type filter hook output priority 0; }}\n"
                  f"add rule inet {NFT_TABLE} out ip daddr {rloc(1, 0)} drop\n")  # fmt: skip
        result = subprocess.run(
            ["ip", "netns", "exec", lab.lab.netns_name("n2"), "nft", "-f", "-"],  # type: ignore[union-attr]
            input=script, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"nft: {result.stderr.strip()}")


def restore(lab: OverlayLab, how: str) -> None:
    if how == "link":
        lab.exec("n1", ["ip", "link", "set", "eth1", "up"])
    else:
        lab.exec("n2", ["nft", "delete", "table", "inet", NFT_TABLE])

    def primary_again() -> bool:
        entries = lab.status("n2")["xtr"]["map_cache"]
        entry = next((e for e in entries if e["prefix"] == "10.1.1.0/24"), None)
        return entry is not None and entry["in_use"] == rloc(1, 0)

    # Fail-back waits for a probe of the down RLOC (backoff) or a new mapping.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        lab.ping("n2", eid4(1), count=1, timeout=1)
        if primary_again():
            return
        time.sleep(0.5)
    raise RuntimeError("n2 never went back to n1's primary uplink")


def failover_round(lab: OverlayLab, how: str) -> float:
    """Cut n1's primary under a 50/s ping from n2; the outage in seconds."""
    assert lab.lab is not None
    ping = subprocess.Popen(
        ["ip", "netns", "exec", lab.lab.netns_name("n2"), "ping", "-D", "-i", "0.02",
         "-w", "6", "-W", "1", eid4(1)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.5)  # the pings flow over the primary
        cut_at = time.time()
        cut(lab, how)
        output, _ = ping.communicate(timeout=20)
    finally:
        if ping.poll() is None:
            ping.kill()
            ping.wait(timeout=5)
    replies = _ping_times(output)
    before = [t for t in replies if t < cut_at]
    after = [t for t in replies if t >= cut_at]
    if not before or not after:
        raise RuntimeError(f"no replies before/after the cut:\n{output[-1500:]}")
    # The longest silence from the last reply before the cut on: replies already in flight
    # (and the time the cut takes to apply) come before the real gap.
    tail = [before[-1], *after]
    return max(b - a for a, b in itertools.pairwise(tail))


def measure_failover(rounds: int, timers: dict[str, Any]) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="lispmesh-failover-"))
    specs = [XtrSpec(1, uplinks=2, timers=timers), XtrSpec(2, timers=timers)]
    outages: dict[str, list[float]] = {"link": [], "path": []}
    with OverlayLab(workdir, specs, name_prefix="fb") as lab:
        lab.wait_registered()
        lab.wait_ping("n2", eid4(1))
        for how, results in outages.items():
            for _ in range(rounds):
                results.append(failover_round(lab, how))
                restore(lab, how)
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "timers": timers,
        **{
            how: {
                "outages_s": [round(o, 3) for o in results],
                "median_s": round(statistics.median(results), 3),
                "max_s": round(max(results), 3),
            }
            for how, results in outages.items()
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--probe-interval", type=float, default=Timers().probe_interval)
    parser.add_argument("--dead-after", type=float, default=Timers().probe_dead_after)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("failover_bench: needs root (network namespaces, TUN devices)", file=sys.stderr)
        return 2
    if not 1 <= args.rounds <= 20:
        print("failover_bench: --rounds must be 1..20", file=sys.stderr)
        return 2
    timers = {"probe_interval": args.probe_interval, "probe_dead_after": args.dead_after}
    results: dict[str, Any] = {"failover": measure_failover(args.rounds, timers)}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    if "failover" in results:
        f = results["failover"]
        t = f["timers"]
        print(f"failover, probe_interval {t['probe_interval']:g} s, dead after "
              f"{t['probe_dead_after']:g} s (goal < {GOAL_FAILOVER:g} s):")  # fmt: skip
        for how, what in (("link", "the peer's uplink goes down"),
                          ("path", "the path to the peer's RLOC dies")):  # fmt: skip
            r = f[how]
            print(f"  {what:34} outages {r['outages_s']} s, median {r['median_s']:.3f} s, "
                  f"max {r['max_s']:.3f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
