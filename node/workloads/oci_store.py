"""A content-addressed blob store and the import of OCI image layouts into it.

An OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`), as `skopeo`, `umoci` or
`podman save --format oci-archive` write it, arrives as a directory or as a tarball of one. Every
blob is hashed while it is copied in and kept only when its sha256 is the one it is named by (and,
for the blobs a descriptor names, has the descriptor's size): a corrupted or tampered blob is one
`ImageError` and never reaches a rootfs. The store keeps blobs as `blobs/sha256/<hex>`, the same
shape as a layout, written to a temporary name and renamed so a crash never leaves a half blob
under a valid name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from node.workloads.errors import ImageError

CHUNK = 1 << 20
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})\Z")
_BLOB_MEMBER = re.compile(r"(?:\./)?blobs/sha256/([0-9a-f]{64})\Z")
# What a layout tarball may hold besides blobs (directories are skipped).
_LAYOUT_FILES = {"oci-layout", "index.json"}
MAX_JSON = 4 << 20  # an index, manifest or config larger than this is not an image we run

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str  # "sha256:<hex>"
    size: int
    annotations: dict[str, str]
    platform: dict[str, str]

    def doc(self) -> dict[str, Any]:
        """As in an index or manifest (Descriptor.parse reads it back)."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size,
                "annotations": self.annotations, "platform": self.platform}  # fmt: skip

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]

    @classmethod
    def parse(cls, doc: Any, where: str) -> Descriptor:
        if not isinstance(doc, dict):
            raise ImageError(f"{where}: a descriptor must be an object")
        digest = doc.get("digest")
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise ImageError(f"{where}: digest {digest!r} is not sha256:<64 hex digits>")
        size = doc.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ImageError(f"{where}: size {size!r} of {digest} is not a byte count")
        media_type = doc.get("mediaType", "")
        annotations = doc.get("annotations") or {}
        platform = doc.get("platform") or {}
        if not isinstance(media_type, str) or not isinstance(annotations, dict):
            raise ImageError(f"{where}: mediaType/annotations of {digest} are malformed")
        if not all(isinstance(v, str) for v in annotations.values()):
            raise ImageError(f"{where}: annotations of {digest} must be strings")
        return cls(media_type, digest, size, dict(annotations), dict(platform))


@dataclass(frozen=True)
class Layout:
    """What an import found: the layout's index (its manifests) and where it came from."""

    source: str
    manifests: tuple[Descriptor, ...]


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"

    def path(self, digest: str) -> Path:
        match = _DIGEST.match(digest)
        if not match:
            raise ImageError(f"digest {digest!r} is not sha256:<64 hex digits>")
        return self.blobs / match.group(1)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def add(self, stream: IO[bytes], digest: str, where: str, size: int | None = None) -> None:
        """Copy `stream` in as `digest`; refused (nothing kept) unless it hashes to it."""
        target = self.path(digest)
        self.blobs.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=".incoming-")
        try:
            hasher = hashlib.sha256()
            length = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    hasher.update(chunk)
                    length += len(chunk)
                    out.write(chunk)
            _check(digest, hasher.hexdigest(), length, size, where)
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise

    def verify(self, descriptor: Descriptor, where: str) -> Path:
        """The blob's path after hashing it again: the store is on a disk others can write."""
        path = self.path(descriptor.digest)
        try:
            with path.open("rb") as blob:
                hasher = hashlib.sha256()
                length = 0
                while chunk := blob.read(CHUNK):
                    hasher.update(chunk)
                    length += len(chunk)
        except FileNotFoundError:
            raise ImageError(f"{where}: blob {descriptor.digest} is missing") from None
        _check(descriptor.digest, hasher.hexdigest(), length, descriptor.size, where)
        return path

    def copy_verified(self, descriptor: Descriptor, target: Path, where: str) -> None:
        """Copy the blob to `target`, hashing what is copied (not what was hashed before)."""
        tmp = target.with_name(target.name + ".partial")
        hasher = hashlib.sha256()
        length = 0
        try:
            with self.path(descriptor.digest).open("rb") as blob, tmp.open("wb") as out:
                while chunk := blob.read(CHUNK):
                    hasher.update(chunk)
                    length += len(chunk)
                    out.write(chunk)
            _check(descriptor.digest, hasher.hexdigest(), length, descriptor.size, where)
            os.replace(tmp, target)
        except FileNotFoundError:
            raise ImageError(f"{where}: blob {descriptor.digest} is missing") from None
        finally:
            tmp.unlink(missing_ok=True)

    def read_json(self, descriptor: Descriptor, where: str) -> Any:
        if descriptor.size > MAX_JSON:
            raise ImageError(f"{where}: {descriptor.digest} is {descriptor.size} bytes, too big")
        data = self.verify(descriptor, where).read_bytes()
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ImageError(f"{where}: {descriptor.digest} is not JSON ({exc})") from None

    # -- import ------------------------------------------------------------------------------

    def import_layout(self, source: Path) -> Layout:
        """Import a layout directory or a tarball of one (any compression tarfile reads)."""
        where = str(source)
        if source.is_dir():
            index = self._import_directory(source, where)
        elif source.is_file():
            index = self._import_tarball(source, where)
        else:
            raise ImageError(f"{where}: no such image layout (directory or tarball)")
        manifests = _parse_index(index, where)
        for descriptor in manifests:
            self.fetch_tree(descriptor, where)
        return Layout(where, manifests)

    def fetch_tree(self, descriptor: Descriptor, where: str, _depth: int = 0) -> None:
        """Check that every blob under `descriptor` is here and hashes right."""
        if _depth > 4:
            raise ImageError(f"{where}: image indexes nested too deep")
        if descriptor.media_type in (MEDIA_INDEX, DOCKER_LIST):
            for child in _parse_index(self.read_json(descriptor, where), where):
                self.fetch_tree(child, where, _depth + 1)
        elif descriptor.media_type in (MEDIA_MANIFEST, DOCKER_MANIFEST, ""):
            manifest = self.read_json(descriptor, where)
            for child in manifest_blobs(manifest, where):
                self.verify(child, where)
        else:
            raise ImageError(
                f"{where}: {descriptor.digest} has unknown type {descriptor.media_type}"
            )

    def _import_directory(self, source: Path, where: str) -> Any:
        _check_layout_marker(_load_json_file(source / "oci-layout", where), where)
        index = _load_json_file(source / "index.json", where)
        pending = list(_parse_index(index, where))
        seen: set[str] = set()
        while pending:  # walk the tree from the index, copying each blob it names
            descriptor = pending.pop()
            if descriptor.digest in seen:
                continue
            seen.add(descriptor.digest)
            blob = source / "blobs" / "sha256" / descriptor.hex
            try:
                with blob.open("rb") as stream:
                    self.add(stream, descriptor.digest, where, descriptor.size)
            except FileNotFoundError:
                raise ImageError(f"{where}: blob {descriptor.digest} is missing") from None
            if descriptor.media_type in (MEDIA_INDEX, DOCKER_LIST):
                pending.extend(_parse_index(self.read_json(descriptor, where), where))
            elif descriptor.media_type in (MEDIA_MANIFEST, DOCKER_MANIFEST, ""):
                pending.extend(manifest_blobs(self.read_json(descriptor, where), where))
        return index

    def _import_tarball(self, source: Path, where: str) -> Any:
        index: Any = None
        marker = False
        with _open_tar(source, where) as archive:
            for member in archive:
                name = member.name
                if member.isdir():
                    continue
                blob = _BLOB_MEMBER.match(name)
                if not member.isfile() or (
                    not blob and name.removeprefix("./") not in _LAYOUT_FILES
                ):
                    raise ImageError(f"{where}: unexpected member {name!r} in an image layout")
                stream = archive.extractfile(member)
                assert stream is not None  # a regular file always has one
                if blob:
                    self.add(stream, f"sha256:{blob.group(1)}", where)
                elif name.removeprefix("./") == "oci-layout":
                    data = stream.read(MAX_JSON + 1)
                    _check_layout_marker(_parse_json(data, f"{where}: oci-layout"), where)
                    marker = True
                else:
                    index = _parse_json(stream.read(MAX_JSON + 1), f"{where}: index.json")
        if not marker or index is None:
            raise ImageError(f"{where}: not an OCI image layout (oci-layout or index.json missing)")
        return index


