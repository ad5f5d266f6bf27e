"""The OCI runtime spec generated for a container workload (no runc needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.workloads.errors import WorkloadError
from node.workloads.layers import unpack
from node.workloads.oci_image import load_image
from node.workloads.oci_spec import resolve_user, runtime_spec
from node.workloads.oci_store import BlobStore
from node.workloads.package import workload_spec
from node.workloads.runtime import Workload
from tests.oci_build import Entry, layer, write_layout

ETC = layer([
    Entry("etc", "dir"),
    Entry("etc/passwd", data=b"root:x:0:0::/:/bin/sh\nweb:x:33:44::/:/bin/sh\n"),
    Entry("etc/group", data=b"root:x:0:\nwww:x:44:\nlog:x:50:web,other\n"),
])  # fmt: skip


def _workload(tmp_path: Path, config: dict[str, object], notes: dict[str, str]) -> Workload:
    write_layout(tmp_path / "layout", [ETC], config=config, annotations=notes)
    store = BlobStore(tmp_path / "store")
    image = load_image(store, store.import_layout(tmp_path / "layout"))
    unpack(store, image, tmp_path / "rootfs")
    return Workload("web", image, workload_spec(image))


def test_the_spec_is_locked_down_and_limited(tmp_path: Path) -> None:
    notes = {"io.lispmesh.resources.memory": "64Mi", "io.lispmesh.resources.cpus": "1.5",
             "io.lispmesh.resources.pids": "20"}  # fmt: skip
    config = {"Entrypoint": ["/srv"], "Cmd": ["-p", "80"], "User": "web", "WorkingDir": "/w"}
    workload = _workload(tmp_path, config, notes)
    spec = runtime_spec(workload, tmp_path / "rootfs", Path("/run/netns/x"))
    process = spec["process"]
    assert process["args"] == ["/srv", "-p", "80"] and process["cwd"] == "/w"
    assert process["user"] == {"uid": 33, "gid": 44, "additionalGids": [50]}
    assert process["noNewPrivileges"] is True and process["env"][0].startswith("PATH=")
    assert "CAP_NET_RAW" not in process["capabilities"]["bounding"]
    assert "CAP_SYS_ADMIN" not in process["capabilities"]["bounding"]
    assert spec["root"] == {"path": str(tmp_path / "rootfs"), "readonly": True}
    assert {m["destination"] for m in spec["mounts"]} >= {"/proc", "/dev", "/tmp", "/run"}
    resources = spec["linux"]["resources"]
    assert resources["memory"]["limit"] == 64 << 20 and resources["pids"]["limit"] == 20
    assert resources["cpu"] == {"quota": 150_000, "period": 100_000}
    assert {"type": "network", "path": "/run/netns/x"} in spec["linux"]["namespaces"]
    writable = _workload(tmp_path / "w", {"Cmd": ["/x"]}, {"io.lispmesh.rootfs": "writable"})
    open_spec = runtime_spec(writable, tmp_path / "w" / "rootfs", None)
    assert open_spec["root"]["readonly"] is False and open_spec["linux"]["sysctl"] == {}
    assert not any(m["destination"] == "/tmp" for m in open_spec["mounts"])


def test_users_resolve_in_the_image_and_unknown_names_are_one_line(tmp_path: Path) -> None:
    _workload(tmp_path, {"Cmd": ["/x"]}, {})
    rootfs = tmp_path / "rootfs"
    assert resolve_user(rootfs, "", "t") == (0, 0, [])
    assert resolve_user(rootfs, "33", "t") == (33, 44, [])
    assert resolve_user(rootfs, "1234:5", "t") == (1234, 5, [])
    assert resolve_user(rootfs, "web:root", "t") == (33, 0, [50])
    for user, message in (("nobody", "user 'nobody' is not in"), ("web:wheel", "group 'wheel'")):
        with pytest.raises(WorkloadError) as exc:
            resolve_user(rootfs, user, "web")
        assert message in str(exc.value) and "\n" not in str(exc.value)


def test_passwd_is_never_read_through_a_symlink_out_of_the_rootfs(tmp_path: Path) -> None:
    secret = tmp_path / "host-passwd"
    secret.write_text("web:x:0:0::/:/bin/sh\n")  # would make `web` root if it were read
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc/passwd").symlink_to(secret)
    with pytest.raises(WorkloadError):
        resolve_user(rootfs, "web", "t")
    (rootfs / "etc/passwd").unlink()
    (rootfs / "etc").rmdir()
    (rootfs / "etc").symlink_to(tmp_path)  # /etc -> the host dir holding "passwd"
    (tmp_path / "passwd").write_text("web:x:0:0::/:/bin/sh\n")
    with pytest.raises(WorkloadError):
        resolve_user(rootfs, "web", "t")
