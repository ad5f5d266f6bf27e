"""The OCI runtime spec (runc's config.json) for a container workload, from its image.

Secure by default: a read-only rootfs (tmpfs on /tmp and /run) unless the image asks for a
writable one, no new privileges, the default seccomp filter (seccomp.py) unless the image opts
out, Docker's default capabilities less MKNOD and NET_RAW, no
devices beyond the standard few, the usual masked and read-only /proc and /sys paths, memory /
CPU / pids limits from the annotations, and the workload's own network namespace (netattach.py),
inside which any user may open ICMP echo sockets and low ports (NETNS_SYSCTLS). The user comes
from the image config (`uid`, `uid:gid`, `name`, `name:group`), names looked up in the rootfs's
own /etc/passwd and /etc/group.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from node.workloads.errors import ImageError, WorkloadError
from node.workloads.layers import resolve_in_root
from node.workloads.runtime import Workload
from node.workloads.seccomp import default_filter

CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_SETGID", "CAP_SETUID",
    "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
]  # fmt: skip
MASKED = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]  # fmt: skip
READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
CPU_PERIOD = 100_000  # microseconds
# Per network namespace, so they loosen nothing outside the workload: ICMP echo sockets and low
# ports for any user (a service run as a non-root user serves its port without a capability).
NETNS_SYSCTLS = {"net.ipv4.ping_group_range": "0 2147483647",
                 "net.ipv4.ip_unprivileged_port_start": "0"}  # fmt: skip


def runtime_spec(workload: Workload, rootfs: Path, netns: Path | None) -> dict[str, Any]:
    spec = workload.spec
    uid, gid, groups = resolve_user(rootfs, spec.user, workload.name)
    readonly = not spec.writable_rootfs
    namespaces: list[dict[str, str]] = [
        {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"},
    ]  # fmt: skip
    if netns is not None:
        namespaces.append({"type": "network", "path": str(netns)})
    env = list(spec.env)
    if not any(item.startswith("PATH=") for item in env):
        env.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    caps = list(CAPABILITIES)
    linux_extra: dict[str, Any] = {}
    if spec.seccomp != "unconfined":
        linux_extra["seccomp"] = default_filter(caps)
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid, **({"additionalGids": groups} if groups else {})},
            "args": list(spec.args),
            "env": env,
            "cwd": spec.cwd or "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": readonly},
        "hostname": workload.name,
        "mounts": _mounts(readonly),
        "linux": {
            "namespaces": namespaces,
            "resources": {
                "devices": [{"allow": False, "access": "rwm"}],
                "memory": {"limit": spec.resources.memory, "swap": spec.resources.memory},
                "cpu": {"quota": int(spec.resources.cpus * CPU_PERIOD), "period": CPU_PERIOD},
                "pids": {"limit": spec.resources.pids},
            },
            "sysctl": NETNS_SYSCTLS if netns else {},
            "maskedPaths": MASKED,
            "readonlyPaths": READONLY,
            **linux_extra,
        },
    }


def _mounts(readonly: bool) -> list[dict[str, Any]]:
    nosuid = ["nosuid", "noexec", "nodev"]
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": nosuid},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": [*nosuid, "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": nosuid},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": [*nosuid, "ro"]},
    ]  # fmt: skip
    if readonly:
        for path in ("/tmp", "/run"):
            mounts.append({"destination": path, "type": "tmpfs", "source": "tmpfs",
                           "options": [*nosuid, "mode=1777", "size=65536k"]})  # fmt: skip
    return mounts


def resolve_user(rootfs: Path, user: str, where: str) -> tuple[int, int, list[int]]:
    """(uid, gid, supplementary gids) for an image config's User, as the container sees it."""
    name, _, group = user.partition(":")
    passwd = _table(rootfs, "passwd")
    groups = _table(rootfs, "group")
    if not name:
        uid, gid = 0, 0
    elif name.isdigit():
        uid = int(name)
        gid = next((int(row[3]) for row in passwd if row[2] == name and len(row) > 3), uid)
    else:
        row = next((row for row in passwd if row[0] == name and len(row) > 3), None)
        if row is None or not (row[2].isdigit() and row[3].isdigit()):
            raise WorkloadError(f"{where}: user {name!r} is not in the image's /etc/passwd")
        uid, gid = int(row[2]), int(row[3])
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            found = next((row for row in groups if row[0] == group and len(row) > 2), None)
            if found is None or not found[2].isdigit():
                raise WorkloadError(f"{where}: group {group!r} is not in the image's /etc/group")
            gid = int(found[2])
    extra = sorted({int(row[2]) for row in groups
                    if len(row) > 3 and name and name in row[3].split(",") and row[2].isdigit()
                    and int(row[2]) != gid})  # fmt: skip
    return uid, gid, extra


def _table(rootfs: Path, name: str) -> list[list[str]]:
    """Rows of the rootfs's /etc/<name>, read without following a symlink out of it."""
    try:
        path = resolve_in_root(rootfs, ["etc"], name, create=False) / name
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except (OSError, ImageError):
        return []
    with os.fdopen(fd, "rb") as table:
        if not stat.S_ISREG(os.fstat(table.fileno()).st_mode):
            return []
        text = table.read(1 << 20).decode(errors="replace")
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]
