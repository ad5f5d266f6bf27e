"""`lispmesh app` with real runc: a container run from a layout the test builds, restarted with
backoff by `lispmesh app supervise` after it is killed, untouched when the supervisor itself is
killed, and re-adopted by the next supervisor. Processes are stopped by pid; namespaces, runc
state and containers are removed on teardown."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lispmesh import cli
from lispmesh.waiting import wait_until
from tests.oci_build import BUSYBOX, busybox_layer, write_layout

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and runc"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc not installed (bootstrap.sh)"),
    pytest.mark.skipif(not BUSYBOX.exists(), reason="busybox-static not installed"),
]
ROOT = Path(__file__).resolve().parents[2]


class Node:
    def __init__(self, tmp: Path) -> None:
        tag = secrets.token_hex(3)
        self.netns = f"lmsv-{tag}"
        self.tmp = tmp
        self.common = ["--state-dir", str(tmp / "state"), "--runc-root", str(tmp / "runc"),
                       "--prefix", f"lmsv{tag}-", "--node-netns", self.netns,
                       "--stop-timeout", "1"]  # fmt: skip
        self.supervisors: list[subprocess.Popen[bytes]] = []

    def app(self, *argv: str) -> Any:
        code = cli.main(["app", *argv, "--json", *self.common])
        assert code == 0, argv
        return code

    def inspect(self, capsys: pytest.CaptureFixture[str], name: str) -> dict[str, Any]:
        capsys.readouterr()
        self.app("inspect", name)
        return dict(json.loads(capsys.readouterr().out))

    def supervise(self) -> subprocess.Popen[bytes]:
        with (self.tmp / "supervise.log").open("ab") as log:  # the child keeps its own copy
            process = subprocess.Popen(
                [sys.executable, "-m", "lispmesh", "app", "supervise", "--interval", "0.2",
                 *self.common],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        self.supervisors.append(process)
        return process


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    node = Node(tmp_path)
    subprocess.run(["ip", "netns", "add", node.netns], check=True)
    subprocess.run(["ip", "-n", node.netns, "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "-n", node.netns, "addr", "add", "10.96.0.1/32", "dev", "lo"],
                   check=True)  # fmt: skip
    try:
        yield node
    finally:
        for process in node.supervisors:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        records = tmp_path / "state" / "records"
        for record in records.glob("*.json") if records.is_dir() else []:
            cli.main(["app", "rm", record.stem, *node.common])
        subprocess.run(["ip", "netns", "del", node.netns], check=False)
    assert not list((tmp_path / "state" / "records").glob("*.json"))


def test_supervised_container_restarts_and_outlives_its_supervisor(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    config = {"Cmd": ["/bin/nc", "-ll", "-p", "7", "-e", "/bin/cat"], "User": "app"}
    write_layout(node.tmp / "echo", [busybox_layer()], config=config,
                 annotations={"io.lispmesh.label.app": "echo"})  # fmt: skip
    node.app("run", str(node.tmp / "echo"), "--name", "echo", "--eid", "10.96.0.7")
    first = node.inspect(capsys, "echo")
    assert first["state"] == "RUNNING" and first["eids"] == ["10.96.0.7"]
    assert first["labels"] == {"app": "echo"}
    pid = first["runtime"]["pid"]

    def echoed() -> bool:
        result = subprocess.run(["ip", "netns", "exec", node.netns, "sh", "-c",
                                 "echo ping | busybox nc -w 2 10.96.0.7 7"],
                                capture_output=True, text=True, timeout=10)  # fmt: skip
        return result.stdout == "ping\n"

    wait_until(echoed, 10, "the echo on the workload's EID")

    supervisor = node.supervise()
    os.kill(pid, signal.SIGKILL)  # the container crashes

    def restarted() -> dict[str, Any] | None:
        doc = node.inspect(capsys, "echo")
        return doc if doc["restarts"] == 1 and doc["state"] == "RUNNING" else None

    again = wait_until(restarted, 20, "the supervisor to restart the container")
    assert again["runtime"]["pid"] != pid
    assert again["exit_code"] == 128 + signal.SIGKILL  # how it last exited, kept once restarted
    wait_until(echoed, 10, "the echo after the restart")

    supervisor.kill()  # the agent crashes: the workload does not notice
    supervisor.wait(timeout=10)
    assert node.inspect(capsys, "echo")["runtime"]["pid"] == again["runtime"]["pid"]
    assert echoed()
    # The next supervisor adopts it without restarting it (one full step, in its own process).
    subprocess.run([sys.executable, "-m", "lispmesh", "app", "supervise", "--once", *node.common],
                   cwd=ROOT, check=True, timeout=60)  # fmt: skip
    adopted = node.inspect(capsys, "echo")
    assert adopted["state"] == "RUNNING" and adopted["restarts"] == 1
    assert adopted["runtime"]["pid"] == again["runtime"]["pid"]
    node.app("rm", "echo")
    assert not (node.tmp / "state" / "containers" / "echo").exists()
