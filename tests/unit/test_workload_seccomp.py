"""The default seccomp filter (node/workloads/seccomp.py): the containers' default profile for this
architecture and the container's capabilities, in the OCI runtime spec; a missing profile is one
error naming the package and the opt-out."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.workloads.errors import WorkloadError
from node.workloads.oci_spec import CAPABILITIES
from node.workloads.seccomp import default_filter


def actions(names: str, f: dict[str, object]) -> set[str]:
    rules = f["syscalls"]
    assert isinstance(rules, list)
    return {r["action"] for r in rules if names in r["names"]}


def test_the_filter_follows_the_capabilities_and_the_architecture() -> None:
    confined = default_filter(list(CAPABILITIES))
    assert confined["defaultAction"] == "SCMP_ACT_ERRNO" and confined["defaultErrnoRet"] == 38
    assert confined["architectures"][0] == "SCMP_ARCH_X86_64"
    assert actions("read", confined) == {"SCMP_ACT_ALLOW"}
    assert actions("move_pages", confined) == {"SCMP_ACT_ERRNO"}
    assert actions("bpf", confined) == {"SCMP_ACT_ERRNO"}  # no CAP_SYS_ADMIN: refused
    assert actions("chroot", confined) == {"SCMP_ACT_ALLOW"}  # CAP_SYS_CHROOT is held
    assert actions("arch_prctl", confined) == {"SCMP_ACT_ALLOW"}  # amd64 only
    assert not actions("s390_runtime_instr", confined)
    admin = default_filter([*CAPABILITIES, "CAP_SYS_ADMIN"])
    assert actions("bpf", admin) == {"SCMP_ACT_ALLOW"}


def test_a_missing_profile_is_one_error_naming_the_package(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match=r"golang-github-containers-common.*unconfined"):
        default_filter([], tmp_path / "none.json")
