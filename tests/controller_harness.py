"""A real controller on 127.0.0.1 (gRPC over TLS, mutual TLS on its API port) in the test's
event loop, for the unit tests that talk to one over the network (no root)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import grpc

from controller_api.client import aio_channel, credentials
from controller_api.gen.lispmesh.v1 import admin_pb2, admin_pb2_grpc
from controller_api.server import Controller
from controller_api.settings import ControllerSettings
from node.enroll import enroll
from node.state import StateDir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    """`settings` override the test defaults (e.g. the TPM manufacturer CAs)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, state_dir: Path, **settings: Any) -> None:
        self.loop = loop
        self.state_dir = state_dir
        self.clock_offset = 0.0  # the controller's clock runs this far ahead of the real one
        port = free_port()
        self.controller = Controller(
            ControllerSettings(**{
                "state_dir": state_dir, "listen_host": "127.0.0.1", "listen_port": port,
                "api_port": free_port(), "map_server_port": 0, "config_cycle": 0.2,
                "cert_grace": 600.0, "cert_lifetime": 86400.0, **settings,
            }),
            clock=lambda: time.time() + self.clock_offset,
        )  # fmt: skip
        loop.run_until_complete(self.controller.start())

    def admin_creds(self) -> grpc.ChannelCredentials:
        d = self.state_dir
        return credentials(
            (d / "ca.crt").read_bytes(),
            (d / "admin.crt").read_bytes(),
            (d / "admin.key").read_bytes(),
        )

    def admin(
        self,
        rpc: str,
        request: Any,
        creds: grpc.ChannelCredentials | None = None,
        timeout: float = 5.0,
    ) -> Any:
        async def call() -> Any:
            async with aio_channel(self.controller.api_address, creds or self.admin_creds()) as ch:
                return await getattr(admin_pb2_grpc.AdminStub(ch), rpc)(request, timeout=timeout)

        return self.loop.run_until_complete(call())

    def token(self, uses: int = 1, ttl: float = 600, tags: tuple[str, ...] = ()) -> str:
        reply = self.admin(
            "CreateToken",
            admin_pb2.CreateTokenRequest(ttl_seconds=ttl, max_uses=uses, tags=list(tags)),
        )
        return str(reply.token_secret)

    def enroll(self, state: StateDir, token: str, **options: Any) -> Any:
        return self.loop.run_until_complete(
            asyncio.to_thread(enroll, state, self.controller.address, token, **options)
        )

    def stop(self) -> None:
        self.loop.run_until_complete(self.controller.stop())
