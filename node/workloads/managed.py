"""The workloads the controller placed on this node (DesiredState.workloads), applied with the
supervisor: what is listed and not running is imported and started, what runs and is no longer
listed (or at another version) is stopped and removed. Workloads started by hand (`lispmesh app
run`) are never touched.

The image comes from a path on this node (`file:///PATH`, an OCI layout dir or tarball), checked
against the digest the controller pinned; over-the-mesh import from the controller is later.
Each workload gets the EIDs the controller assigned (a /32 and a /128 from the app pool), routed
to its own link, and the node registers them as more-specifics (they are in its eid_prefixes).

A workload that cannot be created (admission refused it, the image is missing or not the pinned
one) is reported FAILED with the reason, and not tried again unless the controller changes it:
the controller places it elsewhere.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_interface
from pathlib import Path
from typing import Any

from common.errors import LispmeshError
from controller_api.gen.lispmesh.v1 import config_pb2, status_pb2
from node.workloads.lifecycle import Desired
from node.workloads.runtime import Attachment
from node.workloads.supervisor import Supervisor

log = logging.getLogger("lispmesh.agent.workloads")


def host_if(prefix: str, name: str) -> str:
    """The host side of the workload's link: 15 characters at most, unique per prefix+name."""
    return "lmw" + hashlib.sha256(f"{prefix}{name}".encode()).hexdigest()[:12]


def managed_doc(w: config_pb2.Workload) -> dict[str, Any]:
    r = w.resources
    return {
        "app": w.app, "replica": w.replica, "version": w.version, "digest": w.image_digest,
        "image": w.image, "eids": list(w.eids), "ports": list(w.ports), "env": dict(w.env),
        "labels": dict(w.labels),
        "resources": {"memory": r.memory_bytes, "millicpu": r.millicpu, "disk": r.disk_bytes},
    }  # fmt: skip


def _attachment(prefix: str, w: config_pb2.Workload) -> Attachment | None:
    eid4: IPv4Address | None = None
    eid6: IPv6Address | None = None
    for text in w.eids:
        address = ip_interface(text).ip
        if isinstance(address, IPv4Address):
            eid4 = address
        else:
            eid6 = address
    if eid4 is None and eid6 is None:
        return None
    return Attachment(host_if(prefix, w.name), eid4, eid6)


def _source(w: config_pb2.Workload) -> Path:
    if not w.image_source.startswith("file:///"):
        raise LispmeshError(
            f"{w.name}: image source {w.image_source or '(none)'!r}: this node imports from a "
            "local path only (file:///PATH; spec.source)"
        )
    return Path(w.image_source.removeprefix("file://"))


@dataclass
class ManagedWorkloads:
    supervisor: Supervisor
    prefix: str = "lm-"
    # name -> the workload that could not be created and why: not retried unless it changes
    failed: dict[str, tuple[config_pb2.Workload, str]] = field(default_factory=dict)
    forwarding: bool = False

    def apply(self, wanted: list[config_pb2.Workload]) -> None:
        """One pass under the supervisor's lock (the supervision step runs beside it)."""
        by_name = {w.name: w for w in wanted}
        sup = self.supervisor
        if wanted and not self.forwarding:
            enable_forwarding()
            self.forwarding = True
        with sup.locked():
            for name, entry in list(sup.entries.items()):
                managed = entry.managed
                if managed is None:
                    continue
                w = by_name.get(name)
                gone = w is None or w.version != managed.get("version")
                if gone and entry.machine.desired != Desired.ABSENT:
                    log.info("workload %s: no longer placed here (or updated): removing", name)
                    sup.want(name, Desired.ABSENT)
            self.failed = {n: f for n, f in self.failed.items() if n in by_name}
            for name, w in sorted(by_name.items()):
                failed = self.failed.get(name)
                if name in sup.entries or (failed is not None and failed[0] == w):
                    continue
                try:
                    source = _source(w)
                    doc = sup.run(
                        source, name, None, _attachment(self.prefix, w), managed=managed_doc(w)
                    )
                except (LispmeshError, OSError) as exc:
                    log.error("workload %s (app %s): %s", name, w.app, exc)
                    self.failed[name] = (w, str(exc))
                    continue
                self.failed.pop(name, None)
                log.info("workload %s (app %s replica %d): %s", name, w.app, w.replica,
                         doc["state"])  # fmt: skip

    def report(self, rows: list[dict[str, Any]]) -> list[status_pb2.WorkloadStatus]:
        """Every workload, as the controller reads it (`rows`: `Supervisor.list()`)."""
        out = []
        for row in rows:
            m = row.get("managed") or {}
            out.append(
                status_pb2.WorkloadStatus(
                    name=row["name"],
                    app=m.get("app", ""),
                    replica=int(m.get("replica", 0)),
                    state=row["state"],
                    eids=row.get("eids", []),
                    last_error=row.get("last_error") or "",
                    version=m.get("version", ""),
                    restarts=int(row.get("restarts", 0)),
                    image_digest=row.get("digest", ""),
                    exit_code=row.get("exit_code"),
                )
            )
        present = {row["name"] for row in rows}
        for name, (w, error) in sorted(self.failed.items()):
            if name in present:
                continue
            out.append(status_pb2.WorkloadStatus(name=name, app=w.app, replica=w.replica,
                                                 state="FAILED", last_error=error,
                                                 version=w.version, eids=list(w.eids)))  # fmt: skip
        return out


def enable_forwarding() -> None:
    """The node routes between its workloads' links and the mesh (TUN): IP forwarding on."""
    for path in ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"):
        try:
            Path(path).write_text("1")
        except OSError as exc:
            log.error("cannot turn on forwarding (%s): %s", path, exc)


def node_capacity(supervisor: Supervisor) -> status_pb2.WorkloadCapacity:
    """What this node offers workloads (its real capacity less its reserve) and its runtimes."""
    cap = supervisor.capacity()
    kinds = ["container"] if shutil.which("runc") else []
    if shutil.which("qemu-system-x86_64") and importlib.util.find_spec("libvirt") is not None:
        kinds.append("vm")
    hypervisors = (
        (["kvm"] if os.access("/dev/kvm", os.R_OK | os.W_OK) else ["tcg"]) if "vm" in kinds else []
    )
    return status_pb2.WorkloadCapacity(
        memory_bytes=cap.memory, millicpu=int(cap.cpus * 1000), disk_bytes=cap.disk_free,
        kinds=kinds, hypervisors=hypervisors,
    )  # fmt: skip
