"""One interface for every way a node runs a workload: runc for containers, libvirt for VMs.

The lifecycle (lifecycle.py) says what to do; a `Runtime` does it. Each method is one step, is
safe to repeat (a step interrupted by an agent crash is done again after the restart), and
raises `WorkloadError` with one line on failure. The runtime keeps its own state where its tool
does (runc's state dir, libvirt's domain list), so a restarted agent finds its workloads with
`names()` and `status()` and re-adopts them instead of starting them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import ClassVar, Protocol

from node.workloads.oci_image import Image
from node.workloads.oci_store import BlobStore
from node.workloads.package import WorkloadSpec

GATEWAY4 = IPv4Address("169.254.1.1")  # inside the workload: default via this, onlink (Calico)
GATEWAY6 = IPv6Address("fe80::1")
ENCAP_OVERHEAD = 80  # LISP over UDP over IPv6 + the AEAD tag, with room to spare


@dataclass(frozen=True)
class Attachment:
    """How a workload joins the mesh: its EIDs and the host side of its link (veth or tap)."""

    host_if: str  # at most 15 characters (IFNAMSIZ)
    eid4: IPv4Address | None = None
    eid6: IPv6Address | None = None
    mtu: int = 1500 - ENCAP_OVERHEAD
    netns_dir: str = "/run/netns"  # where a container's namespace is bound (as `ip netns`)


@dataclass(frozen=True)
class Workload:
    name: str  # unique on the node; [a-z0-9][a-z0-9-]*, at most 40 characters
    image: Image
    spec: WorkloadSpec
    attachment: Attachment | None = None


@dataclass(frozen=True)
class RuntimeStatus:
    state: str  # running | stopped | created | paused | absent
    pid: int | None = None
    exit_code: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class Stats:
    memory_bytes: int
    cpu_seconds: float
    pids: int = 0


class Runtime(Protocol):
    kind: ClassVar[str]  # the image kind it runs: "container" or "vm"

    def prepare(self, store: BlobStore, workload: Workload) -> None:
        """Verify the blobs and lay them out (rootfs unpacked, disk copied); idempotent."""

    def define(self, workload: Workload) -> None:
        """Attach the network and define it in the runtime (not started, never autostarted)."""

    def start(self, name: str) -> None: ...

    def stop(self, name: str, timeout: float) -> None:
        """Graceful (SIGTERM, ACPI power button), forced after `timeout` seconds."""

    def destroy(self, name: str) -> None:
        """Forced off at once."""

    def delete(self, name: str) -> None:
        """Out of the runtime, network detached, its files removed; absent is fine."""

    def status(self, name: str) -> RuntimeStatus: ...

    def stats(self, name: str) -> Stats: ...

    def logs(self, name: str, max_bytes: int = 65536) -> str:
        """The end of its console or stdout/stderr."""

    def log_path(self, name: str) -> Path:
        """The file its console or stdout/stderr goes to (it may not exist yet)."""

    def names(self) -> list[str]:
        """Every workload this runtime holds for us (to re-adopt after an agent restart)."""
