"""Benchmark: join-to-reachable and restart-to-reachable (issue 19.4; goal < 2 s).

The demo lab (examples/demo.clab.yml: a controller and three nodes). Once the mesh is up, n3's
process is killed and started again, first with its state (restart: enrolled, checkpointed
mappings), then with an empty state dir (join: enrollment with the join token, desired state,
registration, resolution, key exchange). From the process start, three probers run at once, each
a shell loop of one-shot pings (`ping -c1 -W 0.1`) in its namespace: n3 to n1's EID, n3 to n2's
EID, and n1 to n3's EID (started as soon as n3's enrollment names its EID). Each answered ping is
an encrypted packet through the mesh both ways. A figure is the time from the process start to
the last of the three first answers, so the probers never wait on each other.

`--against REV` runs the same benchmark in REV's tree (git archive, as bench/tree_compare.py)
and in this one, alternating, and prints both side by side.

Usage (root):  python3 bench/join_bench.py [--rounds 3] [--only restart,join] [--json]
                                           [--against REV]
"""

from __future__ import annotations

import argparse
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

from lispmesh.mesh_lab import MeshLab, wait_for

GOAL_JOIN = 2.0
PROBE_LIMIT = 30.0  # seconds a prober keeps trying


class Prober:
    """A one-shot-ping loop in a node's namespace; prints the wall time of the first answer."""

    def __init__(self, lab: MeshLab, node: str, address: str) -> None:
        assert lab.lab is not None
        loop = (
            f"end=$(($(date +%s) + {int(PROBE_LIMIT)})); "
            f"while [ $(date +%s) -lt $end ]; do "
            f"if ping -n -c1 -W 0.1 {address} >/dev/null 2>&1; then date +%s.%N; exit 0; fi; "
            f"sleep 0.01; done; exit 1"
        )
        self.what = f"{node} to {address}"
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.lab.netns_name(node), "sh", "-c", loop],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip

    def first_answer(self) -> float:
        """The wall time (time.time) of the first answer; RuntimeError if none came."""
        try:
            out, _ = self.proc.communicate(timeout=PROBE_LIMIT + 10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.returncode != 0 or not out.strip():
            raise RuntimeError(f"no answer from {self.what} in {PROBE_LIMIT:g} s")
        return float(out.strip())


def one_round(lab: MeshLab, fresh: bool, number: int) -> dict[str, float]:
    lab.stop_process("n3")
    wait_for(lambda: not lab.process_alive("n3"), 10, "n3 to stop", 0.05)
    if fresh:
        # A new machine: no state, and an underlay address of its own (the peers still hold the
        # old n3's key for its address, and refuse another node's key there, by design).
        shutil.rmtree(lab.state / "n3")
        (lab.state / "n3").mkdir()
        lab.lab.exec("n3", f"ip addr flush dev eth1 && ip addr add 10.77.0.{100 + number}/24 "
                     "dev eth1", check=True)  # fmt: skip
    n1, n2 = lab.eid("n1"), lab.eid("n2")
    started = time.time()
    lab.start_process("n3")
    probers = [Prober(lab, "n3", n1), Prober(lab, "n3", n2)]
    wait_for(lambda: lab.enrollment("n3"), 30, "n3 to enroll", 0.02)
    enrolled = time.time() - started
    probers.append(Prober(lab, "n1", lab.eid("n3")))
    firsts = [p.first_answer() - started for p in probers]
    return {
        "enrolled_s": enrolled,
        "n3_to_n1_s": firsts[0],
        "n3_to_n2_s": firsts[1],
        "n1_to_n3_s": firsts[2],
        "reachable_s": max(firsts),
    }


def measure(rounds: int, only: set[str]) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="lispmesh-join-"))
    lab = MeshLab(workdir, token_uses=3 + rounds + 1)
    results: dict[str, list[dict[str, float]]] = {k: [] for k in ("restart", "join") if k in only}
    lab.deploy()
    try:
        for node in lab.nodes:
            wait_for(lambda node=node: lab.enrollment(node), 60, f"{node} to join")  # type: ignore[misc]
        wait_for(lab.all_pairs_reach, 60, "the full mesh", 0.1)
        for kind, rows in results.items():
            for number in range(rounds):
                rows.append(one_round(lab, fresh=kind == "join", number=number))
    except Exception:
        print(lab.dump(), file=sys.stderr)
        raise
    finally:
        lab.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        kind: {
            "rounds": [{k: round(v, 3) for k, v in row.items()} for row in rows],
            "median_s": round(statistics.median(r["reachable_s"] for r in rows), 3),
            "enrolled_median_s": round(statistics.median(r["enrolled_s"] for r in rows), 3),
        }
        for kind, rows in results.items()
    }


