"""The controller's workloads applied on a node (node/workloads/managed.py), with VMs on
libvirt's test driver (no root): placed -> imported (digest checked) and running with the
spec's overrides, reported with app and replica; a wrong digest is FAILED once, not retried;
a new version replaces the old copy (stopped and removed first); gone from the list ->
removed; hand-run ones untouched."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from controller_api.gen.lispmesh.v1 import config_pb2  # noqa: E402
from node.workloads.admission import Capacity  # noqa: E402
from node.workloads.libvirt_vm import LibvirtRuntime  # noqa: E402
from node.workloads.managed import ManagedWorkloads  # noqa: E402
from node.workloads.supervisor import Supervisor  # noqa: E402
from tests.oci_build import write_layout  # noqa: E402


@pytest.fixture
def prefix() -> Iterator[str]:
    tag = f"m{secrets.token_hex(3)}-"
    yield tag
    conn = libvirt.open("test:///default")
    for domain in conn.listAllDomains():
        if domain.name().startswith(tag):
            if domain.isActive():
                domain.destroy()
            domain.undefine()
    conn.close()


def _workload(layout: Path, digest: str, version: str = "v1") -> config_pb2.Workload:
    return config_pb2.Workload(
        name="web-0", app="web", replica=0, image=f"local/web@{digest}", image_digest=digest,
        image_source=f"file://{layout}", kind="vm", version=version,
        resources=config_pb2.WorkloadResources(memory_bytes=96 << 20, millicpu=500,
                                               disk_bytes=1 << 30),
        env={"MODE": "edge"}, labels={"app": "web"},
    )  # fmt: skip


def test_placed_workloads_run_report_and_go(tmp_path: Path, prefix: str) -> None:
    layout = tmp_path / "img"
    notes = {"io.lispmesh.kind": "vm", "io.lispmesh.resources.memory": "64Mi"}
    digest = write_layout(layout, [], annotations=notes, ref="vm",
                          vm_blobs=[("kernel", b"\x7fELF")])  # fmt: skip

    def vms() -> LibvirtRuntime:
        return LibvirtRuntime(tmp_path / "state/vms", "test:///default", prefix, make_taps=False)

    sup = Supervisor(tmp_path / "state", {"vm": vms}, capacity=Capacity(4 << 30, 2, 100 << 30))
    managed = ManagedWorkloads(sup, prefix)
    sup.run(layout, "by-hand")  # started with `lispmesh app run`: never touched

    bad = _workload(layout, "sha256:" + "0" * 64)
    managed.apply([bad])
    (failed,) = [r for r in managed.report(sup.list()) if r.name == "web-0"]
    assert failed.state == "FAILED" and "not sha256:000" in failed.last_error
    assert (failed.app, failed.replica) == ("web", 0)
    managed.apply([bad])  # the same version is not tried again
    assert "web-0" not in sup.entries

    managed.apply([_workload(layout, digest)])
    entry = sup.entries["web-0"]
    assert entry.workload.spec.resources.memory == 96 << 20  # the app spec's, not the image's
    assert "MODE=edge" in entry.workload.spec.env and entry.workload.spec.labels["app"] == "web"
    (row,) = [r for r in managed.report(sup.list()) if r.name == "web-0"]
    assert (row.state, row.app, row.version) == ("RUNNING", "web", "v1")

    before = sup.entries["web-0"].machine
    managed.apply([_workload(layout, digest, "v2")])  # an update: the old copy goes, then v2
    _settle(sup)
    managed.apply([_workload(layout, digest, "v2")])
    assert sup.entries["web-0"].managed["version"] == "v2"  # type: ignore[index]
    assert (
        sup.entries["web-0"].machine is not before and sup.describe("web-0")["state"] == "RUNNING"
    )

    managed.apply([])
    _settle(sup)
    assert set(sup.entries) == {"by-hand"}


def _settle(sup: Supervisor) -> None:
    """Supervision steps (the agent runs one a second) until removals are done; bounded."""
    for _ in range(20):
        if all(e.machine.desired.value != "absent" for e in sup.entries.values()):
            return
        sup.step()
