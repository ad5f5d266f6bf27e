"""The node's workload supervisor and `lispmesh app`, with VMs on libvirt's test driver (no root):
run, crash -> restart after backoff, re-adoption by a new supervisor, admission, removal."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

libvirt = pytest.importorskip("libvirt")

from lispmesh import cli  # noqa: E402
from node.workloads.admission import VM_OVERHEAD, Capacity, admit  # noqa: E402
from node.workloads.errors import ImageError  # noqa: E402
from node.workloads.libvirt_vm import LibvirtRuntime  # noqa: E402
from node.workloads.lifecycle import Desired  # noqa: E402
from node.workloads.package import Resources, WorkloadSpec  # noqa: E402
from node.workloads.supervisor import Supervisor  # noqa: E402
from tests.oci_build import write_layout  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30


def _layout(path: Path, memory: str = "64Mi") -> Path:
    notes = {"io.lispmesh.kind": "vm", "io.lispmesh.resources.memory": memory}
    write_layout(path, [], annotations=notes, ref="vm", vm_blobs=[("kernel", b"\x7fELF")])
    return path


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def prefix() -> Iterator[str]:
    tag = f"s{secrets.token_hex(3)}-"
    yield tag
    conn = libvirt.open("test:///default")
    for domain in conn.listAllDomains():
        if domain.name().startswith(tag):
            if domain.isActive():
                domain.destroy()
            domain.undefine()
    conn.close()


def _supervisor(tmp_path: Path, prefix: str, clock: Clock, **kw: Any) -> Supervisor:
    def vms() -> LibvirtRuntime:
        return LibvirtRuntime(tmp_path / "state/vms", "test:///default", prefix, make_taps=False)

    capacity = kw.pop("capacity", Capacity(4 * GiB, 2, 100 * GiB))
    return Supervisor(tmp_path / "state", {"vm": vms}, capacity=capacity, clock=clock, **kw)


def test_a_crashed_workload_restarts_after_backoff_and_a_new_supervisor_adopts_it(
    tmp_path: Path, prefix: str
) -> None:
    clock = Clock()
    first = _supervisor(tmp_path, prefix, clock)
    doc = first.run(_layout(tmp_path / "img"), "web")
    assert doc["state"] == "RUNNING" and doc["kind"] == "vm" and doc["restarts"] == 0
    domain = libvirt.open("test:///default").lookupByName(prefix + "web")
    domain.destroy()  # it dies behind the supervisor's back
    first.step()
    assert first.entries["web"].machine.state == "BROKEN"
    clock.now += 400  # past any backoff
    first.step()
    assert domain.isActive() and first.describe("web")["restarts"] == 1

    second = _supervisor(tmp_path, prefix, clock)  # the agent restarted
    second.load()
    second.step()
    adopted = second.describe("web", detail=True)
    assert adopted["state"] == "RUNNING" and adopted["restarts"] == 1
    assert adopted["runtime"]["state"] == "running" and adopted["usage"]["memory_bytes"] > 0

    assert second.want("web", Desired.HALTED)["state"] == "HALTED" and not domain.isActive()
    assert second.want("web", Desired.ABSENT)["state"] == "DELETED"
    assert second.list() == [] and not (tmp_path / "state/records/web.json").exists()
    assert prefix + "web" not in [
        d.name() for d in libvirt.open("test:///default").listAllDomains()
    ]


def test_admission_refuses_what_does_not_fit(tmp_path: Path, prefix: str) -> None:
    clock = Clock()
    small = _supervisor(tmp_path, prefix, clock, capacity=Capacity(300 * MiB, 2, 100 * GiB))
    small.run(_layout(tmp_path / "a", "128Mi"), "a")
    with pytest.raises(Exception) as exc:
        small.run(_layout(tmp_path / "b", "128Mi"), "b")
    assert "refused by admission control: needs 194 MiB of memory, 106 MiB free" in str(exc.value)
    assert list(small.entries) == ["a"]
    vm = WorkloadSpec("vm", (), (), "/", "", Resources(memory=GiB), ())
    box = WorkloadSpec("container", ("/x",), (), "/", "", Resources(memory=GiB, cpus=3), ())
    capacity = Capacity(2 * GiB, 2, 10 * GiB)
    assert admit(capacity, [], vm) == ""
    assert admit(Capacity(GiB + VM_OVERHEAD, 2, GiB), [], vm).startswith("needs 1104 MiB")
    assert admit(capacity, [], box) == "asks for 3 CPUs, the node has 2"
    one = WorkloadSpec("container", ("/x",), (), "/", "", Resources(memory=MiB, cpus=1), ())
    assert admit(capacity, [one] * 7, one) == ""
    assert admit(capacity, [one] * 8, one) == "9 CPUs asked in all, more than 4x the node's 2"
    assert "MiB free" in admit(Capacity(4 * GiB, 2, MiB), [], vm)


def test_a_tampered_image_fails_with_its_reason_and_never_runs(tmp_path: Path, prefix: str) -> None:
    clock = Clock()
    supervisor = _supervisor(tmp_path, prefix, clock)
    layout = _layout(tmp_path / "img")
    supervisor.run(layout, "ok")
    kernel = supervisor.entries["ok"].workload.image.vm_blob("kernel")
    assert kernel is not None
    supervisor.store.path(kernel.digest).write_bytes(b"\x7fBAD")  # the store's disk is altered
    doc = supervisor.purge("ok")  # rebuilt from the store: verified again
    assert doc["state"] == "FAILED" and "tampered" in doc["last_error"]
    assert prefix + "ok" not in [d.name() for d in libvirt.open("test:///default").listAllDomains()]
    assert supervisor.purge("ok")["state"] == "FAILED"  # and stays so: nothing retried
    (layout / "blobs/sha256" / kernel.hex).write_bytes(b"\x7fBAD")
    with pytest.raises(ImageError) as exc:
        supervisor.run(layout, "bad")
    assert "tampered" in str(exc.value) and "bad" not in supervisor.entries


def test_the_app_verbs(tmp_path: Path, prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--state-dir", str(tmp_path / "s"), "--libvirt-uri", "test:///default",
              "--prefix", prefix]  # fmt: skip
    layout = _layout(tmp_path / "img")
    assert cli.main(["app", "run", str(layout), "--name", "vm1", "--json", *common]) == 0
    run = json.loads(capsys.readouterr().out)
    assert run["state"] == "RUNNING" and run["name"] == "vm1"
    assert cli.main(["app", "ls", "--json", *common]) == 0
    assert [row["name"] for row in json.loads(capsys.readouterr().out)] == ["vm1"]
    assert cli.main(["app", "ls", *common]) == 0
    assert "vm1" in capsys.readouterr().out
    assert cli.main(["app", "inspect", "vm1", "--json", *common]) == 0
    assert json.loads(capsys.readouterr().out)["runtime"]["state"] == "running"
    assert cli.main(["app", "run", str(layout), "--name", "vm1", *common]) == 1
    error = capsys.readouterr().err
    assert error == "lispmesh: error: a workload named 'vm1' exists already (rm it first)\n"
    assert cli.main(["app", "run", str(tmp_path / "nothing"), *common]) == 1
    assert "no such image layout" in capsys.readouterr().err
    # logs: the end of its console, by lines; an app's name gives its replicas (none here).
    from node.workloads.supervisor import node_supervisor

    node = node_supervisor(tmp_path / "s", None, prefix, "test:///default", None, 1.0)
    with node.locked():
        ((_, console),) = node.log_paths("vm1")
    console.write_text("".join(f"line {i}\n" for i in range(100)))
    assert cli.main(["app", "logs", "vm1", "--tail", "2", *common]) == 0
    assert capsys.readouterr().out == "line 98\nline 99\n"
    assert cli.main(["app", "logs", "vm1", "--bytes", "12", "--json", *common]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": "vm1", "logs": "line 99\n"}
    assert cli.main(["app", "logs", "vm1", "--follow", "--json", *common]) == 1
    assert "leave out --json" in capsys.readouterr().err
    assert cli.main(["app", "stop", "vm1", *common]) == 0
    assert capsys.readouterr().out == "vm1: HALTED\n"
    assert cli.main(["app", "supervise", "--once", *common]) == 0
    assert cli.main(["app", "rm", "vm1", "--json", *common]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "DELETED"
    assert cli.main(["app", "logs", "vm1", *common]) == 1
    assert "no workload named 'vm1'" in capsys.readouterr().err


def test_one_supervision_step_as_the_agent_runs_it(tmp_path: Path, prefix: str) -> None:
    from node.workloads.supervisor import node_supervisor, supervise_once

    state = tmp_path / "s"
    cli.main(["app", "run", str(_layout(tmp_path / "img")), "--name", "vm1", "--state-dir",
              str(state), "--libvirt-uri", "test:///default", "--prefix", prefix])  # fmt: skip
    agent_side = node_supervisor(state, prefix=prefix, libvirt_uri="test:///default")
    libvirt.open("test:///default").lookupByName(prefix + "vm1").destroy()
    rows = supervise_once(agent_side)  # sees it dead: BROKEN until the backoff passes
    assert [(r["name"], r["state"]) for r in rows] == [("vm1", "BROKEN")]
    assert "stopped" in rows[0]["last_error"]
