"""Deploy a topology: namespaces, mgmt network, links, then per-node configuration.

Phases, each run over a thread pool (`max_workers`), each finishing before the next starts:
  1. the mgmt namespace and its bridge (one object);
  2. nodes: create the namespace (recorded first), kind setup, eth0 on the mgmt bridge;
  3. links: veth pairs created directly in their namespaces, brought up, bridge ports enslaved;
  4. nodes: addresses, routes, kind rules (NAT), exec commands, the node process; in waves by
     kind (`Kind.start_order`): lispmesh controllers first, then routers and hosts, then
     lispmesh nodes, so a node's controller is up (and its join token made) when it starts.
Any failure stops the deploy and destroys whatever was recorded, so nothing leaks; the error names
the node or link that failed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TypeVar

from pyroute2.netlink.exceptions import NetlinkError

from netlab import destroy, labdir, links, naming, netns, state
from netlab.errors import NetlabError
from netlab.kinds import KINDS
from netlab.kinds.bridge import bridge_ifname
from netlab.model import HOST, MGMT_NET, Link, Node, Topology

T = TypeVar("T")
Progress = Callable[[str], None]  # called once per finished step, with a description


def total_steps(topo: Topology) -> int:
    return 2 * len(topo.nodes) + len(topo.links) + 1


class Deployer:
    def __init__(
        self,
        topo: Topology,
        *,
        max_workers: int | None = None,
        exec_timeout: float = 30.0,
        progress: Progress | None = None,
    ) -> None:
        self.topo = topo
        self.max_workers = max_workers or min(16, (os.cpu_count() or 2) * 4)
        self.exec_timeout = exec_timeout
        self.progress = progress or (lambda _msg: None)
        self.state: state.LabState
        self.secrets: dict[str, str] = {}

    def node_dir(self, node: Node) -> Path:
        return self.topo.labdir / node.name

    # --- entry point -------------------------------------------------------------------------

    def deploy(self, reconfigure: bool = False) -> str:
        """Deploy the lab; returns "deployed", or "unchanged" when it is already up as written."""
        topo = self.topo
        with state.lab_lock(topo.name):
            existing = state.LabState.load(topo.labdir)
            if existing is not None:
                if not reconfigure and existing.status == "deployed":
                    if existing.data.get("digest") != topo.digest():
                        raise NetlabError(
                            f"lab '{topo.name}' is already deployed from a different version of "
                            f"this topology; use --reconfigure to rebuild it"
                        )
                    if destroy.is_intact(existing):
                        return "unchanged"
                # A half-finished deploy, a damaged lab, or --reconfigure: clean up first.
                destroy.destroy_state(existing)
            self._check_conflicts()
            self.state = state.LabState.new(
                topo.labdir, topo.name, topo.path, topo.prefix, topo.digest()
            )
            state.register(topo.name, topo.labdir, topo.path)
            try:
                self._build()
            except BaseException as exc:
                self.state.set_status("failed")
                destroy.destroy_state(self.state)
                if isinstance(exc, NetlabError):
                    raise NetlabError(
                        f"deploy of lab '{topo.name}' failed (cleaned up): {exc}"
                    ) from None
                if isinstance(exc, (OSError, NetlinkError, links.LinkError)):
                    raise NetlabError(
                        f"deploy of lab '{topo.name}' failed (cleaned up): {exc}"
                    ) from exc
                raise
            self.state.set_status("deployed")
            return "deployed"

    def _check_conflicts(self) -> None:
        topo = self.topo
        entry = state.lookup(topo.name)
        if entry and Path(entry["labdir"]) != topo.labdir:
            other = state.LabState.load(Path(entry["labdir"]))
            if other is not None and any(netns.exists(n) for n in other.namespaces):
                raise NetlabError(
                    f"a lab named '{topo.name}' is already deployed from "
                    f"{entry['topology']}; destroy it first or use another name"
                )
        for ns in topo.namespaces():
            if netns.exists(ns):
                raise NetlabError(
                    f"namespace {ns} already exists (another lab with the same "
                    "name or prefix?); destroy it first"
                )
        host_ifs = [
            ep.ifname for lk in topo.links for ep in (lk.a, lk.z) if topo.ns_of(ep.node) is None
        ]
        if host_ifs:
            with netns.ipr(None) as ipr:
                for ifname in host_ifs:
                    if links.exists(ipr, ifname):
                        raise NetlabError(
                            f"interface {ifname} already exists in the host "
                            "namespace; pick another name for the host endpoint"
                        )

    # --- phases ------------------------------------------------------------------------------

    def _build(self) -> None:
        topo = self.topo
        topo.labdir.mkdir(parents=True, exist_ok=True)
        if topo.needs_mgmt_ns:
            self._mgmt_ns()
        self.progress("management network")
        self._parallel(topo.nodes.values(), self._node_setup, lambda n: f"node {n.name}")
        self._parallel(topo.links, self._link, lambda lk: f"link {_link_text(lk)}")
        for order in sorted({KINDS[n.kind].start_order for n in topo.nodes.values()}):
            wave = [n for n in topo.nodes.values() if KINDS[n.kind].start_order == order]
            self._parallel(wave, self._node_configure, lambda n: f"config {n.name}")
        labdir.write_all(topo)

    def _parallel(
        self, items: Iterable[T], fn: Callable[[T], None], describe: Callable[[T], str]
    ) -> None:
        items = list(items)
        if not items:
            return
        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            futures: dict[Future[None], T] = {pool.submit(fn, it): it for it in items}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in done:
                    exc = fut.exception()
                    if exc is not None:
                        for p in pending:
                            p.cancel()
                        wait(pending)  # let running steps finish so the state file is complete
                        if isinstance(exc, NetlabError):
                            raise exc
                        raise NetlabError(f"{describe(futures[fut])}: {_describe(exc)}") from exc
                    self.progress(describe(futures[fut]))

    def _mgmt_ns(self) -> None:
        topo, ns = self.topo, self.topo.mgmt_ns
        self.state.add_namespace(ns)
        netns.create(ns)
        with netns.ipr(ns) as ipr:
            links.set_up(ipr, "lo")
            links.add_bridge(ipr, topo.mgmt.bridge)
            for fam in (4, 6):
                gw = topo.mgmt.gateway(fam)
                if gw:
                    links.add_address(ipr, topo.mgmt.bridge, gw)
        netns.write_sysctls(
            ns, {"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0"}
        )

    def mgmt_port(self, node: Node) -> str:
        """Name of a node's veth end on the mgmt bridge (in the mgmt namespace)."""
        name = naming.shorten_ifname(node.name)
        return name if name != self.topo.mgmt.bridge else naming.shorten_ifname(node.name + "-m")

    def _node_setup(self, node: Node) -> None:
        kind = KINDS[node.kind]
        if kind.has_namespace:
            assert node.ns
            self.state.add_namespace(node.ns)
            netns.create(node.ns)
            netns.set_hostname(node.ns, node.name)
        kind.setup(self, node)
        if node.has_mgmt:
            assert node.ns
            port = self.mgmt_port(node)
            links.add_veth(node.ns, "eth0", self.topo.mgmt_ns, port)
            with netns.ipr(self.topo.mgmt_ns) as ipr:
                links.enslave(ipr, port, self.topo.mgmt.bridge)
                links.set_up(ipr, port)
            with netns.ipr(node.ns) as ipr:
                links.set_up(ipr, "eth0")
                for cidr in (node.mgmt_ipv4, node.mgmt_ipv6):
                    if cidr:
                        links.add_address(ipr, "eth0", cidr)

    def _link(self, lk: Link) -> None:
        topo = self.topo
        a_ns, z_ns = topo.ns_of(lk.a.node), topo.ns_of(lk.z.node)
        for ep, ns in ((lk.a, a_ns), (lk.z, z_ns)):
            if ns is None:
                self.state.add_host_link(ep.ifname)  # recorded before it exists: never leaks
        links.add_veth(
            a_ns, lk.a.ifname, z_ns, lk.z.ifname, mtu=lk.mtu, a_mac=lk.a.mac, z_mac=lk.z.mac
        )
        for ep, ns in ((lk.a, a_ns), (lk.z, z_ns)):
            with netns.ipr(ns) as ipr:
                if ep.node == MGMT_NET:
                    links.enslave(ipr, ep.ifname, topo.mgmt.bridge)
                elif ep.node != HOST and topo.nodes[ep.node].kind == "bridge":
                    links.enslave(ipr, ep.ifname, bridge_ifname(topo.nodes[ep.node]))
                links.set_up(ipr, ep.ifname)

    def _node_configure(self, node: Node) -> None:
        KINDS[node.kind].configure(self, node)


def _link_text(lk: Link) -> str:
    return f"{lk.a.node}:{lk.a.iface} <-> {lk.z.node}:{lk.z.iface}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, NetlinkError) and len(exc.args) > 1:
        return str(exc.args[1])
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc) or type(exc).__name__


__all__ = ["Deployer", "total_steps"]
