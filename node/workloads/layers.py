"""Unpack container image layers into a rootfs, as an overlay of the layers would show it.

Layers apply in order. OCI whiteouts hide what lower layers put there: `.wh.<name>` deletes
`<name>`, `.wh..wh..opq` empties its directory; neither touches what the same layer adds.

Nothing a layer says can reach outside the rootfs:
- member names that are absolute or hold `..` are refused (so are such hard-link targets);
- directories on the way to a member are resolved *inside* the rootfs, the way the container will
  see them (an absolute symlink restarts at the rootfs, `..` stops there), so `etc -> /` followed
  by `etc/passwd` writes the rootfs's own etc/passwd, never the host's;
- the member itself never follows a symlink: an existing one is replaced, and files are created
  with O_EXCL | O_NOFOLLOW;
- device nodes are refused (a workload has no business shipping /dev/sda); FIFOs are allowed.
Each layer's uncompressed bytes must hash to its `diff_id` in the image config. Ownership is kept
when unpacking as root; otherwise files belong to the caller and lose setuid/setgid bits.

Host-side code that later writes into a rootfs must resolve paths the same way (`resolve_in_root`).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import Protocol

from node.workloads.errors import ImageError
from node.workloads.oci_image import LAYER_TYPES, Image
from node.workloads.oci_store import CHUNK, BlobStore

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_SYMLINKS = 40  # as the kernel's limit on links followed in one lookup


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _HashingReader:
    """A read-only stream that hashes what passes through it (for the layer's diff_id)."""

    def __init__(self, stream: _Readable) -> None:
        self.stream = stream
        self.hasher = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.hasher.update(data)
        return data

    def drain(self) -> str:
        while self.read(CHUNK):
            pass
        return f"sha256:{self.hasher.hexdigest()}"


def unpack(store: BlobStore, image: Image, rootfs: Path, max_bytes: int | None = None) -> None:
    """Build `rootfs` (which must not exist yet) from the image's layers; removed on failure."""
    if image.kind != "container":
        raise ImageError(f"{image.source}: a {image.kind} image has no layers to unpack")
    rootfs.mkdir(mode=0o755)
    try:
        budget = [max_bytes if max_bytes is not None else -1]
        for i, (layer, diff_id) in enumerate(zip(image.layers, image.diff_ids, strict=True)):
            where = f"{image.source}: layer {i} ({layer.digest[:19]})"
            blob = store.verify(layer, where)
            apply_layer(blob, LAYER_TYPES[layer.media_type], rootfs, diff_id, where, budget)
    except BaseException:
        _remove_tree(rootfs)
        raise


def apply_layer(
    blob: Path, compression: str, rootfs: Path, diff_id: str, where: str, budget: list[int]
) -> None:
    if compression == "zstd":
        raise ImageError(f"{where}: zstd-compressed layers are not supported (use gzip)")
    with blob.open("rb") as raw:
        stream: _Readable = gzip.GzipFile(fileobj=raw, mode="rb") if compression == "gz" else raw
        reader = _HashingReader(stream)
        try:
            _Layer(rootfs, where, budget).apply(reader)
            actual = reader.drain()
        except (OSError, EOFError, tarfile.TarError) as exc:
            raise ImageError(f"{where}: cannot unpack ({exc})") from None
    if actual != diff_id:
        raise ImageError(f"{where}: uncompressed layer hashes to {actual}, config says {diff_id}")


class _Layer:
    def __init__(self, rootfs: Path, where: str, budget: list[int]) -> None:
        self.root = rootfs
        self.where = where
        self.budget = budget
        self.as_root = os.geteuid() == 0
        self.created: set[Path] = set()  # what this layer put there (whiteouts spare it)
        self.touched: set[Path] = set()  # that, and every directory above it
        self.dir_modes: list[tuple[Path, int]] = []  # applied last: a 0555 dir must still fill

    def apply(self, reader: _HashingReader) -> None:
        with tarfile.open(fileobj=reader, mode="r|") as archive:  # type: ignore[call-overload]
            for member in archive:
                self._member(archive, member)
        for path, mode in reversed(self.dir_modes):
            os.chmod(path, mode)

    def _member(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = member_parts(member.name, self.where)
        if not parts:
            return  # the layer's own root ("./")
        *parents, base = parts
        if base == OPAQUE:
            self._clear_lower(resolve_in_root(self.root, parents, self.where, create=True))
            return
        if base.startswith(WHITEOUT):
            self._whiteout(parents, base[len(WHITEOUT) :], member.name)
            return
        if member.ischr() or member.isblk():
            raise ImageError(f"{self.where}: member {member.name!r} is a device node; refused")
        parent = resolve_in_root(self.root, parents, self.where, create=True)
        self._mark(parent)
        target = parent / base
        if member.isdir():
            self._directory(target, member)
        else:
            _remove(target)
            if member.isreg():
                self._file(archive, target, member)
            elif member.issym():
                os.symlink(member.linkname, target)
            elif member.islnk():
                self._hardlink(target, member)
            elif member.isfifo():
                os.mkfifo(target, 0o600)
            else:
                raise ImageError(f"{self.where}: member {member.name!r} has unsupported type")
            if not member.issym():
                os.chmod(target, self._mode(member), follow_symlinks=False)
        self._owner(target, member)
        self._created(target)

    def _directory(self, target: Path, member: tarfile.TarInfo) -> None:
        try:
            if not stat.S_ISDIR(os.lstat(target).st_mode):
                _remove(target)
                os.mkdir(target, 0o755)
        except FileNotFoundError:
            os.mkdir(target, 0o755)
        self.dir_modes.append((target, self._mode(member)))

    def _file(self, archive: tarfile.TarFile, target: Path, member: tarfile.TarInfo) -> None:
        if self.budget[0] >= 0:
            self.budget[0] -= member.size
            if self.budget[0] < 0:
                raise ImageError(f"{self.where}: the image unpacks to more than its disk limit")
        source = archive.extractfile(member)
        assert source is not None  # a regular member always has one
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK)

    def _hardlink(self, target: Path, member: tarfile.TarInfo) -> None:
        *parents, base = member_parts(member.linkname, self.where) or [""]
        source = resolve_in_root(self.root, parents, self.where, create=False) / base
        try:
            mode = os.lstat(source).st_mode
        except FileNotFoundError:
            raise ImageError(f"{self.where}: hard link {member.name!r} to a missing file") from None
        if stat.S_ISDIR(mode):
            raise ImageError(f"{self.where}: hard link {member.name!r} to a directory; refused")
        os.link(source, target, follow_symlinks=False)

    def _whiteout(self, parents: list[str], name: str, member: str) -> None:
        if name in ("", ".", ".."):
            raise ImageError(f"{self.where}: whiteout {member!r} names no file")
        try:
            parent = resolve_in_root(self.root, parents, self.where, create=False)
        except FileNotFoundError:
            return  # nothing below to hide
        target = parent / name
        if target not in self.created:
            _remove(target)

    def _clear_lower(self, directory: Path) -> None:
        """Empty `directory` of what lower layers put there (an opaque whiteout)."""
        self._mark(directory)
        for entry in os.scandir(directory):
            path = Path(entry.path)
            if path in self.touched and entry.is_dir(follow_symlinks=False):
                self._clear_lower(path)
            elif path not in self.created:
                _remove(path)

    def _mode(self, member: tarfile.TarInfo) -> int:
        mode = member.mode & 0o7777
        return mode if self.as_root else mode & 0o1777

    def _owner(self, target: Path, member: tarfile.TarInfo) -> None:
        if self.as_root:
            os.lchown(target, member.uid, member.gid)

    def _created(self, path: Path) -> None:
        self.created.add(path)
        self._mark(path)

    def _mark(self, path: Path) -> None:
        while path not in self.touched and path != self.root:
            self.touched.add(path)
            path = path.parent


def member_parts(name: str, where: str) -> list[str]:
    """The components of a member name, refusing absolute names and `..`."""
    if name.startswith("/"):
        raise ImageError(f"{where}: member {name!r} is an absolute path; refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"{where}: member {name!r} climbs out with '..'; refused")
    return parts


def resolve_in_root(root: Path, parts: list[str], where: str, create: bool) -> Path:
    """The directory `parts` names under `root`, following symlinks as if `root` were `/`.

    With `create`, missing directories are made (0755); without, FileNotFoundError.
    """
    done: list[str] = []
    todo = list(parts)
    links = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        try:
            mode = os.lstat(candidate).st_mode
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(candidate, 0o755)
            done.append(part)
            continue
        if stat.S_ISLNK(mode):
            links += 1
            if links > MAX_SYMLINKS:
                raise ImageError(f"{where}: too many symlinks under /{'/'.join(parts)}") from None
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            todo = target.split("/") + todo
        elif stat.S_ISDIR(mode):
            done.append(part)
        else:
            raise ImageError(f"{where}: /{'/'.join([*done, part])} is not a directory")
    return root.joinpath(*done)


def _remove(path: Path) -> None:
    """Remove whatever is at `path` without following a symlink there."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        _remove_tree(path)
    else:
        os.unlink(path)


def _remove_tree(path: Path) -> None:
    try:
        shutil.rmtree(path)
    except PermissionError:  # a read-only directory (0555 in the image), unpacked as non-root
        _make_writable(path)
        shutil.rmtree(path)


def _make_writable(path: Path) -> None:
    os.chmod(path, 0o700)
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            _make_writable(Path(entry.path))
