"""The node's local control socket: one JSON request line in, one JSON reply line out.

`lispmesh node status` and the other operator commands talk to a running node through it.
The socket is created 0600 in the run directory: only root (the node's owner) may query.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from common.errors import LispmeshError

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]] | dict[str, Any]]
MAX_REQUEST = 64 * 1024


class ControlError(LispmeshError):
    """The node could not be reached or answered with an error (one line for the user)."""


class ControlServer:
    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old_umask)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            reply = await self._answer(line)
            writer.write(json.dumps(reply, default=str).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        if len(line) > MAX_REQUEST:
            return {"error": "request too long"}
        try:
            request = json.loads(line)
        except ValueError:
            return {"error": "request is not JSON"}
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return {"error": "request needs a 'command' string"}
        try:
            result = self.handler(request)
            if asyncio.iscoroutine(result):
                result = await result
            return result  # type: ignore[return-value]
        except Exception as exc:  # the control socket must never take the node down
            return {"error": f"{type(exc).__name__}: {exc}"}


def query(path: Path, command: str, timeout: float = 5.0, **arguments: Any) -> dict[str, Any]:
    """Send one command to a running node and return its reply (ControlError on failure)."""
    request = json.dumps({"command": command, **arguments}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(request)
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except FileNotFoundError:
        raise ControlError(f"no node is running (no control socket at {path})") from None
    except ConnectionRefusedError:
        raise ControlError(f"the node at {path} is not answering (stale socket?)") from None
    except TimeoutError:
        raise ControlError(f"the node at {path} did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise ControlError(f"cannot talk to the node at {path}: {exc.strerror}") from None
    try:
        reply = json.loads(b"".join(chunks))
    except ValueError:
        raise ControlError(f"the node at {path} sent a reply that is not JSON") from None
    if not isinstance(reply, dict):
        raise ControlError(f"the node at {path} sent an unexpected reply")
    if "error" in reply:
        raise ControlError(f"the node refused '{command}': {reply['error']}")
    return reply
