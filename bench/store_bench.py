"""Controller store benchmark: enrollments per second, SQLite and etcd side by side.

Run from the repository root: `python3 bench/store_bench.py [--nodes 200] [--writers 1 4]`
(about 20 s; needs `etcd` installed, scripts/bootstrap.sh does it). One real etcd member is
started for the run on free loopback ports and stopped by pid. Each line enrolls `--nodes` nodes
through the `Store` (the allocation transaction: token use, unique name and slot, the node row;
no gRPC, no certificate signing) with W writer threads, each its own store handle as separate
controller processes would have, all against one store:

* SQLite: one file, WAL, synchronous=FULL (the single-controller default);
* etcd: one member, data dir on the same disk; the writers race with compare-and-swap.

All writers redeem one multi-use token, so on etcd they also contend for the token's key (the
worst case: one token for a whole fleet). Also: the median time of one read-modify-write
(`touch`). Figures are from one noisy machine: compare the columns of
one run, not runs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller_api.store import EidPools, EtcdStore, Issued, NewNode, SqliteStore, Store
from controller_api.tokens import hash_secret
from tests.etcd_cluster import EtcdCluster, unique_prefix

POOLS = EidPools(IPv4Network("10.0.0.0/8"), 24, IPv6Network("fd00:7::/48"), 64)


def _enroll_all(opener: Callable[[], Store], nodes: int, writers: int) -> tuple[float, float]:
    """Seconds for `nodes` enrollments by `writers` threads; per-call touch median (ms)."""
    first = opener()
    now = time.time()
    first.add_token("bench", hash_secret("s"), now, now + 3600, nodes, (), "")
    handles = [opener() for _ in range(writers)]
    start = threading.Barrier(writers + 1)

    def work(w: int) -> None:
        start.wait()
        for i in range(w, nodes, writers):
            new = NewNode(f"n{i:06d}", "node", 0, (), "bench", None, f"pk{i}", "k" * 16, "h")
            handles[w].create_node(new, POOLS, lambda a, i=i: Issued("pem", f"fp{i}", 0.0), now)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    assert len(first.list_nodes()) == nodes, "lost an enrollment"
    touches = []
    for i in range(50):
        t0 = time.perf_counter()
        first.touch(f"n{i % nodes:06d}", now + i)
        touches.append((time.perf_counter() - t0) * 1000)
    for h in [first, *handles]:
        h.close()
    return elapsed, statistics.median(touches)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lispmesh-store-bench-"))
    with EtcdCluster.start(tmp / "etcd") as cluster:
        print(f"{'store':<8} {'writers':>7} {'enrollments/s':>14} {'touch ms (median)':>18}")
        for writers in args.writers:
            db, prefix = tmp / f"w{writers}.db", unique_prefix()
            for name, opener in (
                ("sqlite", lambda db=db: SqliteStore(db)),
                ("etcd", lambda p=prefix: EtcdStore(cluster.endpoints, prefix=p)),
            ):
                seconds, touch = _enroll_all(opener, args.nodes, writers)
                print(f"{name:<8} {writers:>7} {args.nodes / seconds:>14.0f} {touch:>18.2f}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
