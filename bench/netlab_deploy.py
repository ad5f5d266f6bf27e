"""Benchmark: deploy and destroy a 50-node netlab lab; target: deploy under 30 s.

Prints netlab's times side by side with references measured in the same run:
  - the same lab built by a naive sequential `ip netns add` / `ip link` shell loop (what a
    hand-written lab script does; no mgmt network, so it does less work than netlab);
  - netlab on a 10-node lab, to show how deploy time scales.

Usage (root):  python3 bench/netlab_deploy.py [--nodes 50] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netlab import Lab


def chain_topology(name: str, n: int) -> str:
    """A chain n1 - n2 - ... - nN of linux nodes, one /30 per link; every node also gets an eth0
    on the lab's mgmt network (which the shell reference does not build)."""
    lines = [f"name: {name}", "topology:", "  defaults: {kind: linux}", "  nodes:"]
    for i in range(1, n + 1):
        addrs = []
        if i > 1:
            addrs.append(f"eth1: [10.{(i - 1) // 250}.{(i - 1) % 250}.2/30]")
        if i < n:
            addrs.append(f"eth2: [10.{i // 250}.{i % 250}.1/30]")
        lines.append(f"    n{i}: {{addresses: {{{', '.join(addrs)}}}}}")
    lines.append("  links:")
    for i in range(1, n):
        lines.append(f'    - endpoints: ["n{i}:eth2", "n{i + 1}:eth1"]')
    return "\n".join(lines) + "\n"


def shell_reference(prefix: str, n: int) -> tuple[float, float]:
    """Same namespaces, veths and addresses with one `ip` command per step, sequentially."""
    cmds = []
    for i in range(1, n + 1):
        cmds.append(f"ip netns add {prefix}-n{i}")
        cmds.append(f"ip -n {prefix}-n{i} link set lo up")
    for i in range(1, n):
        a, z = f"{prefix}-n{i}", f"{prefix}-n{i + 1}"
        cmds.append(f"ip link add eth2 netns {a} type veth peer name eth1 netns {z}")
        cmds.append(f"ip -n {a} addr add 10.{i // 250}.{i % 250}.1/30 dev eth2")
        cmds.append(f"ip -n {z} addr add 10.{i // 250}.{i % 250}.2/30 dev eth1")
        cmds.append(f"ip -n {a} link set eth2 up")
        cmds.append(f"ip -n {z} link set eth1 up")
    t0 = time.perf_counter()
    subprocess.run(["sh", "-ec", "\n".join(cmds)], check=True)
    deploy = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(
        ["sh", "-c", "\n".join(f"ip netns del {prefix}-n{i}" for i in range(1, n + 1))], check=True
    )
    return deploy, time.perf_counter() - t0


def netlab_run(workdir: Path, n: int, workers: int | None) -> tuple[float, float, bool]:
    name = f"bench{n}-{secrets.token_hex(2)}"
    path = workdir / f"{name}.clab.yml"
    path.write_text(chain_topology(name, n))
    lab = Lab.from_file(path)
    try:
        t0 = time.perf_counter()
        lab.deploy(max_workers=workers)
        deploy = time.perf_counter() - t0
        # sanity: the chain is really up (first link answers a ping)
        ok = lab.exec("n1", ["ping", "-c", "1", "-W", "2", "10.0.1.2"]).returncode == 0
    finally:
        t0 = time.perf_counter()
        lab.destroy()
        destroy = time.perf_counter() - t0
    return deploy, destroy, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--workers", type=int, default=None, help="netlab --max-workers")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="netlab-bench-") as tmp:
        work = Path(tmp)
        rows = []
        d, x, ok = netlab_run(work, args.nodes, args.workers)
        rows.append((f"netlab, {args.nodes} nodes (+mgmt net)", d, x, ok))
        d, x = shell_reference(f"nlbench-{secrets.token_hex(2)}", args.nodes)
        rows.append((f"shell loop of `ip`, {args.nodes} nodes", d, x, True))
        d, x, ok = netlab_run(work, 10, args.workers)
        rows.append(("netlab, 10 nodes (+mgmt net)", d, x, ok))
    print(f"{'run':<40} {'deploy s':>9} {'destroy s':>10}  ping")
    for label, d, x, ok in rows:
        print(f"{label:<40} {d:>9.2f} {x:>10.2f}  {'ok' if ok else 'FAILED'}")
    target = rows[0][1] < 30.0
    print(
        f"target: {args.nodes}-node deploy under 30 s: {'met' if target else 'MISSED'} "
        f"({os.cpu_count()} CPUs)"
    )
    return 0 if target and all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
