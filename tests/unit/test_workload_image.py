"""Edge-container images: OCI layout import (directory and tarball), blob verification, layer
unpacking with whiteouts, the attacks a layer can try, and our annotations. Layouts are built
for real in tmp dirs (tests/oci_build.py); umoci unpacks the same layout as an oracle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from node.workloads.errors import ImageError
from node.workloads.layers import unpack
from node.workloads.oci_image import Image, load_image
from node.workloads.oci_store import BlobStore
from node.workloads.package import Port, workload_spec
from tests.oci_build import Entry, blob_path, layer, put_blob, tar_layout, write_layout

BASE = layer([
    Entry("bin", "dir"), Entry("bin/tool", data=b"#!/bin/sh\necho hi\n", mode=0o755),
    Entry("etc", "dir"), Entry("etc/hostname", data=b"box\n"),
    Entry("etc/link", "symlink", link="/etc/hostname"),
    Entry("etc/hard", "hardlink", link="etc/hostname"),
    Entry("gone", data=b"x"), Entry("d", "dir"), Entry("d/x", data=b"x"), Entry("d/y", data=b"y"),
    Entry("d/sub", "dir"), Entry("d/sub/deep", data=b"deep"),
])  # fmt: skip


def _import(tmp_path: Path, layers: list[bytes], **kw: object) -> tuple[BlobStore, Image]:
    write_layout(tmp_path / "layout", layers, **kw)  # type: ignore[arg-type]
    store = BlobStore(tmp_path / "store")
    return store, load_image(store, store.import_layout(tmp_path / "layout"))


def _one_line(exc: pytest.ExceptionInfo[ImageError]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def _tree(root: Path) -> dict[str, str]:
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = path.read_bytes().decode()
    return found


def test_import_and_unpack_a_layout_directory(tmp_path: Path) -> None:
    config = {"Entrypoint": ["/bin/tool"], "Cmd": ["-v"], "Env": ["PATH=/bin", "A=1"],
              "WorkingDir": "/srv", "User": "1000:1000"}  # fmt: skip
    store, image = _import(tmp_path, [BASE], config=config)
    assert image.kind == "container" and image.ref == "latest"
    assert image.config.entrypoint == ("/bin/tool",) and image.config.user == "1000:1000"
    unpack(store, image, tmp_path / "rootfs")
    tree = _tree(tmp_path / "rootfs")
    assert tree["bin/tool"].startswith("#!/bin/sh") and tree["etc/link"] == "-> /etc/hostname"
    assert os.stat(tmp_path / "rootfs/bin/tool").st_mode & 0o777 == 0o755
    assert os.path.samefile(tmp_path / "rootfs/etc/hard", tmp_path / "rootfs/etc/hostname")
    spec = workload_spec(image)
    assert spec.args == ("/bin/tool", "-v") and spec.cwd == "/srv" and spec.user == "1000:1000"


def test_import_a_tarball_gives_the_same_image(tmp_path: Path) -> None:
    write_layout(tmp_path / "layout", [BASE])
    tarball = tar_layout(tmp_path / "layout", tmp_path / "image.tar")
    store = BlobStore(tmp_path / "store")
    image = load_image(store, store.import_layout(tarball))
    direct = load_image(store, store.import_layout(tmp_path / "layout"))
    assert image.manifest_digest == direct.manifest_digest and image.source == str(tarball)
    unpack(store, image, tmp_path / "rootfs")
    assert (tmp_path / "rootfs/etc/hostname").read_bytes() == b"box\n"


def test_a_tampered_blob_in_a_directory_is_refused_and_not_kept(tmp_path: Path) -> None:
    write_layout(tmp_path / "layout", [BASE])
    layer_blob = max((tmp_path / "layout/blobs/sha256").iterdir(), key=lambda p: p.stat().st_size)
    data = bytearray(layer_blob.read_bytes())
    data[-10] ^= 0xFF  # one bit flipped in the gzip trailer region
    layer_blob.write_bytes(bytes(data))
    store = BlobStore(tmp_path / "store")
    with pytest.raises(ImageError) as exc:
        store.import_layout(tmp_path / "layout")
    assert "corrupted or tampered" in _one_line(exc)
    assert not (store.blobs / layer_blob.name).exists()
    assert [p.name for p in store.blobs.iterdir() if p.name.startswith(".incoming")] == []


def test_a_tampered_blob_in_a_tarball_is_refused(tmp_path: Path) -> None:
    write_layout(tmp_path / "layout", [BASE])
    config = next(p for p in (tmp_path / "layout/blobs/sha256").iterdir() if b'"rootfs"' in
                  p.read_bytes())  # fmt: skip
    config.write_bytes(config.read_bytes().replace(b"/bin/sh", b"/bin/xx"))
    tarball = tar_layout(tmp_path / "layout", tmp_path / "image.tar")
    with pytest.raises(ImageError) as exc:
        BlobStore(tmp_path / "store").import_layout(tarball)
    assert str(tarball) in _one_line(exc) and "tampered" in str(exc.value)


def test_a_blob_changed_in_the_store_after_import_never_unpacks(tmp_path: Path) -> None:
    store, image = _import(tmp_path, [BASE])
    blob = store.path(image.layers[0].digest)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(ImageError) as exc:
        unpack(store, image, tmp_path / "rootfs")
    assert "tampered" in _one_line(exc)
    assert not (tmp_path / "rootfs").exists()


def test_the_descriptor_size_and_the_diff_id_are_checked(tmp_path: Path) -> None:
    write_layout(tmp_path / "layout", [BASE])
    index = json.loads((tmp_path / "layout/index.json").read_text())
    index["manifests"][0]["size"] += 1
    (tmp_path / "layout/index.json").write_text(json.dumps(index))
    with pytest.raises(ImageError) as exc:
        BlobStore(tmp_path / "s1").import_layout(tmp_path / "layout")
    assert "descriptor says" in _one_line(exc)

    store, image = _import(tmp_path / "b", [BASE])
    forged = Image(image.source, image.ref, image.manifest_digest, image.kind, image.config,
                   image.layers, ("sha256:" + "0" * 64,))  # fmt: skip
    with pytest.raises(ImageError) as exc:
        unpack(store, forged, tmp_path / "rootfs")
    assert "config says sha256:000" in _one_line(exc)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([Entry("../escaped", data=b"x")], "climbs out with '..'"),
        ([Entry("a/../../escaped", data=b"x")], "climbs out with '..'"),
        ([Entry("/escaped", data=b"x")], "absolute path"),
        ([Entry("dev", "dir"), Entry("dev/sda", "chr")], "device node"),
        ([Entry("stolen", "hardlink", link="/etc/passwd")], "absolute path"),
        ([Entry("stolen", "hardlink", link="../escaped")], "climbs out"),
    ],
    ids=["dotdot", "dotdot-inside", "absolute", "device", "hardlink-absolute", "hardlink-dotdot"],
)
def test_a_layer_that_tries_to_leave_the_rootfs_is_refused(
    tmp_path: Path, entries: list[Entry], message: str
) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "escaped").write_text("host file")  # where ../escaped would land
    store, image = _import(tmp_path, [layer(entries)])
    with pytest.raises(ImageError) as exc:
        unpack(store, image, tmp_path / "x" / "rootfs")
    assert message in _one_line(exc) and "layer 0" in str(exc.value)
    assert sorted(os.listdir(tmp_path / "x")) == ["escaped"]
    assert (tmp_path / "x" / "escaped").read_text() == "host file"


def test_symlinks_resolve_inside_the_rootfs_never_on_the_host(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").write_text("host file")
    first = layer([
        Entry("abs", "symlink", link=str(outside)),
        Entry("rel", "symlink", link="../../../../../../../.." + str(outside)),
        Entry("victim", "symlink", link=str(outside / "target")),
    ])  # fmt: skip
    writes = [
        Entry("abs/pwned", data=b"a"), Entry("rel/pwned2", data=b"b"),
        Entry("victim", data=b"replaced, not followed"),
    ]  # fmt: skip
    steal = Entry("linked", "hardlink", link="abs/target")
    store, image = _import(tmp_path, [first, layer([*writes, steal])])
    with pytest.raises(ImageError) as exc:  # abs/target is rootfs/<outside>/target: missing
        unpack(store, image, tmp_path / "rootfs")
    assert "hard link 'linked' to a missing file" in _one_line(exc)
    store, image = _import(tmp_path / "again", [first, layer(writes)])
    unpack(store, image, tmp_path / "rootfs")
    assert sorted(p.name for p in outside.iterdir()) == ["target"]
    assert (outside / "target").read_text() == "host file"
    inside = tmp_path / "rootfs" / str(outside).lstrip("/")
    assert (inside / "pwned").read_bytes() == b"a" and (inside / "pwned2").read_bytes() == b"b"
    assert (tmp_path / "rootfs/victim").read_bytes() == b"replaced, not followed"


def test_whiteouts_and_opaque_directories_hide_only_lower_layers(tmp_path: Path) -> None:
    upper = layer([
        Entry(".wh.gone"), Entry("d/new", data=b"n"), Entry("d/.wh..wh..opq"),
        Entry("d/sub", "dir"), Entry("d/sub/kept", data=b"k"),
        Entry("fresh", data=b"f"), Entry(".wh.fresh"),  # same layer: not hidden
        Entry(".wh.missing"),
    ])  # fmt: skip
    store, image = _import(tmp_path, [BASE, upper])
    unpack(store, image, tmp_path / "rootfs")
    tree = _tree(tmp_path / "rootfs")
    assert "gone" not in tree and tree["fresh"] == "f"
    assert {k: v for k, v in tree.items() if k.startswith("d/")} == {
        "d/new": "n",
        "d/sub": "dir",
        "d/sub/kept": "k",
    }
    assert not any(".wh." in name for name in tree)


@pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci not installed (bootstrap.sh)")
def test_umoci_unpacks_the_same_tree(tmp_path: Path) -> None:
    upper = layer([Entry(".wh.gone"), Entry("d/.wh..wh..opq"), Entry("d/new", data=b"n"),
                   Entry("etc/link", data=b"now a file")])  # fmt: skip
    store, image = _import(tmp_path, [BASE, upper])
    unpack(store, image, tmp_path / "ours")
    subprocess.run(["umoci", "raw", "unpack", "--rootless", "--image",
                    f"{tmp_path / 'layout'}:latest", str(tmp_path / "umoci")],
                   check=True, capture_output=True)  # fmt: skip
    assert _tree(tmp_path / "ours") == _tree(tmp_path / "umoci")


def test_annotations_become_the_workload_spec(tmp_path: Path) -> None:
    notes = {
        "io.lispmesh.resources.memory": "64Mi", "io.lispmesh.resources.cpus": "0.5",
        "io.lispmesh.resources.pids": "32", "io.lispmesh.ports": "tcp/7, udp/53",
        "io.lispmesh.env": '["A=2", "B=3"]', "io.lispmesh.cmd": '["/bin/tool", "serve"]',
        "io.lispmesh.label.app": "db",
    }  # fmt: skip
    _, image = _import(tmp_path, [BASE], config={"Cmd": ["/x"], "Env": ["A=1", "P=/bin"]},
                       annotations=notes)  # fmt: skip
    spec = workload_spec(image)
    assert spec.resources.memory == 64 << 20 and spec.resources.cpus == 0.5
    assert spec.resources.pids == 32 and spec.ports == (Port("tcp", 7), Port("udp", 53))
    assert spec.env == ("A=2", "P=/bin", "B=3") and spec.args == ("/bin/tool", "serve")
    assert spec.labels == {"app": "db"} and spec.cwd == "/"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("io.lispmesh.resources.memory", "lots", "is not a size"),
        ("io.lispmesh.resources.cpus", "0", "is not a CPU count"),
        ("io.lispmesh.ports", "tcp/99999", "is not tcp/N or udp/N"),
        ("io.lispmesh.env", '["NOEQUALS"]', "is not KEY=value"),
        ("io.lispmesh.cmd", '"/bin/sh"', "JSON list of strings"),
        ("io.lispmesh.kind", "unikernel", "is not container or vm"),
        ("io.lispmesh.colour", "blue", "unknown annotation"),
    ],
)
def test_a_bad_annotation_is_one_line_naming_it(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    with pytest.raises(ImageError) as exc:
        _, image = _import(tmp_path, [BASE], annotations={key: value})
        workload_spec(image)
    assert message in _one_line(exc) and (key in str(exc.value) or "kind" in key)


def test_a_vm_image_and_choosing_by_ref(tmp_path: Path) -> None:
    write_layout(tmp_path / "layout", [BASE], ref="app")
    write_layout(tmp_path / "layout", [], annotations={"io.lispmesh.kind": "vm",
                 "io.lispmesh.vm.cmdline": "console=ttyS0"}, ref="vm",
                 vm_blobs=[("kernel", b"\x7fELF"), ("initrd", b"070701")], append=True)  # fmt: skip
    store = BlobStore(tmp_path / "store")
    layout = store.import_layout(tmp_path / "layout")
    with pytest.raises(ImageError) as exc:
        load_image(store, layout)
    assert "holds 2 images; say which" in _one_line(exc)
    with pytest.raises(ImageError) as exc:
        load_image(store, layout, "nope")
    assert "(has: app, vm)" in _one_line(exc)
    vm = load_image(store, layout, "vm")
    kernel = vm.vm_blob("kernel")
    assert vm.kind == "vm" and kernel is not None and vm.vm_blob("disk") is None
    assert store.verify(kernel, "t").read_bytes() == b"\x7fELF"
    assert workload_spec(vm).kernel_cmdline == "console=ttyS0"
    with pytest.raises(ImageError) as exc:
        unpack(store, vm, tmp_path / "rootfs")
    assert "vm image has no layers" in _one_line(exc)


def test_a_vm_blob_without_a_role_and_a_missing_blob_are_refused(tmp_path: Path) -> None:
    write_layout(tmp_path / "a", [], annotations={"io.lispmesh.kind": "vm"},
                 vm_blobs=[("bios", b"x")])  # fmt: skip
    store = BlobStore(tmp_path / "store")
    with pytest.raises(ImageError) as exc:
        load_image(store, store.import_layout(tmp_path / "a"))
    assert "io.lispmesh.vm.role='bios'" in _one_line(exc)
    manifest = write_layout(tmp_path / "b", [BASE])
    lone = json.loads(blob_path(tmp_path / "b", manifest).read_bytes())
    blob_path(tmp_path / "b", lone["layers"][0]["digest"]).unlink()
    with pytest.raises(ImageError) as exc:
        store.import_layout(tmp_path / "b")
    assert "is missing" in _one_line(exc)
    put_blob(tmp_path / "b", b"unrelated")
    (tmp_path / "c").write_bytes(b"not a tarball at all")
    with pytest.raises(ImageError) as exc:
        store.import_layout(tmp_path / "c")
    assert "not a readable tarball" in _one_line(exc)
