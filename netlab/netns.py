"""Network namespaces: create, remove, list, run code or commands inside them.

Namespaces are the named kind `ip netns` shows (/run/netns/<name>), so users can inspect a lab
with the usual tools (`ip netns exec clab-lab-r1 ip addr`).

A node's namespace also gets its own UTS namespace with the node's name as hostname (as a
containerlab container has), kept at /run/netlab/uts/<name>: every command netlab runs in the node
sees that hostname, so a lispmesh node joined by a lab is named after its lab node.
"""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2 import config as pr_config
from pyroute2 import netns as pr_netns

# pyroute2 reaches into a namespace through a forked child and gives up on it after 2 s (10 s to
# open the socket): on a shared 2-core machine under load a fork alone can take longer, and a lab
# deploy then fails with "no response from the child pid". Still bounded, just not that tight.
pr_config.default_communicate_timeout = max(pr_config.default_communicate_timeout, 30)
pr_config.default_create_socket_timeout = max(pr_config.default_create_socket_timeout, 60)

NETNS_DIR = "/run/netns"
UTS_DIR = "/run/netlab/uts"
_MNT_DETACH = 2
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def exists(name: str) -> bool:
    return os.path.exists(path(name))


def list_all() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def create(name: str) -> None:
    """Create a named namespace; fails if it exists (never adopt someone else's)."""
    if exists(name):
        raise FileExistsError(errno.EEXIST, "namespace exists", name)
    pr_netns.create(name)


def remove(name: str) -> None:
    """Unmount and unlink a namespace; the kernel frees it (and its veths) once unused."""
    if exists(name):
        pr_netns.remove(name)
    uts = uts_path(name)
    if os.path.exists(uts):
        _libc.umount2(uts.encode(), _MNT_DETACH)  # not mounted (a half-made one): still unlink
        os.unlink(uts)


def uts_path(name: str) -> str:
    return os.path.join(UTS_DIR, name)


def set_hostname(name: str, hostname: str) -> None:
    """Give namespace `name` its own UTS namespace whose hostname is `hostname`."""
    os.makedirs(UTS_DIR, mode=0o755, exist_ok=True)
    uts = uts_path(name)
    with open(uts, "a"):
        pass
    # util-linux's unshare makes the namespace and bind-mounts it on the file (a persistent
    # namespace, like `ip netns add`), then runs hostname inside it.
    subprocess.run(
        ["unshare", f"--uts={uts}", "hostname", hostname[:64]],
        check=True, capture_output=True, timeout=10,
    )  # fmt: skip


def inode(name: str) -> int | None:
    try:
        return os.stat(path(name)).st_ino
    except FileNotFoundError:
        return None


def pids_in(name: str) -> list[int]:
    """Processes whose network namespace is `name` (like `ip netns pids`)."""
    try:
        st = os.stat(path(name))
    except FileNotFoundError:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if ns.st_ino == st.st_ino and ns.st_dev == st.st_dev:
            out.append(int(entry))
    return out


def ipr(name: str | None) -> IPRoute:
    """An rtnetlink socket in namespace `name` (None: the root namespace). Never creates one."""
    if name is None:
        return IPRoute()
    if not exists(name):
        raise FileNotFoundError(errno.ENOENT, "no such namespace", name)
    return IPRoute(netns=name, flags=0)


def run_in(name: str, fn: Callable[[], T]) -> T:
    """Run `fn` in a fresh thread that has joined namespace `name` (setns is per thread).

    The thread dies afterwards, so no thread of ours is ever left in a lab namespace.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(path(name), os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {name}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=body, name=f"netns-{name}")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def write_sysctls(name: str, values: Mapping[str, str]) -> None:
    """Write sysctls (dotted names, e.g. net.ipv4.ip_forward) inside namespace `name`."""

    def body() -> None:
        for key, value in values.items():
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(str(value))

    run_in(name, body)


def ns_argv(name: str | None, argv: Sequence[str]) -> list[str]:
    """argv that runs `argv` inside namespace `name` (None: as is, in the root namespace), and
    inside its UTS namespace when it has one. Both exec: the pid is the command's own."""
    if name is None:
        return list(argv)
    uts = uts_path(name)
    if os.path.exists(uts):
        return ["ip", "netns", "exec", name, "nsenter", f"--uts={uts}", "--", *argv]
    return ["ip", "netns", "exec", name, *argv]


def run(
    name: str | None,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion inside a namespace, capturing text output."""
    full_env = {**os.environ, **env} if env else None
    return subprocess.run(
        ns_argv(name, argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
