"""Controller replicas as real processes (`lispmesh controller serve --store etcd`) on loopback,
each with its own state dir and log, stopped by pid; and who leads, read from etcd."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller_api.store.etcd_client import EtcdClient
from lispmesh.waiting import wait_until
from tests.controller_harness import free_port

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 30.0


@dataclass
class Replica:
    name: str
    state_dir: Path
    process: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def log(self) -> str:
        return (self.state_dir / "replica.log").read_text(errors="replace")

    @property
    def address(self) -> str:
        return str(self.info["address"])

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # a stopped process ignores SIGTERM
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None


def start_replicas(
    directory: Path,
    endpoints: list[str],
    prefix: str,
    count: int,
    leader_ttl: int = 2,
    app_interval: float = 2.0,
    first: int = 0,
) -> list[Replica]:
    """Replicas r{first} .. r{first + count - 1}, started and answering."""
    names = [f"r{i}" for i in range(first, first + count)]
    replicas = [Replica(name, directory / name) for name in names]
    try:
        for r in replicas:
            r.state_dir.mkdir(parents=True)
            log = open(r.state_dir / "replica.log", "wb")  # noqa: SIM115 (the child's)
            with log:
                r.process = subprocess.Popen(
                    [
                        sys.executable, "-m", "lispmesh", "controller", "serve",
                        "--state-dir", str(r.state_dir), "--listen", f"127.0.0.1:{free_port()}",
                        "--api-port", str(free_port()), "--map-server-port", "0",
                        "--store", "etcd", "--etcd-endpoints", ",".join(endpoints),
                        "--etcd-prefix", prefix, "--leader-ttl", str(leader_ttl),
                        "--replica-name", r.name, "--config-cycle", "0.5",
                        "--app-interval", str(app_interval),
                    ],
                    cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                )  # fmt: skip
        for r in replicas:
            r.info = wait_until(lambda r=r: _started(r), START_TIMEOUT, f"replica {r.name}")
    except BaseException:
        for r in replicas:
            r.stop()
        raise
    return replicas


def _started(r: Replica) -> dict[str, Any] | None:
    assert r.process is not None
    if r.process.poll() is not None:
        raise RuntimeError(f"replica {r.name} exited: {r.log[-2000:]}")
    try:
        info = json.loads((r.state_dir / "controller.json").read_text())
    except (OSError, ValueError):
        return None
    return info if info.get("pid") == r.process.pid else None


def leader(etcd: EtcdClient, prefix: str) -> tuple[str, int] | None:
    """The leading replica's name and its term, from etcd."""
    kvs = etcd.range(f"{prefix}internal/leader".encode()).kvs
    if not kvs:
        return None
    return str(json.loads(kvs[0].value)["replica"]), int(kvs[0].create_revision)


def leader_record(etcd: EtcdClient, prefix: str) -> dict[str, Any] | None:
    """The last round the leader recorded (a fenced write)."""
    kvs = etcd.range(f"{prefix}objects/controller/leader".encode()).kvs
    return dict(json.loads(kvs[0].value)) if kvs else None
