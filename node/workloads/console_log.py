"""Reading a workload's console log (`<name>/console.log`, written by runc's stdio or the VM's
serial console): its end, by bytes and lines, and following it as it grows, as `tail -F` does
(a file that shrinks was started over: read it from the top)."""

from __future__ import annotations

import os
from pathlib import Path

MAX_BYTES = 1 << 20  # --tail reads at most this much from the end


def tail(path: Path, lines: int | None = None, max_bytes: int = MAX_BYTES) -> tuple[str, int]:
    """(the last `lines` lines (None: all) within the last `max_bytes`, the offset read up to)."""
    try:
        with path.open("rb") as log:
            end = log.seek(0, os.SEEK_END)
            start = max(0, end - max_bytes)
            log.seek(start)
            data = log.read(end - start)
    except FileNotFoundError:
        return "", 0
    if start > 0:  # cut inside a line: drop the partial one
        cut = data.find(b"\n")
        data = data[cut + 1 :] if cut >= 0 else b""
    if lines is not None:
        kept = data.splitlines(keepends=True)[-lines:] if lines > 0 else []
        data = b"".join(kept)
    return data.decode(errors="replace"), end


class Follower:
    """What is appended to `path` after `offset`, read when asked (`read` never blocks)."""

    def __init__(self, path: Path, offset: int, chunk: int = 65536) -> None:
        self.path = path
        self.offset = offset
        self.chunk = chunk

    def read(self) -> str:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return ""
        if size < self.offset:
            self.offset = 0  # started over (the workload was re-created)
        if size == self.offset:
            return ""
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read(min(size - self.offset, self.chunk))
        # Up to the last full line, so a line written in two parts is not cut by a prefix.
        cut = data.rfind(b"\n")
        if cut >= 0 and len(data) < self.chunk:
            data = data[: cut + 1]
        self.offset += len(data)
        return data.decode(errors="replace")
