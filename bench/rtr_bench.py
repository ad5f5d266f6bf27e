"""RTR benchmark (issue 15 numbers): relayed next to direct, in one lab and one run.

The lab is tests/integration/test_rtr_nat.py's: a map-server, an RTR node `rtr`, a public node
`p`, and `n` behind a port-restricted NAT that reaches the mesh through `rtr` (every node on the
C data path here; relayed packets are sealed and opened by it but pass through Python). Rows:

* direct:  p to the RTR node's own EID (a direct path, both ends C);
* relayed: p to n, through the RTR (`status` says path rtr:rtr).

Per row: seconds from the end of the deploy (every node started) to the first answered ping,
and one TCP stream `iperf3 -t SECONDS` (receiver Gbit/s), run one after the other. Printed side by
side with the relayed/direct ratio; never asserted (shared machines: compare rows of one run).

Usage (root, from the repository root):  python3 bench/rtr_bench.py [--seconds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netlab.testing import lab_up  # noqa: E402
from tests.integration.test_rtr_nat import eid, topology  # noqa: E402

TIMEOUT = 60.0


def _until_ping(lab: Any, node: str, address: str, start: float) -> float | None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        done = lab.exec(node, ["ping", "-c", "1", "-W", "1", address])
        if done.returncode == 0:
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def _iperf(lab: Any, client: str, server: str, seconds: int) -> float | None:
    ns = lab.netns_name(server)
    daemon = subprocess.Popen(["ip", "netns", "exec", ns, "iperf3", "-s", "-1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        time.sleep(0.5)  # the server's listen (iperf3 gives no readiness signal)
        out = lab.exec(client, ["iperf3", "-c", eid(server), "-t", str(seconds), "-J"],
                       timeout=seconds + 30)  # fmt: skip
        report = json.loads(out.stdout or "{}")
        bits = report.get("end", {}).get("sum_received", {}).get("bits_per_second")
        return bits / 1e9 if bits else None
    finally:
        if daemon.poll() is None:
            daemon.kill()
        daemon.wait(timeout=5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows: dict[str, dict[str, float | None]] = {}
    with tempfile.TemporaryDirectory(prefix="rtrbench") as tmp:
        workdir = Path(tmp)
        with lab_up(topology(workdir, natted_dataplane="auto"), workdir) as lab:
            started = time.monotonic()
            # Both clocks start together: the relayed row waits for NAT detection, the keepalive
            # and the re-registration through the RTR on top of what the direct row waits for.
            rows["direct"] = {"reachable_s": _until_ping(lab, "p", eid("rtr"), started)}
            rows["relayed"] = {"reachable_s": _until_ping(lab, "p", eid("n"), started)}
            for name, server in (("direct", "rtr"), ("relayed", "n")):
                rows[name]["gbps"] = _iperf(lab, "p", server, args.seconds)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'row':10} {'reachable after (s)':>20} {'TCP Gbit/s':>12}")
    for name, row in rows.items():
        reach, gbps = row["reachable_s"], row["gbps"]
        print(f"{name:10} {_fmt(reach, 2):>20} {_fmt(gbps, 3):>12}")
    d, r = rows["direct"]["gbps"], rows["relayed"]["gbps"]
    if d and r:
        print(f"relayed/direct throughput: {r / d:.2f}")
    return 0


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
