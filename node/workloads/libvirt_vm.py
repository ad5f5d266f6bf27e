"""VMs with libvirt: the `Runtime` for VM images (qemu; `test:///default` in unit tests).

Per workload, under the state dir: `<name>/disk` (a copy of the image's disk: the guest writes
to it, never to the content store) or `<name>/kernel` + `<name>/initrd`, each copied while its
sha256 is checked, and `<name>/console.log` (the serial console). The domain is `<prefix><name>`,
defined persistently (so a restarted agent finds it with `names()`), never autostarted by
libvirt: the agent owns restarts. The domain type is `kvm` when libvirt says the machine can, else
`qemu` (TCG) — `domain_type` says which, for status. Stop presses the ACPI power button and
destroys after the timeout. Lifecycle events (started, stopped, crashed, ...) arrive through
libvirt's event loop on a thread of ours (`events()` drains them).
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, ClassVar

import libvirt

from node.workloads import netattach
from node.workloads.domain_xml import VmFiles, domain_xml
from node.workloads.errors import WorkloadError
from node.workloads.oci_store import BlobStore
from node.workloads.runtime import Attachment, RuntimeStatus, Stats, Workload

POLL = 0.05
_EVENTS = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined", libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started", libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed", libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown", libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}  # fmt: skip
_STOPPED_DETAIL = {
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "failed",
}
_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused", libvirt.VIR_DOMAIN_PMSUSPENDED: "paused",
}  # fmt: skip


class _EventLoop:
    """libvirt's default event loop, run on one daemon thread for the whole process."""

    _lock = threading.Lock()
    _thread: threading.Thread | None = None

    @classmethod
    def ensure(cls) -> None:
        with cls._lock:
            if cls._thread is None:
                libvirt.virEventRegisterDefaultImpl()
                # A timer keeps the loop turning so it never blocks forever in poll().
                libvirt.virEventAddTimeout(500, lambda *_: None, None)
                cls._thread = threading.Thread(target=cls._run, name="libvirt-events", daemon=True)
                cls._thread.start()

    @staticmethod
    def _run() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()


def _quiet(_ctx: Any, _err: Any) -> None:
    """libvirt prints every error to stderr by default; ours are raised as WorkloadError."""


