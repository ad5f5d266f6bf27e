"""Kind `linux`: a namespace; addresses and routes (netlab extensions), exec commands, and an
optional long-running `cmd` process (containerlab's container command)."""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Mapping

from netlab import links, netns, procs
from netlab.errors import NetlabError
from netlab.kinds.base import DeployContext, Kind
from netlab.model import Node

# New interfaces skip IPv6 duplicate address detection: nothing else shares these links, and
# DAD would leave addresses "tentative" (unusable) for 1-2 s after deploy.
BASE_SYSCTLS = {
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
}
# How long a started process must survive for deploy to call it started.
STARTUP_GRACE = 0.2


class LinuxKind(Kind):
    name = "linux"
    extra_sysctls: dict[str, str] = {}

    def setup(self, ctx: DeployContext, node: Node) -> None:
        assert node.ns
        with netns.ipr(node.ns) as ipr:
            links.set_up(ipr, "lo")
        netns.write_sysctls(node.ns, {**BASE_SYSCTLS, **self.extra_sysctls})

    def configure(self, ctx: DeployContext, node: Node) -> None:
        if node.sysctls:
            assert node.ns
            try:
                netns.write_sysctls(node.ns, node.sysctls)
            except OSError as exc:
                raise NetlabError(f"node {node.name}: sysctl: {exc}") from None
        configure_ip(node)
        self.rules(ctx, node)
        run_exec(ctx, node)
        self.start(ctx, node)

    def rules(self, ctx: DeployContext, node: Node) -> None:
        """Packet rules of the kind (nat adds its nftables ruleset here)."""

    def start(self, ctx: DeployContext, node: Node) -> None:
        """Start the node's process: its `cmd` (the lispmesh kinds add default commands)."""
        start_cmd(ctx, node)


def configure_ip(node: Node) -> None:
    """The `addresses` and `routes` netlab extensions."""
    if not node.addresses and not node.routes:
        return
    with netns.ipr(node.ns) as ipr:
        for ifname, cidrs in node.addresses.items():
            for cidr in cidrs:
                try:
                    links.add_address(ipr, ifname, cidr)
                except links.LinkError as exc:
                    raise NetlabError(f"node {node.name}: {exc}") from None
        for route in node.routes:
            try:
                links.add_route(ipr, route)
            except links.LinkError as exc:
                raise NetlabError(f"node {node.name}: {exc}") from None


def run_exec(ctx: DeployContext, node: Node) -> None:
    """containerlab's `exec`: commands run in order (no shell: use `sh -c '...'` for one)."""
    for cmd in node.exec:
        argv = shlex.split(cmd)
        try:
            res = netns.run(node.ns, argv, env=node.env, timeout=ctx.exec_timeout)
        except subprocess.TimeoutExpired:
            raise NetlabError(
                f"node {node.name}: exec '{cmd}' did not finish within {ctx.exec_timeout:g} s"
            ) from None
        except FileNotFoundError:
            raise NetlabError(f"node {node.name}: exec '{cmd}': command not found") from None
        if res.returncode != 0:
            detail = (res.stderr.strip() or res.stdout.strip()).splitlines()
            raise NetlabError(
                f"node {node.name}: exec '{cmd}' failed with exit code "
                f"{res.returncode}" + (f": {detail[-1]}" if detail else "")
            )


def start_cmd(
    ctx: DeployContext,
    node: Node,
    argv: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    shown: str | None = None,
) -> None:
    """Start the node's long-running process, record its pid, check it did not die at once.

    `argv` replaces the node's `cmd`, `env` adds to the node's env (the node's env wins), and
    `shown` is the command as recorded in the state file and errors (to keep secrets out).
    """
    if argv is None:
        if not node.cmd:
            return
        argv = shlex.split(node.cmd)
    shown = " ".join(argv) if shown is None else shown
    log_dir = ctx.node_dir(node)
    try:
        rec, child = procs.start(node.ns, node.name, argv, {**(env or {}), **node.env}, log_dir)
    except OSError as exc:
        raise NetlabError(f"node {node.name}: cannot start '{shown}': {exc}") from None
    rec.cmd = shown
    ctx.state.add_process(rec)
    deadline = time.monotonic() + STARTUP_GRACE
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            raise NetlabError(
                f"node {node.name}: '{shown}' exited at once with code {code} "
                f"(see {log_dir / 'stderr.log'})"
            )
        time.sleep(0.02)
