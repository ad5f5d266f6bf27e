"""A bounded TCP transfer for overlay tests: `serve PORT` or `send HOST PORT BYTES [MARKER
[RATE]]` (RATE: bytes per second, to keep one connection open across an event).

The server accepts one connection, reads to EOF and prints `<bytes> <sha256>`; the client sends
BYTES of deterministic data (with MARKER repeated through it, if given) and prints the same
line, so the test compares both ends. Every socket operation has a timeout.
"""

from __future__ import annotations

import hashlib
import socket
import sys
import time

TIMEOUT = 20.0


def payload(size: int, marker: bytes) -> bytes:
    block = (marker or b"lispmesh") + bytes(range(256))
    return (block * (size // len(block) + 1))[:size]


def serve(port: int) -> None:
    server = socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True)
    server.settimeout(TIMEOUT)
    print("ready", flush=True)
    conn, _ = server.accept()
    conn.settimeout(TIMEOUT)
    digest, total = hashlib.sha256(), 0
    while chunk := conn.recv(65536):
        digest.update(chunk)
        total += len(chunk)
    print(total, digest.hexdigest(), flush=True)


def send(host: str, port: int, size: int, marker: bytes, rate: int = 0) -> None:
    data = payload(size, marker)
    with socket.create_connection((host, port), timeout=TIMEOUT) as conn:
        if rate:
            chunk = max(1, rate // 20)
            for offset in range(0, size, chunk):
                conn.sendall(data[offset : offset + chunk])
                time.sleep(chunk / rate)
        else:
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)  # wait for the server to close: everything was read
    print(len(data), hashlib.sha256(data).hexdigest(), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        marker = sys.argv[5].encode() if len(sys.argv) > 5 else b""
        rate = int(sys.argv[6]) if len(sys.argv) > 6 else 0
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), marker, rate)
