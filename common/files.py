"""Writing files a crash cannot leave half-written or with the wrong permissions."""

from __future__ import annotations

import os
from pathlib import Path


def write_file_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with exactly `mode` (a temp file created with it, then renamed), so a
    reader sees the old content or the new, never a torn one, and a key is never readable by
    others even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            fd = -1
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
