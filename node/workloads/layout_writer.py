"""Writes small OCI image layouts (a busybox rootfs, VM blobs) without any tool: for the demo and
the tests (the images they run are built from Debian's busybox-static).

`layer([...entries])` makes an uncompressed layer tar; `write_layout` writes `oci-layout`,
`index.json` and the blobs (gzip-compressed layers, their diff_ids in the config) and returns the
manifest digest; `tar_layout` turns a layout directory into an oci-archive style tarball.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str = "file"  # file | dir | symlink | hardlink | chr | fifo
    data: bytes = b""
    link: str = ""
    mode: int = 0o644


def layer(entries: list[Entry]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.mode = entry.mode
            info.type = {
                "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE,
            }[entry.kind]  # fmt: skip
            info.linkname = entry.link
            if entry.kind == "dir" and entry.mode == 0o644:
                info.mode = 0o755
            info.size = len(entry.data) if entry.kind == "file" else 0
            archive.addfile(info, io.BytesIO(entry.data) if entry.kind == "file" else None)
    return out.getvalue()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put_blob(layout: Path, data: bytes) -> dict[str, Any]:
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    name = digest(data)
    (blobs / name.split(":")[1]).write_bytes(data)
    return {"digest": name, "size": len(data)}


def write_layout(
    path: Path,
    layers: list[bytes],
    config: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    ref: str = "latest",
    vm_blobs: list[tuple[str, bytes]] | None = None,
    append: bool = False,
) -> str:
    """Write (or, with `append`, add to) a layout at `path`; returns the manifest digest."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    descriptors = []
    for data in layers:
        blob = put_blob(path, gzip.compress(data, mtime=0))
        descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **blob})
    for role, data in vm_blobs or []:
        blob = put_blob(path, data)
        descriptors.append({"mediaType": f"application/vnd.lispmesh.vm.{role}", **blob,
                            "annotations": {"io.lispmesh.vm.role": role}})  # fmt: skip
    config_doc = {
        "architecture": "amd64", "os": "linux",
        "config": config if config is not None else {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [digest(data) for data in layers]},
    }  # fmt: skip
    config_blob = put_blob(path, json.dumps(config_doc).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_blob},
        "layers": descriptors,
        "annotations": annotations or {},
    }
    manifest_blob = put_blob(path, json.dumps(manifest).encode())
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest_blob,
        "annotations": {"org.opencontainers.image.ref.name": ref},
    }  # fmt: skip
    index_path = path / "index.json"
    fresh: dict[str, Any] = {"schemaVersion": 2, "manifests": []}
    index: dict[str, Any] = json.loads(index_path.read_text()) if append else fresh
    index["manifests"].append(entry)
    index_path.write_text(json.dumps(index))
    return str(manifest_blob["digest"])


def tar_layout(layout: Path, tarball: Path) -> Path:
    with tarfile.open(tarball, "w") as archive:
        for child in sorted(layout.rglob("*")):
            archive.add(child, arcname=str(child.relative_to(layout)), recursive=False)
    return tarball


def blob_path(layout: Path, name: str) -> Path:
    return layout / "blobs" / "sha256" / name.split(":")[1]


BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static (bootstrap.sh installs it)
APPLETS = ("sh", "nc", "cat", "echo", "id", "ip", "ping", "sleep", "grep", "touch", "ls", "sed")


def busybox_layer() -> bytes:
    """A tiny rootfs: a static busybox, its applets as symlinks, a passwd with `app` (1000)."""
    entries = [
        Entry("bin", "dir"), Entry("bin/busybox", data=BUSYBOX.read_bytes(), mode=0o755),
        *(Entry(f"bin/{applet}", "symlink", link="/bin/busybox") for applet in APPLETS),
        Entry("etc", "dir"),
        Entry("etc/passwd", data=b"root:x:0:0:root:/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n"),
        Entry("etc/group", data=b"root:x:0:\napp:x:1000:\nnet:x:2000:app\n"),
    ]  # fmt: skip
    return layer(entries)
