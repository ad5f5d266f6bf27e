"""A real VM workload (the slower tier): Debian's kernel and a busybox initramfs (tests/vm_assets,
fetched from Debian's archive once) shipped as an OCI VM image, run by libvirt under qemu/TCG
(KVM is unusable here: detected, not assumed) with its own EIDs on a tap from a "node"
namespace; it answers ping and a TCP echo on them, then stops (ACPI, destroyed after the
timeout) and is deleted. libvirtd and virtlogd run inside the test's namespace and are stopped
by pid; the namespace and state dir are removed, also on failure."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from lispmesh.waiting import wait_until  # noqa: E402
from node.workloads.libvirt_vm import LibvirtRuntime  # noqa: E402
from node.workloads.oci_image import load_image  # noqa: E402
from node.workloads.oci_store import BlobStore  # noqa: E402
from node.workloads.package import workload_spec  # noqa: E402
from node.workloads.runtime import Attachment, Workload  # noqa: E402
from tests.oci_build import BUSYBOX, write_layout  # noqa: E402
from tests.vm_assets import READY, guest  # noqa: E402

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and libvirtd"),
    pytest.mark.skipif(shutil.which("libvirtd") is None, reason="libvirt not installed"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu not installed"),
    pytest.mark.skipif(not BUSYBOX.exists(), reason="busybox-static not installed"),
]
CACHE = Path("/var/cache/lispmesh-tests/guest")
EID4, EID6 = ip_address("10.95.0.9"), ip_address("fd00:95::9")


def _kill(pid_file: Path) -> None:
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), 10, f"pid {pid} to exit")


@pytest.fixture
def libvirtd() -> Iterator[tuple[str, Path]]:
    """libvirtd + virtlogd in a namespace of their own (qemu and the tap live there too)."""
    if Path("/run/libvirt/libvirt-sock").exists():
        pytest.skip("a libvirtd is already running on this machine")
    netns = f"lmvm-{secrets.token_hex(3)}"
    # World-traversable: qemu runs as libvirt-qemu and must reach the kernel and initrd.
    state = Path(tempfile.mkdtemp(prefix="lispmesh-vm-", dir="/var/tmp"))
    state.chmod(0o755)
    Path("/var/log/libvirt").mkdir(parents=True, exist_ok=True)
    subprocess.run(["ip", "netns", "add", netns], check=True)
    pids = [state / "virtlogd.pid", state / "libvirtd.pid"]
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", netns, "addr", "add", "10.95.0.1/32", "dev", "lo"], check=True)
        for daemon, pid in zip(("virtlogd", "libvirtd"), pids, strict=True):
            subprocess.run(["ip", "netns", "exec", netns, daemon, "-d", "-p", str(pid)],
                           check=True, timeout=30)  # fmt: skip

        def connects() -> bool:
            try:
                libvirt.open("qemu:///system").close()
                return True
            except libvirt.libvirtError:
                return False

        wait_until(connects, 30, "libvirtd to listen")
        yield netns, state
    finally:
        for pid in reversed(pids):
            _kill(pid)
        subprocess.run(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(state, ignore_errors=True)


def test_a_qemu_vm_boots_and_answers_on_its_eids(libvirtd: tuple[str, Path]) -> None:
    netns, state = libvirtd
    kernel, initrd = guest(CACHE)
    notes = {"io.lispmesh.kind": "vm", "io.lispmesh.resources.memory": "256Mi",
             "io.lispmesh.vm.cmdline": "console=ttyS0 panic=-1 quiet"}  # fmt: skip
    blobs = [("kernel", kernel.read_bytes()), ("initrd", initrd.read_bytes())]
    write_layout(state / "layout", [], annotations=notes, vm_blobs=blobs)
    store = BlobStore(state / "store")
    image = load_image(store, store.import_layout(state / "layout"))
    runtime = LibvirtRuntime(state / "vms", "qemu:///system", "lmvm-", node_netns=netns)
    try:
        assert runtime.domain_type in ("kvm", "qemu")
        workload = Workload("guest", image, workload_spec(image),
                            Attachment("lmvmtap0", EID4, EID6))  # fmt: skip
        runtime.prepare(store, workload)
        runtime.define(workload)
        runtime.start("guest")
        assert runtime.status("guest").state == "running"
        try:
            wait_until(lambda: READY in runtime.logs("guest"), 120, "the guest to boot (TCG)")
        except AssertionError:
            qemu_log = Path("/var/log/libvirt/qemu/lmvm-guest.log")
            raise AssertionError(f"console:\n{runtime.logs('guest')[-3000:]}\nqemu:\n"
                                 f"{qemu_log.read_text()[-2000:] if qemu_log.exists() else ''}"
                                 ) from None  # fmt: skip

        def in_node(script: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["ip", "netns", "exec", netns, "sh", "-c", script],
                                  capture_output=True, text=True, timeout=20)  # fmt: skip

        for address in (EID4, EID6):
            try:
                wait_until(lambda a=address: in_node(f"ping -c1 -W1 {a}").returncode == 0, 30,
                           f"the guest to answer ping on {address}")  # fmt: skip
            except AssertionError as exc:
                raise AssertionError(f"{exc}; console:\n{runtime.logs('guest')[-3000:]}") from None
        echo = in_node(f"echo hello-vm | busybox nc -w 3 {EID4} 7")
        assert echo.stdout == "hello-vm\n", runtime.logs("guest")[-2000:]
        assert runtime.stats("guest").memory_bytes >= 256 << 20
        runtime.stop("guest", timeout=2)  # no acpid in this guest: destroyed after the timeout
        assert runtime.status("guest").state == "stopped"
        runtime.delete("guest")
        assert runtime.status("guest").state == "absent" and runtime.names() == []
        assert "lmvmtap0" not in in_node("ip -br link").stdout
    finally:
        for name in runtime.names():
            runtime.delete(name)
        runtime.close()
