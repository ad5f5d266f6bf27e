"""The default seccomp filter of a container: the containers/podman default profile (Debian's
golang-github-containers-common ships it as /usr/share/containers/seccomp.json; it is Docker's
list, less Docker's CAP_SYS_ADMIN gate on unshare), turned into the OCI runtime spec's
`linux.seccomp` for this machine's architecture and the capabilities the container gets, as
podman and Docker do (a dependency made for the job rather than our own list).

The profile is an allow-list: a system call it does not name fails with ENOSYS, the ones it
refuses explicitly (kexec, move_pages, userfaultfd, setns and bpf without CAP_SYS_ADMIN, kernel
modules, clock setting, ...) with EPERM. A workload opts out with the image annotation
`io.lispmesh.seccomp: unconfined`, and its status says so.
"""

from __future__ import annotations

import json
import os
import platform
from functools import cache
from pathlib import Path
from typing import Any

from node.workloads.errors import WorkloadError

PROFILE = Path("/usr/share/containers/seccomp.json")
MODES = ("default", "unconfined")
# uname -m -> (the profile's Go architecture name, libseccomp's)
_ARCHES = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
}


def _kernel() -> tuple[int, ...]:
    release = os.uname().release.split("-")[0]
    return tuple(int(p) for p in release.split(".")[:2] if p.isdigit())


def _applies(entry: dict[str, Any], arch: str, caps: frozenset[str]) -> bool:
    includes, excludes = entry.get("includes") or {}, entry.get("excludes") or {}
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if includes.get("caps") and not set(includes["caps"]) <= caps:
        return False
    if includes.get("minKernel"):
        wanted = tuple(int(p) for p in str(includes["minKernel"]).split(".")[:2])
        if _kernel() < wanted:
            return False
    if excludes.get("arches") and arch in excludes["arches"]:
        return False
    return not (excludes.get("caps") and set(excludes["caps"]) & caps)


@cache
def _profile(path: Path) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WorkloadError(
            f"the default seccomp profile {path} cannot be read ({exc}): install "
            "golang-github-containers-common (scripts/bootstrap.sh), or run the workload with "
            "io.lispmesh.seccomp: unconfined"
        ) from None
    return loaded


def default_filter(caps: list[str], path: Path = PROFILE) -> dict[str, Any]:
    """`linux.seccomp` of the OCI runtime spec for a container holding `caps`."""
    profile = _profile(path)
    machine = platform.machine()
    if machine not in _ARCHES:
        raise WorkloadError(f"no default seccomp profile for the architecture {machine}")
    arch, native = _ARCHES[machine]
    architectures = [native]
    for entry in profile.get("archMap") or ():
        if entry.get("architecture") == native:
            architectures += entry.get("subArchitectures") or []
    held = frozenset(caps)
    syscalls = []
    for entry in profile.get("syscalls") or ():
        if not _applies(entry, arch, held):
            continue
        rule: dict[str, Any] = {"names": list(entry["names"]), "action": entry["action"]}
        if entry.get("args"):
            rule["args"] = [{k: a[k] for k in ("index", "value", "valueTwo", "op")}
                            for a in entry["args"]]  # fmt: skip
        if entry.get("errnoRet") is not None:
            rule["errnoRet"] = entry["errnoRet"]
        syscalls.append(rule)
    out: dict[str, Any] = {
        "defaultAction": profile["defaultAction"],
        "architectures": architectures,
        "syscalls": syscalls,
    }
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return out