def print_results(results: dict[str, Any]) -> None:
    for kind, r in results.items():
        figures = [row["reachable_s"] for row in r["rounds"]]
        goal = f" (goal < {GOAL_JOIN:g} s)" if kind == "join" else ""
        print(f"{kind}-to-reachable: {figures} s, median {r['median_s']:.2f} s{goal}; "
              f"enrolled after {r['enrolled_median_s']:.2f} s (median)")  # fmt: skip
        for row in r["rounds"]:
            print(f"    n3->n1 {row['n3_to_n1_s']:.2f}  n3->n2 {row['n3_to_n2_s']:.2f}  "
                  f"n1->n3 {row['n1_to_n3_s']:.2f}")  # fmt: skip


def against(rev: str, argv: list[str], rounds: int) -> int:
    """This benchmark in `rev`'s tree and in this one, alternating; medians side by side."""
    from bench.tree_compare import run_once, unpack

    root = Path(__file__).resolve().parents[1]
    workdir = Path(tempfile.mkdtemp(prefix="bench-old-tree-"))
    try:
        old_id = unpack(root, rev, workdir)
        # The old tree may predate this file: run this one there (it imports only the lab).
        shutil.copy(Path(__file__), workdir / "bench" / "join_bench.py")
        trees = {f"old {old_id}": workdir, "new (this tree)": root}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        order = list(trees)
        for i in range(rounds):
            for name in order if i % 2 == 0 else reversed(order):
                print(f"round {i + 1}/{rounds}: {name} ...", file=sys.stderr)
                runs[name].append(run_once(trees[name], "bench/join_bench.py", argv))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    names = list(runs)
    print(f"{'':24}" + "".join(f"{n:>20}" for n in names) + f"{'new / old':>12}")
    for kind in ("restart", "join"):
        per_tree = [[row["reachable_s"] for doc in runs[n] if kind in doc
                     for row in doc[kind]["rounds"]] for n in names]  # fmt: skip
        if not all(per_tree):
            continue
        medians = [statistics.median(v) for v in per_tree]
        cells = "".join(f"{f'{m:.2f} s ({min(v):.2f}-{max(v):.2f})':>20}"
                        for m, v in zip(medians, per_tree, strict=True))  # fmt: skip
        print(f"{kind + '-to-reachable':24}{cells}{medians[1] / medians[0]:>12.2f}")
    return 0


PACKAGES = ("common", "controller_api", "lisp", "lispmesh", "mesh", "netlab", "node")


def prepare_bytecode() -> None:
    """Nodes start as installed ones do, from compiled bytecode: an installed package has it, a
    checkout run with PYTHONDONTWRITEBYTECODE (as this machine's sessions are) would compile every
    module at every start, ~0.3 s of CPU counted into each join."""
    import compileall

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    root = Path(__file__).resolve().parents[1]
    for package in PACKAGES:
        if (root / package).is_dir():
            compileall.compile_dir(root / package, quiet=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per kind (1..20)")
    parser.add_argument("--only", default="restart,join")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--against", metavar="REV", help="also run REV's tree, side by side")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("join_bench: needs root (network namespaces, TUN devices)", file=sys.stderr)
        return 2
    if not 1 <= args.rounds <= 20:
        print("join_bench: --rounds must be 1..20", file=sys.stderr)
        return 2
    only = set(args.only.split(","))
    if not only <= {"restart", "join"}:
        print(f"join_bench: --only takes restart,join, not {args.only!r}", file=sys.stderr)
        return 2
    prepare_bytecode()
    if args.against:
        return against(args.against, ["--rounds", "1", "--only", args.only], args.rounds)
    results = measure(args.rounds, only)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_results(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
