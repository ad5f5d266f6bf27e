"""Controller HA benchmark: policy fan-out and recovery, one SQLite controller next to three
replicas on etcd, in the same run.

Run from the repository root: `python3 bench/ha_bench.py [--nodes 30] [--rounds 3]` (about a
minute; needs `etcd`, scripts/bootstrap.sh installs it). Everything runs on loopback as real
processes (`lispmesh controller serve`, etcd), stopped by pid:

* policy fan-out: `--nodes` enrolled nodes each hold a Watch stream (in this process, spread
  round-robin over the replicas); a policy is applied through the first controller, and the
  figure is the time from `lispmesh policy apply` (the CLI call: check, compile, store) until
  the last stream has received the document carrying it (median and worst over `--rounds`).
  SQLite: one controller, which wakes its own streams; etcd: three replicas, each woken by its
  watch on the store.
* recovery: the time from `kill -9` of the controller serving writes until writes are served
  again. SQLite: the one controller restarted at once (as systemd would) until it answers;
  etcd: the leader killed, until another replica holds the leader key, and until its first
  fenced write (its leader round) is in etcd. The lease TTL is `--ttl` (2 s).

Figures are from one noisy shared machine: compare the columns of one run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller_api.client import aio_channel, credentials
from controller_api.gen.lispmesh.v1 import config_pb2, config_pb2_grpc
from controller_api.store.etcd_client import EtcdClient
from lispmesh.cli import main as cli
from lispmesh.waiting import wait_until
from node.enroll import enroll
from node.state import StateDir
from tests.controller_harness import free_port
from tests.etcd_cluster import EtcdCluster, unique_prefix
from tests.replica_harness import Replica, leader, leader_record, start_replicas

ROOT = Path(__file__).resolve().parent.parent
POLICY = "version: 1\nrules:\n  - {{name: r{n}, from: any, to: any, proto: tcp, ports: [{port}]}}\n"


def start_sqlite(directory: Path) -> Replica:
    r = Replica("sqlite", directory)
    r.state_dir.mkdir(parents=True, exist_ok=True)
    with open(r.state_dir / "replica.log", "ab") as log:
        r.process = subprocess.Popen(
            [sys.executable, "-m", "lispmesh", "controller", "serve", "--state-dir",
             str(r.state_dir), "--listen", f"127.0.0.1:{free_port()}", "--api-port",
             str(free_port()), "--map-server-port", "0"],
            cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    r.info = wait_until(lambda: _info(r), 30, "the SQLite controller")
    return r


def _info(r: Replica) -> dict[str, Any] | None:
    assert r.process is not None
    if r.process.poll() is not None:
        raise RuntimeError(f"controller exited: {r.log[-1500:]}")
    try:
        info = json.loads((r.state_dir / "controller.json").read_text())
    except (OSError, ValueError):
        return None
    return info if info.get("pid") == r.process.pid else None


def _quiet(argv: list[str]) -> int:
    with contextlib.redirect_stdout(open("/dev/null", "w")):
        return cli(argv)


def _token(state_dir: Path, uses: int) -> str:
    with tempfile.TemporaryFile("w+") as out:
        with contextlib.redirect_stdout(out):
            assert cli(["controller", "token", "create", "--state-dir", str(state_dir),
                        "--uses", str(uses), "--json"]) == 0  # fmt: skip
        out.seek(0)
        return str(json.load(out)["token_secret"])


def fanout(controllers: list[Replica], work: Path, nodes: int, rounds: int) -> list[float]:
    """Seconds from each policy apply until every stream has the new document."""
    token = _token(controllers[0].state_dir, nodes)
    states = []
    for i in range(nodes):
        state = StateDir(work / f"n{i}")
        enroll(state, controllers[i % len(controllers)].address, token)
        states.append(state)
    policy = work / "policy.yml"

    async def run() -> list[float]:
        versions: list[int] = [0] * nodes
        heard: list[asyncio.Event] = [asyncio.Event() for _ in range(nodes)]
        wanted = [0]

        async def follow(i: int, state: StateDir) -> None:
            creds = credentials(state.ca.read_bytes(), state.cert.read_bytes(),
                                state.key.read_bytes())  # fmt: skip
            address = controllers[i % len(controllers)].info["api_address"]
            async with aio_channel(address, creds) as channel:
                stub = config_pb2_grpc.NodeConfigStub(channel)
                async for desired in stub.Watch(config_pb2.WatchRequest()):
                    versions[i] = desired.version
                    policies = [p.version for p in desired.policies]
                    if policies and policies[0] >= wanted[0]:
                        heard[i].set()

        tasks = [asyncio.create_task(follow(i, s)) for i, s in enumerate(states)]
        try:
            deadline = time.monotonic() + 30
            while min(versions) == 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("streams did not open")
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # let the first documents settle
            times = []
            for n in range(1, rounds + 1):
                policy.write_text(POLICY.format(n=n, port=1000 + n))
                wanted[0] = n
                for event in heard:
                    event.clear()
                argv = ["policy", "apply", str(policy), "--state-dir",
                        str(controllers[0].state_dir)]  # fmt: skip
                began = time.perf_counter()
                code = await asyncio.to_thread(_quiet, argv)
                assert code == 0, "policy apply failed"
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in heard)), 30)
                times.append(time.perf_counter() - began)
            return times
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(run())


def sqlite_recovery(work: Path) -> float:
    """kill -9, restart, until it answers `controller status`."""
    r = start_sqlite(work / "sqlite-recover")
    try:
        assert r.process is not None
        r.process.kill()
        r.process.wait()
        began = time.perf_counter()
        r = start_sqlite(r.state_dir)
        argv = ["controller", "status", "--state-dir", str(r.state_dir), "--json"]
        wait_until(lambda: _quiet(argv) == 0, 30, "the restarted controller", 0.02)
        return time.perf_counter() - began
    finally:
        r.stop()


def etcd_recovery(
    replicas: list[Replica], etcd: EtcdClient, prefix: str
) -> tuple[float, float, str]:
    """kill -9 the leader; seconds until another replica leads, and until its first round."""
    by_name = {r.name: r for r in replicas}
    old, _ = wait_until(lambda: leader(etcd, prefix), 10, "a leader")
    victim = by_name[old]
    assert victim.process is not None
    victim.process.kill()
    began = time.perf_counter()
    victim.process.wait()
    poll: Callable[[], Any] = lambda: (now := leader(etcd, prefix)) and now[0] != old and now  # noqa: E731
    new, term = wait_until(poll, 30, "a new leader", 0.01)
    elected = time.perf_counter() - began
    wait_until(lambda: (rec := leader_record(etcd, prefix)) and rec["term"] == term, 30,
               "the new leader's first round", 0.01)  # fmt: skip
    return elected, time.perf_counter() - began, f"{old}->{new}"


def _ms(times: list[float]) -> str:
    return f"{statistics.median(times) * 1000:.0f} / {max(times) * 1000:.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ttl", type=int, default=2)
    args = parser.parse_args()
    logging.getLogger("lispmesh").setLevel(logging.ERROR)  # the nodes' file-key warnings
    tmp = Path(tempfile.mkdtemp(prefix="lispmesh-ha-bench-"))
    rows: dict[str, dict[str, str]] = {"sqlite": {}, "etcd": {}}
    try:
        sqlite = start_sqlite(tmp / "sqlite")
        try:
            times = fanout([sqlite], tmp / "sqlite-nodes", args.nodes, args.rounds)
        finally:
            sqlite.stop()
        rows["sqlite"]["fan-out"] = _ms(times)
        rows["sqlite"]["recovery"] = f"restart {sqlite_recovery(tmp):.2f} s"
        with EtcdCluster.start(tmp / "etcd", members=3) as cluster:
            prefix = unique_prefix()
            etcd = EtcdClient(cluster.endpoints)
            replicas = start_replicas(tmp / "replicas", cluster.endpoints, prefix, 3, args.ttl)
            try:
                times = fanout(replicas, tmp / "etcd-nodes", args.nodes, args.rounds)
                rows["etcd"]["fan-out"] = _ms(times)
                elected, served, who = etcd_recovery(replicas, etcd, prefix)
                rows["etcd"]["recovery"] = (
                    f"new leader {elected:.2f} s, first fenced write {served:.2f} s ({who})"
                )
            finally:
                for r in replicas:
                    r.stop()
                etcd.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"policy fan-out to {args.nodes} streams (median / worst of {args.rounds}), and the"
          f" time to serve writes again after kill -9 (lease TTL {args.ttl} s):")  # fmt: skip
    print(f"  {'':28} {'fan-out':>16}   recovery")
    print(f"  {'1 controller, SQLite':28} {rows['sqlite']['fan-out']:>16}   "
          f"{rows['sqlite']['recovery']}")  # fmt: skip
    print(f"  {'3 replicas, 3 etcd members':28} {rows['etcd']['fan-out']:>16}   "
          f"{rows['etcd']['recovery']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        sys.exit(main())
