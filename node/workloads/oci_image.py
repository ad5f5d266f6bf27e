"""The image an imported layout holds: its manifest, config and layers, container or VM.

One layout may hold several images; one is picked by its `org.opencontainers.image.ref.name`
annotation, or it must hold exactly one. An image index (multi-platform) is followed to the
manifest for this machine. A VM image says so with our `io.lispmesh.kind: vm` annotation and
marks its blobs with `io.lispmesh.vm.role` (disk, kernel or initrd); anything else is a container
image whose layers are tar files.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any

from node.workloads.errors import ImageError
from node.workloads.oci_store import (
    DOCKER_LIST,
    MEDIA_INDEX,
    BlobStore,
    Descriptor,
    Layout,
    manifest_blobs,
)

REF_NAME = "org.opencontainers.image.ref.name"
KIND = "io.lispmesh.kind"
VM_ROLE = "io.lispmesh.vm.role"
VM_ROLES = ("disk", "kernel", "initrd")
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gz",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gz",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
}
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


@dataclass(frozen=True)
class ImageConfig:
    """The runnable part of an OCI image config (`config` in the config blob)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()


@dataclass(frozen=True)
class Image:
    source: str
    ref: str
    manifest_digest: str
    kind: str  # "container" or "vm"
    config: ImageConfig
    layers: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...]
    annotations: dict[str, str] = field(default_factory=dict)
    chosen: Descriptor | None = None  # the layout index entry it came from (to reload it)

    def vm_blob(self, role: str) -> Descriptor | None:
        found = [d for d in self.layers if d.annotations.get(VM_ROLE) == role]
        return found[0] if found else None


def load_image(store: BlobStore, layout: Layout, ref: str | None = None) -> Image:
    return image_from(store, _choose(layout.manifests, ref, layout.source), layout.source)


def image_from(store: BlobStore, chosen: Descriptor, where: str) -> Image:
    """The image an index entry names (also how a node reloads an image it imported before)."""
    descriptor = _for_this_machine(store, chosen, where)
    manifest = store.read_json(descriptor, where)
    config_descriptor, *layers = manifest_blobs(manifest, where)
    annotations = {**chosen.annotations, **_annotations(manifest, where)}
    kind = annotations.get(KIND, "container")
    if kind not in ("container", "vm"):
        raise ImageError(f"{where}: annotation {KIND}={kind!r} is not container or vm")
    config_doc = store.read_json(config_descriptor, where)
    ref = chosen.annotations.get(REF_NAME, "")
    if kind == "vm":
        _check_vm_layers(layers, where)
        return Image(where, ref, descriptor.digest, kind, ImageConfig(), tuple(layers), (),
                     annotations, chosen)  # fmt: skip
    for i, layer in enumerate(layers):
        if layer.media_type not in LAYER_TYPES:
            raise ImageError(f"{where}: layer {i} has unsupported type {layer.media_type!r}")
    diff_ids = _diff_ids(config_doc, len(layers), where)
    return Image(where, ref, descriptor.digest, kind, _config(config_doc, where), tuple(layers),
                 diff_ids, annotations, chosen)  # fmt: skip


def _choose(manifests: tuple[Descriptor, ...], ref: str | None, where: str) -> Descriptor:
    if ref is not None:
        named = [d for d in manifests if d.annotations.get(REF_NAME) == ref]
        if not named:
            known = sorted({d.annotations.get(REF_NAME, "") for d in manifests} - {""})
            raise ImageError(f"{where}: no image named {ref!r} (has: {', '.join(known) or '-'})")
        return named[0]
    if len(manifests) != 1:
        raise ImageError(f"{where}: holds {len(manifests)} images; say which (ref name)")
    return manifests[0]


def _for_this_machine(store: BlobStore, descriptor: Descriptor, where: str) -> Descriptor:
    """Follow an image index (at most a few deep) to the manifest for linux on this machine."""
    arch = _ARCH.get(platform.machine(), platform.machine())
    for _ in range(4):
        if descriptor.media_type not in (MEDIA_INDEX, DOCKER_LIST):
            return descriptor
        index = store.read_json(descriptor, where)
        children = [Descriptor.parse(d, f"{where}: index") for d in index.get("manifests", [])]
        fits = [
            d for d in children
            if d.platform.get("os", "linux") == "linux"
            and d.platform.get("architecture", arch) == arch
        ]  # fmt: skip
        if not fits:
            raise ImageError(f"{where}: no manifest for linux/{arch} in index {descriptor.digest}")
        descriptor = fits[0]
    raise ImageError(f"{where}: image indexes nested too deep")


def _annotations(manifest: dict[str, Any], where: str) -> dict[str, str]:
    annotations = manifest.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(v, str) for v in annotations.values()
    ):
        raise ImageError(f"{where}: manifest annotations must be strings")
    return dict(annotations)


def _check_vm_layers(layers: list[Descriptor], where: str) -> None:
    roles = [d.annotations.get(VM_ROLE) for d in layers]
    for i, role in enumerate(roles):
        if role not in VM_ROLES:
            raise ImageError(f"{where}: VM blob {i} has {VM_ROLE}={role!r}, not one of {VM_ROLES}")
        if roles.count(role) > 1:
            raise ImageError(f"{where}: VM image has more than one {role}")
    if "disk" not in roles and "kernel" not in roles:
        raise ImageError(f"{where}: VM image has neither a disk nor a kernel")


def _diff_ids(config: Any, count: int, where: str) -> tuple[str, ...]:
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise ImageError(f"{where}: image config has no rootfs.diff_ids")
    if len(diff_ids) != count:
        raise ImageError(f"{where}: config lists {len(diff_ids)} diff_ids for {count} layers")
    return tuple(diff_ids)


def _config(doc: Any, where: str) -> ImageConfig:
    inner = doc.get("config") or {}
    if not isinstance(inner, dict):
        raise ImageError(f"{where}: image config's config is not an object")

    def strings(key: str) -> tuple[str, ...]:
        value = inner.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ImageError(f"{where}: image config {key} must be a list of strings")
        return tuple(value)

    def text(key: str) -> str:
        value = inner.get(key) or ""
        if not isinstance(value, str):
            raise ImageError(f"{where}: image config {key} must be a string")
        return value

    ports = inner.get("ExposedPorts") or {}
    if not isinstance(ports, dict):
        raise ImageError(f"{where}: image config ExposedPorts must be an object")
    return ImageConfig(strings("Entrypoint"), strings("Cmd"), strings("Env"), text("WorkingDir"),
                       text("User"), tuple(sorted(ports)))  # fmt: skip