def manifest_blobs(manifest: Any, where: str) -> list[Descriptor]:
    """The config and layer descriptors of a manifest."""
    if not isinstance(manifest, dict) or manifest.get("schemaVersion") != 2:
        raise ImageError(f"{where}: manifest is not an OCI schemaVersion 2 manifest")
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise ImageError(f"{where}: manifest has no layers list")
    config = Descriptor.parse(manifest.get("config"), f"{where}: manifest config")
    return [config, *(Descriptor.parse(d, f"{where}: layer {i}") for i, d in enumerate(layers))]


def _parse_index(index: Any, where: str) -> tuple[Descriptor, ...]:
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise ImageError(f"{where}: index.json has no manifests list")
    return tuple(
        Descriptor.parse(d, f"{where}: index manifest {i}")
        for i, d in enumerate(index["manifests"])
    )


def _check(digest: str, actual: str, length: int, size: int | None, where: str) -> None:
    if f"sha256:{actual}" != digest:
        raise ImageError(
            f"{where}: blob {digest} hashes to sha256:{actual} (corrupted or tampered); refused"
        )
    if size is not None and length != size:
        raise ImageError(f"{where}: blob {digest} is {length} bytes, its descriptor says {size}")


def _check_layout_marker(marker: Any, where: str) -> None:
    if not isinstance(marker, dict) or marker.get("imageLayoutVersion") != "1.0.0":
        raise ImageError(f"{where}: oci-layout is not imageLayoutVersion 1.0.0")


def _load_json_file(path: Path, where: str) -> Any:
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_JSON + 1)
    except FileNotFoundError:
        raise ImageError(f"{where}: not an OCI image layout ({path.name} missing)") from None
    return _parse_json(data, f"{where}: {path.name}")


def _parse_json(data: bytes, where: str) -> Any:
    if len(data) > MAX_JSON:
        raise ImageError(f"{where}: larger than {MAX_JSON} bytes")
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImageError(f"{where}: not JSON ({exc})") from None


@contextmanager
def _open_tar(source: Path, where: str) -> Iterator[tarfile.TarFile]:
    try:
        with tarfile.open(source, "r|*") as archive:
            yield archive
    except tarfile.TarError as exc:
        raise ImageError(f"{where}: not a readable tarball ({exc})") from None
