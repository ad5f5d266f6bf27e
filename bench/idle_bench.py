"""Benchmark: what an idle mesh costs, and how that grows with the number of nodes (issue 19.5).

For each N it deploys a controller and N `lispmesh-node`s on one underlay bridge (the shape of
examples/demo.clab.yml, generated), waits until every node has joined and every ordered pair
reaches the other over the overlay (N*(N-1) pings), then leaves the mesh idle (no user traffic)
and measures over a window:
  - CPU per node: utime+stime of each node's process tree (/proc/PID/stat), % of one core;
  - underlay traffic per node: bytes/s and packets/s in and out of its eth1 (ip -s link);
  - the controller's CPU, and the machine's CPU steal during the window (/proc/stat);
  - the time from the nodes' start to full reachability.
Printed as one row per N, so the growth with N is visible; the goal (< 0.5 % of a core and
< 200 bytes/s, in + out, per node) is printed beside the figures of the same run.

Usage (root):  python3 bench/idle_bench.py [--nodes 10[,25,50]] [--seconds 30] [--settle 10]
                                           [--json] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lispmesh.mesh_lab import CONTROLLER, MeshLab, wait_for
from netlab.state import LabState

GOAL_CPU_PERCENT = 0.5
GOAL_BYTES_PER_SECOND = 200.0
TICKS = os.sysconf("SC_CLK_TCK")


def topology(n: int) -> str:
    """A controller and n nodes on one bridge: demo.clab.yml with n nodes."""
    node_cmd = (
        "${LISPMESH} node run --controller 10.77.0.1:7443 --state-dir ${LAB_STATE}/%s "
        "--run-dir ${LAB_STATE}/run ${NODE_FLAGS:-}"
    )
    lines = [
        "name: lispmesh-idle",
        "topology:",
        "  defaults: {env: {PYTHONPATH: '${PYTHONPATH_DIR}'}}",
        "  kinds: {lispmesh-node: {env: {LISPMESH_TOKEN: '${LISPMESH_TOKEN}'}}}",
        "  nodes:",
        "    underlay: {kind: bridge}",
        "    controller:",
        "      kind: lispmesh-controller",
        "      network-mode: none",
        "      addresses: {eth1: [10.77.0.1/24]}",
        "      cmd: ${LISPMESH} controller serve --state-dir ${LAB_STATE}/controller"
        " --listen 10.77.0.1:7443 --config-cycle 1 ${CONTROLLER_FLAGS:-}",
    ]
    links = ["    - endpoints: [controller:eth1, underlay:controller]"]
    for i in range(1, n + 1):
        name = f"n{i}"
        lines += [
            f"    {name}:",
            "      kind: lispmesh-node",
            "      network-mode: none",
            f"      addresses: {{eth1: [10.77.0.{10 + i}/24]}}",
            f"      cmd: {node_cmd % name}",
        ]
        links.append(f"    - endpoints: [{name}:eth1, underlay:{name}]")
    return "\n".join([*lines, "  links:", *links]) + "\n"


# ---------------------------------------------------------------------- /proc readers


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree_cpu_ticks(pid: int, children: dict[int, list[int]]) -> int:
    """utime + stime of `pid` and its live descendants, in clock ticks."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
        todo += children.get(current, [])
    return total


def steal_ticks() -> tuple[int, int]:
    """(steal, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return values[7], sum(values)


def underlay_counters(lab: MeshLab, node: str) -> tuple[int, int, int, int]:
    """(rx bytes, tx bytes, rx packets, tx packets) of the node's eth1."""
    ns = lab.lab.netns_name(node)
    base = "/sys/class/net/eth1/statistics"
    out = lab.lab.exec(
        node, f"cat {base}/rx_bytes {base}/tx_bytes {base}/rx_packets {base}/tx_packets"
    )
    values = [int(v) for v in out.stdout.split()]
    if len(values) != 4:
        raise RuntimeError(f"cannot read eth1 counters in {ns}: {out.stderr.strip()}")
    return values[0], values[1], values[2], values[3]


# ---------------------------------------------------------------------- reachability


def reach_round(lab: MeshLab, source: str, targets: list[str]) -> set[str]:
    """Ping every target once, in parallel, from `source`; the targets that answered."""
    if not targets:
        return set()
    script = (
        "for t in " + " ".join(shlex.quote(t) for t in targets) + "; do "
        '(ping -c 1 -W 1 -q "$t" >/dev/null 2>&1 && echo "$t") & done; wait'
    )
    result = lab.lab.exec(source, script, timeout=30)
    return set(result.stdout.split())


def wait_full_reachability(lab: MeshLab, timeout: float) -> int:
    """Ping until every ordered pair has answered once or `timeout` passes; pairs reached."""
    eids = {node: lab.eid(node) for node in lab.nodes}
    pending = {a: [eids[b] for b in lab.nodes if b != a] for a in lab.nodes}
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(max_workers=8) as pool:
        while any(pending.values()) and time.monotonic() < deadline:
            sources = [a for a, t in pending.items() if t]
            answered = pool.map(lambda a: reach_round(lab, a, pending[a]), sources)
            for source, ok in zip(sources, answered, strict=True):
                pending[source] = [t for t in pending[source] if t not in ok]
    total = len(lab.nodes) * (len(lab.nodes) - 1)
    return total - sum(len(v) for v in pending.values())


# ---------------------------------------------------------------------- one lab


@dataclass
class Row:
    nodes: int
    pairs: int
    reached: int
    reach_seconds: float | None  # None: not every pair reached within the timeout
    window_seconds: float
    node_cpu_percent_mean: float
    node_cpu_percent_max: float
    bytes_per_second_in: float
    bytes_per_second_out: float
    packets_per_second_in: float
    packets_per_second_out: float
    controller_cpu_percent: float
    steal_percent: float


