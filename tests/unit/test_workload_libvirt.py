"""VM workloads against libvirt's test driver (test:///default: no daemon, no root, no qemu):
domain XML, the lifecycle through the Runtime interface, lifecycle events, verified copies."""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from lispmesh.waiting import wait_until  # noqa: E402
from node.workloads.domain_xml import VmFiles, domain_xml  # noqa: E402
from node.workloads.errors import ImageError, WorkloadError  # noqa: E402
from node.workloads.libvirt_vm import LibvirtRuntime  # noqa: E402
from node.workloads.oci_image import load_image  # noqa: E402
from node.workloads.oci_store import BlobStore  # noqa: E402
from node.workloads.package import workload_spec  # noqa: E402
from node.workloads.runtime import Attachment, Workload  # noqa: E402
from tests.oci_build import write_layout  # noqa: E402

VM_NOTES = {
    "io.lispmesh.kind": "vm", "io.lispmesh.vm.cmdline": "console=ttyS0 quiet",
    "io.lispmesh.resources.memory": "96Mi", "io.lispmesh.resources.cpus": "0.5",
}  # fmt: skip


def _vm(tmp_path: Path, name: str = "vm1") -> tuple[BlobStore, Workload]:
    blobs = [("kernel", b"\x7fELF kernel"), ("initrd", b"070701 initrd")]
    write_layout(tmp_path / "layout", [], annotations=VM_NOTES, vm_blobs=blobs)
    store = BlobStore(tmp_path / "store")
    image = load_image(store, store.import_layout(tmp_path / "layout"))
    attachment = Attachment("lmtap0", ip_address("10.97.0.9"), ip_address("fd00:97::9"))
    return store, Workload(name, image, workload_spec(image), attachment)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[LibvirtRuntime]:
    rt = LibvirtRuntime(tmp_path / "vms", "test:///default", f"t{secrets.token_hex(3)}-",
                        make_taps=False)  # fmt: skip
    try:
        yield rt
    finally:
        for name in rt.names():
            rt.delete(name)
        rt.close()


def test_domain_xml_for_a_kernel_boot(tmp_path: Path) -> None:
    _, workload = _vm(tmp_path)
    files = VmFiles(console=Path("/s/console.log"), kernel=Path("/s/kernel"),
                    initrd=Path("/s/initrd"))  # fmt: skip
    root = ET.fromstring(domain_xml(workload, "lm-vm1", files, "qemu", "aa:bb:cc:dd:ee:ff"))
    assert root.get("type") == "qemu" and root.findtext("name") == "lm-vm1"
    assert root.findtext("memory") == str(96 * 1024) and root.findtext("vcpu") == "1"
    assert root.findtext("cputune/quota") == "50000"
    assert root.find("features/acpi") is not None
    assert root.findtext("on_poweroff") == "destroy" and root.findtext("on_crash") == "destroy"
    assert root.findtext("os/kernel") == "/s/kernel" and root.findtext("os/initrd") == "/s/initrd"
    cmdline = root.findtext("os/cmdline") or ""
    assert cmdline.startswith("console=ttyS0 quiet lispmesh.eid4=10.97.0.9 lispmesh.gw4=169.254")
    assert "lispmesh.eid6=fd00:97::9" in cmdline and "lispmesh.gwmac=aa:bb:cc:dd:ee:ff" in cmdline
    nic = root.find("devices/interface")
    assert nic is not None and nic.get("type") == "ethernet"
    assert nic.find("target").attrib == {"dev": "lmtap0", "managed": "no"}  # type: ignore[union-attr]
    assert root.find("devices/serial/source").get("path") == "/s/console.log"  # type: ignore[union-attr]
    disk_boot = ET.fromstring(
        domain_xml(workload, "x", VmFiles(Path("/c"), disk=Path("/d")), "kvm")
    )
    assert disk_boot.find("os/boot").get("dev") == "hd"  # type: ignore[union-attr]
    assert disk_boot.find("devices/disk/source").get("file") == "/d"  # type: ignore[union-attr]


def test_a_vm_through_its_whole_lifecycle_with_events(
    tmp_path: Path, runtime: LibvirtRuntime
) -> None:
    store, workload = _vm(tmp_path)
    assert runtime.domain_type == "test" and runtime.status("vm1").state == "absent"
    runtime.prepare(store, workload)
    assert (tmp_path / "vms/vm1/kernel").read_bytes() == b"\x7fELF kernel"
    runtime.define(workload)
    domain = runtime.conn.lookupByName(runtime.prefix + "vm1")
    assert domain.autostart() == 0 and runtime.names() == ["vm1"]
    assert runtime.status("vm1").state == "stopped"
    runtime.start("vm1")
    runtime.start("vm1")  # again: already running is fine
    assert runtime.status("vm1").state == "running"
    assert runtime.stats("vm1").memory_bytes > 0
    runtime.stop("vm1", timeout=5)
    assert runtime.status("vm1").state == "stopped"
    runtime.start("vm1")
    runtime.destroy("vm1")
    assert runtime.status("vm1").state == "stopped"

    seen: list[tuple[str, str, str]] = []

    def got_all() -> bool:
        seen.extend(runtime.events())
        kinds = [e[1] for e in seen]
        return kinds.count("started") == 2 and kinds.count("stopped") == 2

    wait_until(got_all, 10, "libvirt lifecycle events")
    assert ("vm1", "stopped", "shutdown") in seen and ("vm1", "stopped", "destroyed") in seen
    assert ("vm1", "defined", "") in seen
    runtime.delete("vm1")
    assert runtime.status("vm1").state == "absent" and not (tmp_path / "vms/vm1").exists()
    runtime.delete("vm1")  # absent is fine


def test_a_tampered_vm_blob_is_not_copied(tmp_path: Path, runtime: LibvirtRuntime) -> None:
    store, workload = _vm(tmp_path)
    kernel = workload.image.vm_blob("kernel")
    assert kernel is not None
    store.path(kernel.digest).write_bytes(b"\x7fELF evil!!")  # same size, other bytes
    with pytest.raises(ImageError) as exc:
        runtime.prepare(store, workload)
    assert "kernel" in str(exc.value) and "tampered" in str(exc.value)
    assert not (tmp_path / "vms/vm1/kernel").exists()
    assert not (tmp_path / "vms/vm1/image").exists()
    with pytest.raises(WorkloadError) as exc:
        runtime.define(workload)
    assert "not prepared" in str(exc.value)
    with pytest.raises(WorkloadError) as exc:
        runtime.start("never")
    assert "not defined" in str(exc.value)
