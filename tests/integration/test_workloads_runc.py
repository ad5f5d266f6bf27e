"""Containers under real runc: a busybox image built by the test (Debian's busybox-static in a
layer of an OCI layout), imported, unpacked, run in its own network namespace on a veth from a
"node" namespace, reached on its EIDs (ping, TCP echo), limited by its cgroups, stopped, killed,
restarted and deleted. Every namespace, container and state dir is removed on teardown."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

import pytest

from lispmesh.waiting import wait_until
from node.workloads.oci_image import load_image
from node.workloads.oci_store import BlobStore
from node.workloads.package import workload_spec
from node.workloads.runc import RuncRuntime
from node.workloads.runtime import Attachment, Workload
from tests.oci_build import BUSYBOX, Entry, busybox_layer, layer, write_layout

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and runc"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc not installed (bootstrap.sh)"),
    pytest.mark.skipif(not BUSYBOX.exists(), reason="busybox-static not installed"),
]

EID4 = ip_address("10.98.0.5")
EID6 = ip_address("fd00:98::5")
NODE_EID4 = "10.98.0.1"


@dataclass
class Node:
    netns: str
    runtime: RuncRuntime
    store: BlobStore
    tmp: Path

    def sh(self, script: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.netns, "sh", "-c", script],
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def workload(self, name: str, config: dict[str, object], notes: dict[str, str]) -> Workload:
        layout = self.tmp / f"layout-{name}"
        write_layout(layout, [busybox_layer()], config=config, annotations=notes)
        image = load_image(self.store, self.store.import_layout(layout))
        tag = self.netns.split("-")[1]
        attachment = Attachment(f"lw{tag}{name}"[:15], EID4, EID6)
        return Workload(name, image, workload_spec(image), attachment)

    def run(self, workload: Workload) -> None:
        self.runtime.prepare(self.store, workload)
        self.runtime.define(workload)
        self.runtime.start(workload.name)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    tag = secrets.token_hex(3)
    netns = f"lmwl-{tag}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "-n", netns, "addr", "add", f"{NODE_EID4}/32", "dev", "lo"], check=True)
    runtime = RuncRuntime(tmp_path / "state", tmp_path / "runc", f"lmwl{tag}-", node_netns=netns)
    try:
        yield Node(netns, runtime, BlobStore(tmp_path / "store"), tmp_path)
    finally:
        for name in runtime.names():
            runtime.destroy(name)
            runtime.delete(name)
        subprocess.run(["ip", "netns", "del", netns], check=False)
    leftovers = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"lmwl{tag}-" not in leftovers


ECHO = {"Cmd": ["/bin/nc", "-ll", "-p", "7", "-e", "/bin/cat"], "User": "app"}


def test_a_container_answers_on_its_eids_and_is_deleted_cleanly(node: Node) -> None:
    echo = node.workload("echo", ECHO, {"io.lispmesh.resources.memory": "32Mi",
                                        "io.lispmesh.resources.pids": "16",
                                        "io.lispmesh.resources.cpus": "0.5"})  # fmt: skip
    node.run(echo)
    assert node.runtime.status("echo").state == "running"
    assert "1 received" in node.sh(f"ping -c1 -W2 {EID4}").stdout
    assert "1 received" in node.sh(f"ping -c1 -W2 {EID6}").stdout

    def echoed() -> str:
        return node.sh(f"echo hello-{EID4} | busybox nc -w 2 {EID4} 7").stdout

    assert wait_until(echoed, 10, "the TCP echo on the EID") == f"hello-{EID4}\n"
    cid = node.runtime.prefix + "echo"
    cgroup = Path("/sys/fs/cgroup")
    if (cgroup / "memory").is_dir():  # cgroup v1 (these machines)
        assert (cgroup / f"memory/lispmesh/{cid}/memory.limit_in_bytes").read_text() == "33554432\n"
        assert (cgroup / f"pids/lispmesh/{cid}/pids.max").read_text() == "16\n"
        assert (cgroup / f"cpu/lispmesh/{cid}/cpu.cfs_quota_us").read_text() == "50000\n"
    stats = node.runtime.stats("echo")
    assert stats.memory_bytes > 0 and stats.pids >= 1
    host_if = echo.attachment.host_if if echo.attachment else ""
    node.runtime.delete("echo")
    assert node.runtime.status("echo").state == "absent" and node.runtime.names() == []
    assert host_if not in node.sh("ip -br link").stdout
    assert not Path(f"/run/netns/{cid}").exists()


def test_the_spec_is_enforced_inside_the_container(node: Node) -> None:
    script = ("id; grep NoNewPrivs /proc/self/status; touch /etc/x 2>/dev/null || echo ro-root;"
              " touch /tmp/y && echo tmp-ok; ip -4 route; echo $GREETING; sleep 600")  # fmt: skip
    probe = node.workload("probe", {"Cmd": ["/bin/sh", "-c", script], "User": "app",
                                    "Env": ["GREETING=from-image"]},
                          {"io.lispmesh.env": '["GREETING=from-annotation"]'})  # fmt: skip
    node.run(probe)
    log = wait_until(lambda: "from-annotation" in (t := node.runtime.logs("probe")) and t, 10,
                     "the probe's output")  # fmt: skip
    assert "uid=1000(app) gid=1000(app) groups=2000(net)" in log
    assert "NoNewPrivs:\t1" in log and "ro-root" in log and "tmp-ok" in log
    assert "default via 169.254.1.1 dev eth0" in log


def test_a_killed_container_is_seen_stopped_and_starts_again(node: Node) -> None:
    echo = node.workload("echo", ECHO, {})
    node.run(echo)
    pid = node.runtime.status("echo").pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: node.runtime.status("echo").exit_code is not None, 10, "its exit status")
    assert node.runtime.status("echo").state == "stopped"
    assert node.runtime.status("echo").exit_code == 128 + signal.SIGKILL  # as a shell says it
    assert node.runtime.names() == ["echo"]
    node.runtime.start("echo")
    assert node.runtime.status("echo").state == "running"
    assert node.runtime.status("echo").pid != pid
    # PID 1 in its namespace ignores SIGTERM (nc has no handler): stop escalates to SIGKILL.
    node.runtime.stop("echo", timeout=0.5)
    assert node.runtime.status("echo").state == "stopped"
    node.runtime.start("echo")
    node.runtime.destroy("echo")
    assert node.runtime.status("echo").state == "stopped"


PROBE_C = r"""
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {  /* move_pages(2) of nothing: allowed to anyone, refused by the profile */
    long r = syscall(SYS_move_pages, 0, 0, 0, 0, 0, 0);
    printf("move_pages: %s\n", r == 0 ? "ok" : strerror(errno));
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc builds the probe (bootstrap.sh)")
def test_the_default_seccomp_filter_blocks_a_syscall_and_the_opt_out_says_so(node: Node) -> None:
    source, probe = node.tmp / "probe.c", node.tmp / "probe"
    source.write_text(PROBE_C)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(probe), str(source)], check=True)
    extra = layer([Entry("bin/probe", data=probe.read_bytes(), mode=0o755)])
    script = "grep Seccomp: /proc/self/status; /bin/probe; sleep 600"
    config = {"Cmd": ["/bin/sh", "-c", script], "User": "app"}
    for name, notes in (("conf", {}), ("free", {"io.lispmesh.seccomp": "unconfined"})):
        layout = node.tmp / f"layout-{name}"
        write_layout(layout, [busybox_layer(), extra], config=config, annotations=notes)
        image = load_image(node.store, node.store.import_layout(layout))
        node.run(Workload(name, image, workload_spec(image), None))
    for name, mode, verdict in (("conf", "2", "Operation not permitted"), ("free", "0", "ok")):
        log = wait_until(lambda n=name: "move_pages" in (t := node.runtime.logs(n)) and t, 10,
                         f"{name}'s output")  # fmt: skip
        assert f"Seccomp:\t{mode}" in log and f"move_pages: {verdict}" in log, (name, log)