def node_pids(lab: MeshLab) -> dict[str, int]:
    state = LabState.load(lab.lab.labdir)
    assert state is not None
    return {rec.node: rec.pid for rec in state.processes}


def measure(n: int, seconds: float, settle: float, keep: bool) -> Row:
    workdir = Path(tempfile.mkdtemp(prefix=f"lispmesh-idle{n}-"))
    path = workdir / "idle.clab.yml"
    path.write_text(topology(n))
    lab = MeshLab(workdir, topology=path, token_uses=n + 1)
    try:
        lab.deploy()
        started = time.monotonic()
        for node in lab.nodes:
            wait_for(lambda node=node: lab.enrollment(node), 120, f"{node} to join")  # type: ignore[misc]
        reached = wait_full_reachability(lab, timeout=60 + 4 * n)
        reach = time.monotonic() - started
        # Let the join's bursts (first reports, key exchanges) pass: measure the steady state.
        time.sleep(settle)
        pids = node_pids(lab)
        nodes = lab.nodes
        before_children = _children_map()
        cpu0 = {name: tree_cpu_ticks(pid, before_children) for name, pid in pids.items()}
        net0 = {node: underlay_counters(lab, node) for node in nodes}
        steal0 = steal_ticks()
        t0 = time.monotonic()
        time.sleep(seconds)
        window = time.monotonic() - t0
        after_children = _children_map()
        cpu1 = {name: tree_cpu_ticks(pid, after_children) for name, pid in pids.items()}
        net1 = {node: underlay_counters(lab, node) for node in nodes}
        steal1 = steal_ticks()
        per_node = [100.0 * (cpu1[x] - cpu0[x]) / TICKS / window for x in nodes]
        deltas = [[b - a for a, b in zip(net0[x], net1[x], strict=True)] for x in nodes]
        mean = [sum(d[i] for d in deltas) / len(nodes) / window for i in range(4)]
        steal = 100.0 * (steal1[0] - steal0[0]) / max(1, steal1[1] - steal0[1])
        controller = 100.0 * (cpu1[CONTROLLER] - cpu0[CONTROLLER]) / TICKS / window
        return Row(
            nodes=n,
            pairs=n * (n - 1),
            reached=reached,
            reach_seconds=round(reach, 1) if reached == n * (n - 1) else None,
            window_seconds=round(window, 1),
            node_cpu_percent_mean=round(sum(per_node) / n, 2),
            node_cpu_percent_max=round(max(per_node), 2),
            bytes_per_second_in=round(mean[0], 1),
            bytes_per_second_out=round(mean[1], 1),
            packets_per_second_in=round(mean[2], 2),
            packets_per_second_out=round(mean[3], 2),
            controller_cpu_percent=round(controller, 2),
            steal_percent=round(steal, 1),
        )
    finally:
        if keep:
            print(f"lab kept in {workdir} (lispmesh demo --destroy {workdir})", file=sys.stderr)
        else:
            lab.destroy()


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'nodes':>5} {'pairs':>6} {'reached':>7} {'reach s':>8} {'cpu%/node':>9} {'max':>6} "
        f"{'B/s in':>8} {'B/s out':>8} {'pkt/s in':>8} {'pkt/s out':>9} {'ctrl cpu%':>9} "
        f"{'steal%':>6}"
    )
    print(header)
    for r in rows:
        reach = "no" if r.reach_seconds is None else f"{r.reach_seconds:.1f}"
        print(
            f"{r.nodes:>5} {r.pairs:>6} {r.reached:>7} {reach:>8} {r.node_cpu_percent_mean:>9.2f} "
            f"{r.node_cpu_percent_max:>6.2f} {r.bytes_per_second_in:>8.0f} "
            f"{r.bytes_per_second_out:>8.0f} {r.packets_per_second_in:>8.1f} "
            f"{r.packets_per_second_out:>9.1f} {r.controller_cpu_percent:>9.2f} "
            f"{r.steal_percent:>6.1f}"
        )
    print(
        f"goal per node at idle: < {GOAL_CPU_PERCENT} % of a core, "
        f"< {GOAL_BYTES_PER_SECOND:.0f} B/s underlay (in + out)"
    )
    for r in rows:
        cpu_ok = r.node_cpu_percent_mean < GOAL_CPU_PERCENT
        bytes_ok = r.bytes_per_second_in + r.bytes_per_second_out < GOAL_BYTES_PER_SECOND
        print(
            f"  N={r.nodes}: cpu {'met' if cpu_ok else 'NOT met'}, "
            f"underlay {'met' if bytes_ok else 'NOT met'}"
        )


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="10", help="comma-separated lab sizes (default 10)")
    parser.add_argument("--seconds", type=float, default=30.0, help="idle window (default 30)")
    parser.add_argument("--settle", type=float, default=10.0, help="wait after reachability")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="leave the last lab up")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("idle_bench: needs root (network namespaces, TUN devices)", file=sys.stderr)
        return 2
    sizes = [int(v) for v in args.nodes.split(",")]
    if not all(2 <= n <= 200 for n in sizes):
        print("idle_bench: --nodes: each size must be 2..200", file=sys.stderr)
        return 2
    # `timeout` and Ctrl-C alike: unwind through measure()'s `finally`, which destroys the lab
    # (a SIGTERM that killed this process outright once left a 10-node lab running).
    signal.signal(signal.SIGTERM, _interrupt)
    rows = []
    for n in sizes:
        print(f"N={n}: deploying, joining, waiting for {n * (n - 1)} pairs ...", file=sys.stderr)
        rows.append(measure(n, args.seconds, args.settle, args.keep and n == sizes[-1]))
        print(f"N={n}: {asdict(rows[-1])}", file=sys.stderr)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
