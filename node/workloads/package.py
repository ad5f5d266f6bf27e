"""Our manifest annotations: what an edge container asks of the node, and what it runs.

    io.lispmesh.kind               container (default) | vm
    io.lispmesh.resources.memory   bytes, or with a unit: 64Mi, 1Gi, 500M (default 128Mi)
    io.lispmesh.resources.cpus     CPUs, may be fractional: 0.5 (default 1)
    io.lispmesh.resources.pids     most processes at once (containers; default 256)
    io.lispmesh.resources.disk     the rootfs or disk may grow to this (default 1Gi)
    io.lispmesh.rootfs             readonly (default) | writable
    io.lispmesh.seccomp            default (the containers' default profile) | unconfined
    io.lispmesh.ports              tcp/80,udp/53 — what the workload serves on its EID
    io.lispmesh.env                JSON list of "KEY=value", added over the image's Env
    io.lispmesh.cmd                JSON list: the command, instead of the image's Entrypoint + Cmd
    io.lispmesh.vm.cmdline         a VM's kernel command line (kernel + initrd images)
    io.lispmesh.label.<key>        app labels (io.lispmesh.label.app: db) that policies name

A malformed annotation is one ImageError naming the key and the value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from common.workload_model import Port, parse_port
from node.workloads.errors import ImageError
from node.workloads.oci_image import Image

PREFIX = "io.lispmesh."
LABEL = "io.lispmesh.label."
_SIZE = re.compile(r"(\d+)(|K|M|G|T|Ki|Mi|Gi|Ti)\Z")
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}  # fmt: skip
_LABEL_KEY = re.compile(r"[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?\Z")
KNOWN = {
    "kind", "resources.memory", "resources.cpus", "resources.pids", "resources.disk", "ports",
    "env", "cmd", "vm.cmdline", "vm.role", "rootfs", "seccomp",
}  # fmt: skip


@dataclass(frozen=True)
class Resources:
    memory: int = 128 << 20  # bytes
    cpus: float = 1.0
    pids: int = 256
    disk: int = 1 << 30  # bytes


@dataclass(frozen=True)
class WorkloadSpec:
    """What to run, from the image and its annotations (the node adds name and EID)."""

    kind: str
    args: tuple[str, ...]  # the process (containers); empty for VMs
    env: tuple[str, ...]
    cwd: str
    user: str
    resources: Resources
    ports: tuple[Port, ...]
    labels: dict[str, str] = field(default_factory=dict)
    kernel_cmdline: str = ""
    writable_rootfs: bool = False
    seccomp: str = "default"  # node.workloads.seccomp.MODES


def workload_spec(image: Image) -> WorkloadSpec:
    notes = image.annotations
    where = image.source
    for key in notes:
        if key.startswith(PREFIX) and not key.startswith(LABEL) and key[len(PREFIX) :] not in KNOWN:
            raise ImageError(f"{where}: unknown annotation {key}")

    def get(name: str) -> str | None:
        return notes.get(PREFIX + name)

    resources = Resources(
        memory=_size(get("resources.memory"), Resources.memory, "resources.memory", where),
        cpus=_cpus(get("resources.cpus"), where),
        pids=_count(get("resources.pids"), Resources.pids, "resources.pids", where),
        disk=_size(get("resources.disk"), Resources.disk, "resources.disk", where),
    )
    config = image.config
    cmd = _strings(get("cmd"), "cmd", where)
    args = tuple(cmd) if cmd is not None else config.entrypoint + config.cmd
    if image.kind == "container" and not args:
        raise ImageError(f"{where}: the image has no Entrypoint or Cmd and no {PREFIX}cmd")
    env = _merge_env(config.env, "the image config's Env", (), where)
    env = _merge_env(env, f"{PREFIX}env", tuple(_strings(get("env"), "env", where) or ()), where)
    labels = {}
    for key, value in notes.items():
        if key.startswith(LABEL):
            name = key[len(LABEL) :]
            if not _LABEL_KEY.match(name):
                raise ImageError(f"{where}: label {key} is not a valid label key")
            labels[name] = value
    rootfs = get("rootfs") or "readonly"
    if rootfs not in ("readonly", "writable"):
        raise ImageError(f"{where}: {PREFIX}rootfs={rootfs!r} is not readonly or writable")
    seccomp = get("seccomp") or "default"
    if seccomp not in ("default", "unconfined"):
        raise ImageError(f"{where}: {PREFIX}seccomp={seccomp!r} is not default or unconfined")
    return WorkloadSpec(image.kind, args, env, config.working_dir or "/", config.user, resources,
                        _ports(get("ports"), where), labels, get("vm.cmdline") or "",
                        rootfs == "writable", seccomp)  # fmt: skip


def _size(text: str | None, default: int, key: str, where: str) -> int:
    if text is None:
        return default
    match = _SIZE.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ImageError(f"{where}: {PREFIX}{key}={text!r} is not a size (e.g. 64Mi, 1Gi)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _count(text: str | None, default: int, key: str, where: str) -> int:
    if text is None:
        return default
    if not text.isdigit() or not 0 < int(text) <= 1 << 22:
        raise ImageError(f"{where}: {PREFIX}{key}={text!r} is not a positive count")
    return int(text)


def _cpus(text: str | None, where: str) -> float:
    if text is None:
        return Resources.cpus
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.01 <= value <= 1024:
        raise ImageError(f"{where}: {PREFIX}resources.cpus={text!r} is not a CPU count (0.5, 2)")
    return value


def _ports(text: str | None, where: str) -> tuple[Port, ...]:
    ports = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        port = parse_port(item)
        if port is None:
            raise ImageError(f"{where}: {PREFIX}ports item {item!r} is not tcp/N or udp/N")
        ports.append(port)
    return tuple(ports)


def _strings(text: str | None, key: str, where: str) -> list[str] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageError(f"{where}: {PREFIX}{key} must be a JSON list of strings")
    return value


def _merge_env(
    base: tuple[str, ...], what: str, extra: tuple[str, ...], where: str
) -> tuple[str, ...]:
    """`extra` over `base` by key; `what` names where a malformed entry came from."""
    merged: dict[str, str] = {}
    for item in (*base, *extra):
        key, sep, _value = item.partition("=")
        if not sep or not key or "\0" in item:
            raise ImageError(f"{where}: {what} entry {item!r} is not KEY=value")
        merged[key] = item
    return tuple(merged.values())
