"""One lispmesh node process: the roles of its config, their sockets, TUN and timers.

Owns every file descriptor (TUN, UDP 4341/4342 per uplink, the map-server's listen sockets, the
control socket) and feeds the sans-IO-style role objects from the asyncio loop. A malformed or
hostile packet is counted and dropped where it is handled; an unexpected exception while
handling one packet is logged and counted here, and never stops the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from common.errors import LispmeshError
from common.prometheus import Exporter, LoopCollector, serve
from common.udp import UdpSocketError, underlay_socket
from lisp import DecodeError, EncapsulatedControl, decode_control
from lisp.ecm import TO_ETR_BIT
from lisp.map_server import MapServer, Site
from lisp.map_server.service import MapServerService
from mesh import diagnostics, fastpath
from mesh.config import ConfigError, IpAddress, NodeConfig, XtrConfig, load_config
from mesh.control import ControlServer
from mesh.fastpath import FastPath
from mesh.kx import KxAuthority
from mesh.metrics import node_families
from mesh.netlink import (
    AddressWatch,
    configure_tun,
    interface_addresses,
    link_is_up,
    remove_from_tun,
)
from mesh.tun import TunDevice
from mesh.underlay_mtu import enable_errors, read_mtu_errors, route_mtu
from mesh.xtr import CONTROL_PORT, DATA_PORT, LocalRloc, Xtr

log = logging.getLogger("lispmesh.node")
# sendto() errors that say the destination cannot be reached from here (no route, an address
# that is not unicast or not of this family), as opposed to this node's own trouble.
DESTINATION_ERRORS = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, errno.EACCES, errno.EINVAL,
     errno.EAFNOSUPPORT}
)  # fmt: skip


def _send(sock: socket.socket, packet: bytes, dest: tuple[str, int]) -> None:
    """sendto, once more after ECONNREFUSED: the underlay sockets ask for ICMP errors
    (IP_RECVERR, path MTU), so an earlier datagram's port-unreachable (a peer's closed port)
    is reported by the next send, which then did not go out."""
    try:
        sock.sendto(packet, dest)
    except ConnectionRefusedError:
        sock.sendto(packet, dest)


MIN_SLEEP = 0.005  # between two timer runs: a deadline in the past does not spin the loop
MAX_SLEEP = 1.0
CHECKPOINT_SECONDS = 5.0  # how often learnt mappings are written to the state directory
READ_BATCH = 256  # packets drained per readiness event, so one busy fd cannot starve the rest
NO_VNET_FLAGS = bytes(10)  # virtio-net header of a plain packet (no GSO, no checksum offload)


def _sites(config: NodeConfig) -> list[Site]:
    assert config.map_server is not None
    return [
        Site(
            name=s.name,
            keys=s.keys,
            allowed=s.allowed,
            accept_more_specifics=s.accept_more_specifics,
            proxy_reply=s.proxy_reply,
            max_registrations=s.max_registrations,
        )
        for s in config.map_server.sites
    ]


class NodeSetupError(LispmeshError):
    """The node could not start (one line for the operator)."""


def udp_socket(
    address: IpAddress, port: int, device: str | None, mtu_errors: bool = False
) -> socket.socket:
    """An underlay socket (common.udp); `mtu_errors`: ICMP "too big" for our datagrams, with
    the MTU, on its error queue (mesh.pmtu), which NodeRuntime._mtu_errors drains."""
    try:
        sock = underlay_socket(address, port, device)
    except UdpSocketError as exc:
        raise NodeSetupError(str(exc)) from None
    if mtu_errors:
        enable_errors(sock)
    return sock


class NodeRuntime:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.started = time.monotonic()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event = asyncio.Event()
        self.tun: TunDevice | None = None
        self.xtr: Xtr | None = None
        self.map_server: MapServerService | None = None
        self.data_socks: dict[str, socket.socket] = {}
        self.control_socks: dict[str, socket.socket] = {}
        self.ms_socks: list[socket.socket] = []
        self.errors: Counter[str] = Counter()
        self.control_server: ControlServer | None = None
        self._readers: list[int] = []
        self.exporter: Exporter | None = None
        self._saved_mappings: str | None = None  # the checkpoint last written
        self.address_watch: AddressWatch | None = None

    # ---------------------------------------------------------------- set-up and tear-down

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            await self._setup()
            if self.config.metrics_listen:
                collector = LoopCollector(
                    "lispmesh", self.loop, lambda: node_families(self.status())
                )
                self.exporter = serve(self.config.metrics_listen, collector)
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.loop.add_signal_handler(sig, self.stop_event.set)
            log.info("node %s running (%s)", self.config.name, ", ".join(self.roles()))
            tick = asyncio.create_task(self._ticker())
            await self.stop_event.wait()
            tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tick
        finally:
            if self.exporter is not None:
                self.exporter.close()
                self.exporter = None
            await self._teardown()
        log.info("node %s stopped", self.config.name)

    def roles(self) -> list[str]:
        roles = []
        if self.config.xtr is not None:
            roles.append("xtr")
        if self.config.map_server is not None:
            roles += ["map-server", "map-resolver"]
        return roles

    async def _setup(self) -> None:
        assert self.loop is not None
        config = self.config
        now = time.monotonic()
        if config.xtr is not None:
            kx = self._load_identity()
            xcfg = config.xtr
            use_fast = self._use_fast_path()
            try:
                self.tun = TunDevice(xcfg.tun, vnet_hdr=use_fast)
                await self.loop.run_in_executor(
                    None,
                    configure_tun,
                    xcfg.tun,
                    xcfg.mtu,
                    xcfg.eid_addresses,
                    xcfg.overlay_routes,
                )
            except OSError as exc:
                raise NodeSetupError(f"TUN {xcfg.tun}: {exc.strerror or exc}") from None
            self.xtr = Xtr(config, self, kx, now, link_state=link_is_up)
            self.xtr.ctx.route_mtu = lambda local, rloc: route_mtu(rloc, DATA_PORT, local.interface)
            for local in self.xtr.locals:
                self.data_socks[local.key] = udp_socket(
                    local.address, DATA_PORT, local.interface, mtu_errors=True
                )
                self.control_socks[local.key] = udp_socket(
                    local.address, CONTROL_PORT, local.interface, mtu_errors=True
                )
            if use_fast:
                # Routes, keys and the policy are enforced inside the C engine from now on.
                engine = FastPath(
                    self.tun.fd,
                    xcfg.instance_id,
                    config.security.cipher_suite,
                    data_fd=lambda local: self.data_socks[local.key].fileno(),
                    plaintext=not config.security.encryption,
                    mss_clamp=xcfg.mss_clamp,
                    send_relayed=self.send_data,
                )
                self.xtr.attach_datapath(engine)
            self._add_reader(self.tun.fd, self._tun_readable)
            log.info("data plane: %s", "C (mesh._fastpath)" if use_fast else "Python")
            self._restore_mappings()
            for local in self.xtr.locals:
                data_sock = self.data_socks[local.key]
                control_sock = self.control_socks[local.key]
                self._add_reader(data_sock.fileno(), self._data_readable, data_sock)
                self._add_reader(control_sock.fileno(), self._control_readable, control_sock, local)
            if any(local.interface for local in self.xtr.locals):
                # Mobility: an uplink follows its interface's address (mesh.mobility).
                try:
                    self.address_watch = AddressWatch()
                except OSError as exc:
                    log.warning("cannot watch uplink addresses (no mobility): %s", exc)
                else:
                    self._add_reader(self.address_watch.fileno(), self._addresses_changed)
        if config.map_server is not None:
            msc = config.map_server
            core = MapServer(
                _sites(config), accept_unauthenticated_info=msc.accept_unauthenticated_info
            )
            self.map_server = MapServerService(core, self._ms_send)
            for address in msc.listen:
                if str(address) in self.control_socks and msc.port == CONTROL_PORT:
                    self.ms_socks.append(self.control_socks[str(address)])
                    continue
                sock = udp_socket(address, msc.port, None)
                self.ms_socks.append(sock)
                self._add_reader(sock.fileno(), self._control_readable, sock, None)
            await self.map_server.start()
        self.control_server = ControlServer(config.control_socket, self._control_command)
        await self.control_server.start()
        if self.address_watch is not None:
            self._follow_addresses()

    def _use_fast_path(self) -> bool:
        config = self.config
        if config.dataplane == "python":
            return False
        if not fastpath.available():
            if config.dataplane == "c":
                raise NodeSetupError(
                    "dataplane: c, but the C data path is not built (needs gcc and libssl-dev; "
                    "reinstall the package)"
                )
            log.warning("the C data path is not built: using the slower Python data path")
            return False
        mtu = config.xtr.mtu if config.xtr is not None else 0
        if mtu > fastpath.MAX_INNER_PACKET:
            why = (
                f"xtr.mtu {mtu} is more than the C data path's largest inner packet "
                f"({fastpath.MAX_INNER_PACKET} bytes)"
            )
            if config.dataplane == "c":
                raise NodeSetupError(f"{why}: lower the MTU or use dataplane: python")
            log.warning("%s: using the slower Python data path", why)
            return False
        return True

    def _load_identity(self) -> KxAuthority | None:
        config = self.config
        if not config.security.encryption:
            log.warning("encryption is OFF (security.encryption: false): traffic is plaintext")
            return None
        if not config.security.authenticate_key_exchange:
            log.warning(
                "key exchange is NOT authenticated (interop mode): an on-path attacker can "
                "intercept traffic"
            )
            return None
        identity = config.identity
        assert identity is not None
        try:
            return KxAuthority.from_files(
                config.name,
                str(identity.key),
                str(identity.cert),
                str(identity.ca),
                identity.private_key,
            )
        except OSError as exc:
            raise NodeSetupError(f"identity: cannot read {exc.filename}: {exc.strerror}") from None
        except Exception as exc:
            raise NodeSetupError(f"identity: {exc}") from None

    def _add_reader(self, fd: int, callback: Callable[..., None], *args: Any) -> None:
        assert self.loop is not None
        self.loop.add_reader(fd, callback, *args)
        self._readers.append(fd)

    async def _teardown(self) -> None:
        self._save_mappings()
        if self.loop is not None:
            for fd in self._readers:
                self.loop.remove_reader(fd)
        self._readers.clear()
        if self.map_server is not None:
            await self.map_server.stop()
        for sock in {
            id(s): s
            for s in [*self.data_socks.values(), *self.control_socks.values(), *self.ms_socks]
        }.values():
            sock.close()
        if self.address_watch is not None:
            self.address_watch.close()
        if self.tun is not None:
            self.tun.close()  # the kernel removes the device and its routes with it
        if self.control_server is not None:
            await self.control_server.stop()

    # ---------------------------------------------------------------- live reconfiguration

    def reconfigure(self, config: NodeConfig) -> None:
        """Apply a new config to the running node without a restart (map-servers, keys, timers,
        EIDs, overlay routes, sites, rekey limits). Changes that need new sockets or a new TUN
        (roles, uplinks, TUN name, cipher suite) raise NodeSetupError: restart the node."""
        old = self.config
        if (old.xtr is None) != (config.xtr is None) or (old.map_server is None) != (
            config.map_server is None
        ):
            raise NodeSetupError("the node's roles changed: restart it to apply")
        if old.xtr is not None and config.xtr is not None:
            if old.xtr.rlocs != config.xtr.rlocs or old.xtr.tun != config.xtr.tun:
                raise NodeSetupError("uplinks or TUN changed: restart the node to apply")
            if old.security.cipher_suite != config.security.cipher_suite:
                raise NodeSetupError("the cipher suite changed: restart the node to apply")
        old_ms, new_ms = old.map_server, config.map_server
        if old_ms is not None and new_ms is not None and old_ms.listen != new_ms.listen:
            raise NodeSetupError("map-server listen addresses changed: restart to apply")
        kx = self._load_identity() if config.identity != old.identity else None
        self.config = config
        if self.xtr is not None and config.xtr is not None and old.xtr is not None:
            self.xtr.reconfigure(config, kx if config.identity != old.identity else self.xtr.kx)
            self._update_tun(old.xtr, config.xtr)
        if self.map_server is not None and config.map_server is not None:
            self.map_server.core.replace_sites(_sites(config), time.monotonic())
        log.info("node %s reconfigured", config.name)

    def reload_identity(self) -> None:
        """The key and certificate files were replaced (a renewal): key exchanges from now on
        are signed with the new pair; keys already agreed stay until their next rekey."""
        if self.xtr is not None and self.config.xtr is not None:
            self.xtr.reconfigure(self.config, self._load_identity())
            log.info("node %s: identity reloaded", self.config.name)

    def _update_tun(self, old: XtrConfig, new: XtrConfig) -> None:
        if (old.eid_addresses, old.overlay_routes, old.mtu) == (
            new.eid_addresses,
            new.overlay_routes,
            new.mtu,
        ):
            return
        gone_addresses = [a for a in old.eid_addresses if a not in new.eid_addresses]
        gone_routes = [r for r in old.overlay_routes if r not in new.overlay_routes]

        def apply() -> None:
            remove_from_tun(new.tun, gone_addresses, gone_routes)
            configure_tun(new.tun, new.mtu, new.eid_addresses, new.overlay_routes)

        assert self.loop is not None
        future = self.loop.run_in_executor(None, apply)
        future.add_done_callback(self._tun_updated)

    def _tun_updated(self, future: asyncio.Future[None]) -> None:
        error = future.exception()
        if error is not None:
            self.errors["tun-reconfigure"] += 1
            log.error("could not update the TUN device: %s", error)

    # ---------------------------------------------------------------- transport (for Xtr)

    def send_data(self, local: LocalRloc, packet: bytes, dest: tuple[str, int]) -> None:
        try:
            _send(self.data_socks[local.key], packet, dest)
        except OSError:
            self.errors["send-data"] += 1

    def send_control(self, local: LocalRloc, packet: bytes, dest: tuple[str, int]) -> None:
        try:
            _send(self.control_socks[local.key], packet, dest)
        except OSError as exc:
            if exc.errno in DESTINATION_ERRORS and self.xtr is not None:
                # The address came from a peer's message (an ITR-RLOC, a probed RLOC) and this
                # host has no route to it: a fact about that message, counted with the drops,
                # not a fault of this node.
                self.xtr.drops["control-destination-unreachable"] += 1
                log.debug("control send to %s failed: %s", dest, exc)
            else:
                self.errors["send-control"] += 1
                log.warning("control send to %s failed: %s", dest, exc)

    def write_inside(self, packet: bytes) -> None:
        assert self.tun is not None
        try:
            if self.tun.vnet_hdr:
                os.write(self.tun.fd, NO_VNET_FLAGS + packet)
            else:
                os.write(self.tun.fd, packet)
        except OSError:
            self.errors["tun-write"] += 1

    def _ms_reply(self, sock: socket.socket, packet: bytes, dest: tuple[str, int]) -> None:
        if sock.family == (socket.AF_INET6 if ":" in dest[0] else socket.AF_INET):
            sock.sendto(packet, dest)
        else:  # e.g. a Map-Request forwarded to an ETR of the other address family
            self._ms_send(packet, dest)

    def _ms_send(self, packet: bytes, dest: tuple[str, int]) -> None:
        version = 6 if ":" in dest[0] else 4
        for sock in self.ms_socks:
            if (sock.family == socket.AF_INET6) == (version == 6):
                try:
                    sock.sendto(packet, dest)
                except OSError:
                    self.errors["send-map-server"] += 1
                return
        self.errors["map-server-no-socket"] += 1

    # ---------------------------------------------------------------- readiness callbacks

    def _tun_readable(self) -> None:
        assert self.tun is not None and self.xtr is not None
        xtr = self.xtr
        try:
            packets = xtr.datapath.pump_inside(self.tun.fd, READ_BATCH)
        except OSError:
            self.errors["tun-read"] += 1
            return
        except Exception:
            self._internal_error("inside batch")
            return
        if not packets:
            return
        xtr.now = time.monotonic()
        for packet in packets:  # all of them (Python data path) or the engine's misses (C)
            try:
                xtr.inside_packet(packet)
            except Exception:
                self._internal_error("inside packet")

    def _mtu_errors(self, sock: socket.socket) -> None:
        """ICMP "too big" queued on an underlay socket: the path MTU to that RLOC (mesh.pmtu).
        One non-blocking read per readiness: the queue must be drained or poll keeps firing."""
        assert self.xtr is not None
        errors = read_mtu_errors(sock)
        if errors:
            self.xtr.now = time.monotonic()
            for rloc, mtu in errors:
                self.xtr.path_mtu_signal(rloc, mtu)

    def _data_readable(self, sock: socket.socket) -> None:
        assert self.xtr is not None
        xtr = self.xtr
        self._mtu_errors(sock)
        try:
            packets = xtr.datapath.pump_outside(sock, READ_BATCH)
        except OSError:
            self.errors["data-read"] += 1
            return
        except Exception:
            self._internal_error("outside batch")
            return
        if not packets:
            return
        xtr.now = time.monotonic()
        for packet, source in packets:
            try:
                xtr.outside_data(packet, source)
            except Exception:
                self._internal_error("outside packet")

    def _control_readable(self, sock: socket.socket, local: LocalRloc | None) -> None:
        if local is not None and self.xtr is not None:
            self._mtu_errors(sock)
        for _ in range(64):
            try:
                data, source = sock.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError:
                self.errors["control-read"] += 1
                return
            try:
                self._dispatch_control(data, (source[0], source[1]), local, sock)
            except Exception:
                self._internal_error("control packet")

    def _dispatch_control(
        self,
        data: bytes,
        source: tuple[str, int],
        local: LocalRloc | None,
        sock: socket.socket | None = None,
    ) -> None:
        msg_type = data[0] >> 4 if data else 0
        for_etr = msg_type == 8 and len(data) > 0 and bool(data[0] & TO_ETR_BIT)
        info_request = msg_type == 7 and not data[0] & 0x08  # R=0; an Info-Reply is an xTR's
        if self.map_server is not None and (
            msg_type == 3
            or info_request
            or (msg_type == 8 and not for_etr)
            or (msg_type == 1 and self.xtr is None)
        ):
            # Answer from the socket (so the address) the request came to.
            reply = None if sock is None else partial(self._ms_reply, sock)
            self.map_server.handle(data, source, reply)
            return
        xtr = self.xtr
        if xtr is None or local is None:
            self.errors["control-unexpected"] += 1
            return
        xtr.now = time.monotonic()
        try:
            message = decode_control(data)
            ecm = None
            raw = data
            if isinstance(message, EncapsulatedControl):
                ecm = message
                raw = ecm.message
                message = decode_control(raw)
        except DecodeError as exc:
            xtr.drops["malformed-control"] += 1
            log.debug("malformed control packet from %s: %s", source, exc)
            return
        xtr.control(message, raw, source, local, ecm)

    def _addresses_changed(self) -> None:
        assert self.address_watch is not None
        if self.address_watch.drain():
            try:
                self._follow_addresses()
                assert self.xtr is not None
                self.xtr.now = time.monotonic()
                self.xtr.routes_changed()
            except Exception:
                self._internal_error("address change")

    def _follow_addresses(self) -> None:
        """An uplink whose address left its interface moves to the address the interface has
        now (a DHCP renew, a new attach); while it has none, the uplink waits (its sends fail,
        counted). An uplink whose control socket is also the map-server's stays put: the
        map-server's listen addresses are configuration."""
        assert self.xtr is not None
        shared = {id(s) for s in self.ms_socks}
        for local in self.xtr.locals:
            if local.interface is None or id(self.control_socks[local.key]) in shared:
                continue
            present = interface_addresses(local.interface, local.address.version)
            if present and local.address not in present:
                self._rebind(local, present[0])

    def _rebind(self, local: LocalRloc, address: IpAddress) -> None:
        """Move uplink `local`'s sockets to `address`, then tell the xTR (mesh.mobility)."""
        assert self.xtr is not None and self.loop is not None
        try:
            data = udp_socket(address, DATA_PORT, local.interface, mtu_errors=True)
        except NodeSetupError as exc:
            self.errors["uplink-rebind"] += 1
            log.error("uplink %s moved to %s: %s", local.interface, address, exc)
            return
        try:
            control = udp_socket(address, CONTROL_PORT, local.interface, mtu_errors=True)
        except NodeSetupError as exc:
            data.close()
            self.errors["uplink-rebind"] += 1
            log.error("uplink %s moved to %s: %s", local.interface, address, exc)
            return
        old_data = self.data_socks.pop(local.key)
        old_control = self.control_socks.pop(local.key)
        self.data_socks[str(address)] = data
        self.control_socks[str(address)] = control
        for sock in (old_data, old_control):
            self.loop.remove_reader(sock.fileno())
            self._readers.remove(sock.fileno())
        self._add_reader(data.fileno(), self._data_readable, data)
        self._add_reader(control.fileno(), self._control_readable, control, local)
        self.xtr.now = time.monotonic()
        # The xTR takes the address and recomputes its paths (the C engine gets the new
        # socket) before the old ones close.
        self.xtr.readdress(local, address)
        old_data.close()
        old_control.close()

    def _internal_error(self, what: str) -> None:
        self.errors[f"internal-{what.replace(' ', '-')}"] += 1
        log.exception("internal error while handling one %s (dropped)", what)

    async def _ticker(self) -> None:
        """Run the xTR's timers when they are due (it says when), not on a fixed tick."""
        next_checkpoint = time.monotonic() + CHECKPOINT_SECONDS
        while True:
            now = time.monotonic()
            deadline = now + MAX_SLEEP
            if self.xtr is not None:
                try:
                    deadline = min(deadline, self.xtr.tick(now))
                except Exception:
                    self._internal_error("timer tick")
                if now >= next_checkpoint:
                    next_checkpoint = now + CHECKPOINT_SECONDS
                    self._save_mappings()
            await asyncio.sleep(max(MIN_SLEEP, deadline - time.monotonic()))

    # ---------------------------------------------------------------- mapping checkpoint

    @property
    def _mappings_file(self) -> Path:
        return self.config.state_dir / f"{self.config.name}.mappings.json"

    def _save_mappings(self) -> None:
        """Keep the learnt mappings on disk: a node restarted while the map-resolver is down
        probes its old peers directly and is back in the mesh (see Xtr.import_mappings)."""
        if self.xtr is None:
            return
        path = self._mappings_file
        text = json.dumps(self.xtr.export_mappings())
        if text == self._saved_mappings:
            return  # unchanged: an idle node does not rewrite its checkpoint
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.replace(tmp, path)
            self._saved_mappings = text
        except OSError as exc:
            self.errors["checkpoint-write"] += 1
            log.debug("cannot write %s: %s", path, exc)

    def _restore_mappings(self) -> None:
        assert self.xtr is not None
        path = self._mappings_file
        try:
            mappings = json.loads(path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring the mapping checkpoint %s: %s", path, exc)
            return
        if not isinstance(mappings, list):
            log.warning("ignoring the mapping checkpoint %s: not a list", path)
            return
        restored = self.xtr.import_mappings(mappings)
        if restored:
            log.info("restored %d mappings from %s; probing their RLOCs", restored, path)

    # ---------------------------------------------------------------- local control socket

    def _control_command(
        self, request: dict[str, Any]
    ) -> dict[str, Any] | Awaitable[dict[str, Any]]:
        command = request["command"]
        if command == "status":
            return self.status()
        if command == "map-cache":
            return {"map_cache": self.xtr.status()["map_cache"] if self.xtr else []}
        if command == "registrations":  # the map-server's, a page at a time (offset, limit)
            if self.map_server is None:
                return {"error": "this node is not a map-server"}
            return self.map_server.registrations_page(
                request.get("offset", 0), request.get("limit", 100)
            )
        if command in diagnostics.COMMANDS:
            return diagnostics.run(self.xtr, self.status, request)
        if command == "reload":
            return self.reload()
        if command == "stop":
            self.stop_event.set()
            return {"stopping": True}
        known = ", ".join(
            ["status", "map-cache", "registrations", *diagnostics.COMMANDS, "reload", "stop"]
        )
        return {"error": f"unknown command {command!r} (known: {known})"}

    def reload(self) -> dict[str, Any]:
        """Re-read the config file and apply it in place: how an edited file (a new network
        policy, say) takes effect without a restart."""
        try:
            config = load_config(self.config.source)
            self.reconfigure(config)
        except (ConfigError, NodeSetupError) as exc:
            return {"error": str(exc)}
        policy = config.policy
        return {"reloaded": True, "policy_version": policy.version if policy else None}

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": self.config.name,
            "pid": os.getpid(),
            "roles": self.roles(),
            "uptime": round(time.monotonic() - self.started, 1),
            "encryption": self.config.security.encryption,
            "authenticated_key_exchange": self.config.security.authenticate_key_exchange,
            "runtime_errors": dict(self.errors),
        }
        if self.xtr is not None:
            status["xtr"] = self.xtr.status()
        if self.map_server is not None:
            status["map_server"] = self.map_server.status()
        return status