class LibvirtRuntime:
    kind: ClassVar[str] = "vm"

    def __init__(
        self,
        state_dir: Path,
        uri: str = "qemu:///system",
        prefix: str = "lm-",
        node_netns: str | None = None,
        make_taps: bool = True,
    ) -> None:
        self.state_dir = state_dir
        self.prefix = prefix
        self.node_netns = node_netns
        self.make_taps = make_taps  # False for the test driver (no root, no qemu)
        self._events: queue.Queue[tuple[str, str, str]] = queue.Queue()
        libvirt.registerErrorHandler(_quiet, None)
        _EventLoop.ensure()
        try:
            self.conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise WorkloadError(f"libvirt {uri}: {exc.get_error_message()}") from None
        self._callback = self.conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_event, None
        )
        self.domain_type = self._detect_domain_type()

    def close(self) -> None:
        try:
            self.conn.domainEventDeregisterAny(self._callback)
        finally:
            self.conn.close()

    def _detect_domain_type(self) -> str:
        if self.conn.getType() == "TEST":
            return "test"
        # libvirt offers kvm wherever /dev/kvm exists, even where it cannot run a guest (a PVM
        # host without vmx, as on the CI machines): ask the CPU for hardware virtualization too.
        if not _cpu_virtualizes():
            return "qemu"  # TCG: slower, but runs anywhere
        try:
            self.conn.getDomainCapabilities(None, "x86_64", None, "kvm")
            return "kvm"
        except libvirt.libvirtError:
            return "qemu"

    def _id(self, name: str) -> str:
        return self.prefix + name

    def _dir(self, name: str) -> Path:
        return self.state_dir / name

    def _domain(self, name: str) -> Any:
        try:
            return self.conn.lookupByName(self._id(name))
        except libvirt.libvirtError:
            return None

    def _call(self, what: str, name: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except libvirt.libvirtError as exc:
            raise WorkloadError(f"{name}: libvirt {what}: {exc.get_error_message()}") from None

    def _on_event(self, _conn: Any, domain: Any, event: int, detail: int, _opaque: Any) -> None:
        name = domain.name()
        if name.startswith(self.prefix):
            what = _EVENTS.get(event, str(event))
            extra = _STOPPED_DETAIL.get(detail, "") if what == "stopped" else ""
            self._events.put((name[len(self.prefix) :], what, extra))

    def events(self) -> list[tuple[str, str, str]]:
        """Lifecycle events since the last call: (workload, event, detail)."""
        drained = []
        while True:
            try:
                drained.append(self._events.get_nowait())
            except queue.Empty:
                return drained

    # -- Runtime -----------------------------------------------------------------------------

    def prepare(self, store: BlobStore, workload: Workload) -> None:
        directory = self._dir(workload.name)
        marker = directory / "image"
        if marker.is_file() and marker.read_text() == workload.image.manifest_digest:
            return
        directory.mkdir(parents=True, exist_ok=True)
        marker.unlink(missing_ok=True)
        for role in ("disk", "kernel", "initrd"):
            descriptor = workload.image.vm_blob(role)
            if descriptor is not None:
                where = f"{workload.image.source}: {role} ({descriptor.digest[:19]})"
                store.copy_verified(descriptor, directory / role, where)
        marker.write_text(workload.image.manifest_digest)

    def define(self, workload: Workload) -> None:
        directory = self._dir(workload.name)
        if not (directory / "image").is_file():
            raise WorkloadError(f"{workload.name}: not prepared (no disk or kernel)")
        mac = ""
        if workload.attachment is not None and self.make_taps:
            mac = netattach.attach_tap(workload.attachment, self.node_netns)
        disk = workload.image.vm_blob("disk")
        files = VmFiles(
            console=directory / "console.log",
            disk=directory / "disk" if disk else None,
            disk_format="raw" if disk and disk.media_type.endswith("raw") else "qcow2",
            kernel=directory / "kernel" if (directory / "kernel").exists() else None,
            initrd=directory / "initrd" if (directory / "initrd").exists() else None,
        )
        xml = domain_xml(workload, self._id(workload.name), files, self.domain_type, mac)
        (directory / "domain.xml").write_text(xml)
        flags = libvirt.VIR_DOMAIN_DEFINE_VALIDATE
        domain = self._call("define", workload.name, self.conn.defineXMLFlags, xml, flags)
        self._call("autostart", workload.name, domain.setAutostart, 0)

    def start(self, name: str) -> None:
        domain = self._domain(name)
        if domain is None:
            raise WorkloadError(f"{name}: not defined")
        if not domain.isActive():
            self._call("start", name, domain.createWithFlags, 0)

    def stop(self, name: str, timeout: float) -> None:
        domain = self._domain(name)
        if domain is None or not domain.isActive():
            return
        try:
            domain.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        except libvirt.libvirtError:
            # A driver without the ACPI flag (the test driver): its default shutdown; if that
            # cannot be asked either, it is destroyed after the timeout.
            with contextlib.suppress(libvirt.libvirtError):
                domain.shutdown()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and domain.isActive():
            time.sleep(POLL)
        if domain.isActive():
            self.destroy(name)

    def destroy(self, name: str) -> None:
        domain = self._domain(name)
        if domain is not None and domain.isActive():
            self._call("destroy", name, domain.destroy)

    def delete(self, name: str) -> None:
        domain = self._domain(name)
        if domain is not None:
            self.destroy(name)
            flags = (libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                     | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)  # fmt: skip
            try:
                domain.undefineFlags(flags)
            except libvirt.libvirtError:  # a driver without those flags (the test driver)
                self._call("undefine", name, domain.undefine)
        directory = self._dir(name)
        if self.make_taps and (directory / "domain.xml").exists():
            tap = _tap_of(directory / "domain.xml")
            if tap:
                netattach.detach_tap(Attachment(tap), self.node_netns)
        if directory.exists():
            shutil.rmtree(directory)

    def status(self, name: str) -> RuntimeStatus:
        domain = self._domain(name)
        if domain is None:
            return RuntimeStatus("absent")
        state, reason = domain.state()
        detail = "crashed" if state == libvirt.VIR_DOMAIN_CRASHED else ""
        return RuntimeStatus(_STATES.get(state, "stopped"), None, None, detail or str(reason))

    def stats(self, name: str) -> Stats:
        domain = self._domain(name)
        if domain is None:
            raise WorkloadError(f"{name}: not defined")
        _state, _max_kib, memory_kib, _vcpus, cpu_ns = domain.info()
        return Stats(memory_bytes=memory_kib * 1024, cpu_seconds=cpu_ns / 1e9)

    def log_path(self, name: str) -> Path:
        return self._dir(name) / "console.log"

    def logs(self, name: str, max_bytes: int = 65536) -> str:
        path = self.log_path(name)
        try:
            with path.open("rb") as log:
                log.seek(max(0, log.seek(0, 2) - max_bytes))
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def names(self) -> list[str]:
        return sorted(
            d.name()[len(self.prefix) :]
            for d in self.conn.listAllDomains()
            if d.name().startswith(self.prefix)
        )


def _cpu_virtualizes(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    try:
        flags = {word for line in cpuinfo.read_text().splitlines()
                 if line.startswith("flags") for word in line.split()}  # fmt: skip
    except OSError:
        return False
    return bool(flags & {"vmx", "svm"})


def _tap_of(domain_file: Path) -> str:
    target = ET.parse(domain_file).find("devices/interface/target")
    return target.get("dev", "") if target is not None else ""
