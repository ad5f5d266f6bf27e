"""The map-server/map-resolver embedded in the controller: one site per enrolled node.

Each node's site has its own random key and allows exactly that node's EID prefixes, so a node can
register its own EIDs only (and not a swarm of more-specifics of them, unless
`node_more_specifics`: a node registers its prefixes whole), and revoking a node removes its site,
which withdraws its registrations at once. A guard site over the whole EID pools (a key nobody has,
no more-specifics) makes the map-resolver answer "not registered (yet)" for a pool EID nobody
holds, instead of "not in the overlay", which would send that traffic out unencrypted.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from typing import Any

from common.udp import underlay_socket
from controller_api.store import NodeRow
from lisp.map_server import MapServer, Site
from lisp.map_server.service import MapServerService

log = logging.getLogger("lispmesh.controller.map_server")

GUARD_SITE = "eid-pools"


def site_name(node: NodeRow) -> str:
    return f"node-{node.name}"


class EmbeddedMapServer:
    def __init__(
        self,
        listen: str,
        port: int,
        instance_id: int,
        pools: Sequence[IPv4Network | IPv6Network],
        node_more_specifics: bool = False,
    ) -> None:
        self.listen = listen
        self.node_more_specifics = node_more_specifics
        self.port = port
        self.instance_id = instance_id
        self.pools = pools
        self._guard = Site(
            GUARD_SITE,
            {0: secrets.token_bytes(32)},
            tuple((instance_id, pool) for pool in pools),
            accept_more_specifics=False,
        )
        # A pool EID nobody registered yet is usually a node still booting: TTL 0 keeps ITRs
        # from caching "unregistered" (they ask again on the next packet, rate-limited).
        self.core = MapServer([self._guard], unregistered_ttl=0)
        self.service = MapServerService(self.core, self._send)
        self.socks: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        address = IPv4Address("0.0.0.0") if self.listen in ("", "0.0.0.0") else None
        sock = underlay_socket(address or IPv4Address(self.listen), self.port, None)
        self.socks.append(sock)
        self._loop.add_reader(sock.fileno(), self._readable, sock)
        await self.service.start()
        log.info("embedded map-server listening on %s:%d", self.listen or "0.0.0.0", self.port)

    @property
    def bound_port(self) -> int:
        """The UDP port it listens on (the one asked for, or the one the kernel gave for 0)."""
        return int(self.socks[0].getsockname()[1]) if self.socks else self.port

    async def stop(self) -> None:
        await self.service.stop()
        for sock in self.socks:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self.socks.clear()

    def _readable(self, sock: socket.socket) -> None:
        for _ in range(64):
            try:
                data, source = sock.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError:
                self.core.counters["read-error"] += 1
                return
            self.service.handle(data, (source[0], source[1]))

    def _send(self, packet: bytes, dest: tuple[str, int]) -> None:
        for sock in self.socks:
            if (sock.family == socket.AF_INET6) == (":" in dest[0]):
                sock.sendto(packet, dest)
                return
        self.core.counters["no-socket"] += 1

    def _guard_for(self, iid: int) -> Site:
        if iid == self.instance_id:
            return self._guard
        return Site(
            f"{GUARD_SITE}-iid{iid}",
            {0: self._guard.keys[0]},
            tuple((iid, pool) for pool in self.pools),
            accept_more_specifics=False,
        )

    def set_nodes(
        self,
        nodes: list[NodeRow],
        extra: Mapping[str, Sequence[IPv4Network | IPv6Network]] | None = None,
    ) -> int:
        """One site per node that is not revoked, and a guard over the EID pools in every
        instance-id in use; returns how many registrations went. `extra`: node name -> the app
        EIDs (/32, /128) of the replicas placed on it, which it may register too (a replica
        that moves takes its allowance along: the old node's registration is withdrawn)."""
        iids = {self.instance_id} | {n.instance_id for n in nodes if not n.revoked}
        sites = [self._guard_for(iid) for iid in sorted(iids)]
        for node in nodes:
            if node.revoked:
                continue
            mine: list[IPv4Network | IPv6Network] = [node.eid4, node.eid6]
            mine += (extra or {}).get(node.name, ())
            allowed = tuple((node.instance_id, p) for p in mine)
            sites.append(
                Site(
                    site_name(node),
                    {0: node.site_key.encode()},
                    allowed,
                    accept_more_specifics=self.node_more_specifics,
                )
            )
        withdrawn = self.core.replace_sites(sites, time.monotonic())
        for reg in withdrawn:
            log.info("withdrew registration [%d]%s of %s", reg.iid, reg.prefix, reg.site.name)
        return len(withdrawn)

    def registrations(self) -> dict[str, list[dict[str, Any]]]:
        """Live registrations by site name."""
        now = time.monotonic()
        out: dict[str, list[dict[str, Any]]] = {}
        for reg in self.core.registrations():
            if reg.expires > now:
                out.setdefault(reg.site.name, []).append(reg.status(now))
        return out
