"""Real etcd processes for tests: one member or a cluster on loopback, stopped by pid.

Each member runs `etcd` (Debian's etcd-server, installed by scripts/bootstrap.sh) with its own
data directory and free loopback ports; `EtcdCluster.start` waits until the cluster answers a
read. Tests sharing one cluster stay apart by key prefix (`unique_prefix`).

    with EtcdCluster.start(tmp / "etcd", members=3) as cluster:
        store = EtcdStore(cluster.endpoints, prefix=unique_prefix())
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from controller_api.store.etcd_client import EtcdClient, EtcdUnavailable
from lispmesh.waiting import wait_until

START_TIMEOUT = 30.0


def etcd_binary() -> str:
    path = shutil.which("etcd")
    if path is None:
        raise RuntimeError("etcd is not installed (scripts/bootstrap.sh installs etcd-server)")
    return path


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports free right now (all bound at once, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def unique_prefix() -> str:
    return f"/test-{uuid.uuid4().hex[:12]}/"


@dataclass
class Member:
    name: str
    data_dir: Path
    client_port: int
    peer_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def run(self, initial_cluster: str, token: str) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir.parent / f"{self.name}.log", "ab")  # noqa: SIM115 (etcd's)
        with log:
            self.process = subprocess.Popen(
                [
                    etcd_binary(), "--name", self.name, "--data-dir", str(self.data_dir / "d"),
                    "--listen-client-urls", f"http://{self.endpoint}",
                    "--advertise-client-urls", f"http://{self.endpoint}",
                    "--listen-peer-urls", self.peer_url,
                    "--initial-advertise-peer-urls", self.peer_url,
                    "--initial-cluster", initial_cluster,
                    "--initial-cluster-token", token, "--initial-cluster-state", "new",
                    # Short raft timers: a lost member or leader shows within a second.
                    "--heartbeat-interval", "50", "--election-timeout", "500",
                ],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None


@dataclass
class EtcdCluster:
    directory: Path
    members: list[Member] = field(default_factory=list)

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @classmethod
    def start(cls, directory: Path, members: int = 1) -> EtcdCluster:
        cluster = cls(directory)
        token = f"lispmesh-test-{uuid.uuid4().hex[:8]}"
        ports = free_ports(2 * members)
        cluster.members = [
            Member(f"m{i}", directory / f"m{i}", ports[2 * i], ports[2 * i + 1])
            for i in range(members)
        ]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in cluster.members)
        try:
            for m in cluster.members:
                m.run(initial, token)
            cluster.wait_ready()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def wait_ready(self) -> None:
        client = EtcdClient(self.endpoints, timeout=1.0)

        def answers() -> bool:
            for m in self.members:
                if m.process is not None and m.process.poll() is not None:
                    log = (self.directory / f"{m.name}.log").read_text(errors="replace")
                    raise RuntimeError(f"etcd {m.name} exited: {log[-2000:]}")
            try:
                client.revision()
                return True
            except EtcdUnavailable:
                return False

        try:
            wait_until(answers, START_TIMEOUT, "etcd to answer", interval=0.05)
        finally:
            client.close()

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
