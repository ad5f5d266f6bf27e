"""Long-running processes started in lab namespaces, and how to stop only those.

A pid alone is not an identity (pids are recycled), so every record keeps the process start time
from /proc/<pid>/stat; a pid is only signalled while its start time still matches.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from netlab import netns

# Popen objects of children started by this interpreter, so they can be reaped (no zombies when
# the Python API deploys and destroys in the same process).
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass
class ProcRecord:
    node: str
    pid: int
    starttime: int
    cmd: str
    log_dir: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def starttime(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot, None if it does not exist or is a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_alive(rec: ProcRecord) -> bool:
    _reap(rec.pid)
    return starttime(rec.pid) == rec.starttime


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)


def start(
    ns: str | None, node: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path
) -> tuple[ProcRecord, subprocess.Popen[bytes]]:
    """Start `argv` in namespace `ns`, detached (own session), logging to log_dir/*.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "stdout.log", "ab") as out, open(log_dir / "stderr.log", "ab") as err:
        # `ip netns exec` execs the command, so the pid we record is the command's own pid.
        child = subprocess.Popen(
            netns.ns_argv(ns, argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env={**os.environ, **env},
            start_new_session=True,
            cwd=str(log_dir),
        )
    _children[child.pid] = child
    st = starttime(child.pid)
    rec = ProcRecord(
        node=node, pid=child.pid, starttime=st or 0, cmd=" ".join(argv), log_dir=str(log_dir)
    )
    return rec, child


def stop(rec: ProcRecord, timeout: float = 3.0) -> None:
    """SIGTERM the process (and its session), wait up to `timeout`, then SIGKILL."""
    if not is_alive(rec):
        return
    _signal(rec.pid, signal.SIGTERM)
    if not _wait_gone(rec, timeout):
        _signal(rec.pid, signal.SIGKILL)
        _wait_gone(rec, 2.0)


def _signal(pid: int, sig: int) -> None:
    try:
        # start_new_session made the process a group leader: signal its whole group so shell
        # wrappers do not leave their children behind.
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(rec: ProcRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(rec):
            return True
        time.sleep(0.02)
    return not is_alive(rec)


def kill_pids(pids: Sequence[int], timeout: float = 2.0) -> None:
    """Stop processes found inside one of our namespaces (started by exec commands, say)."""
    recs = []
    for pid in pids:
        st = starttime(pid)
        if st is not None:
            recs.append(ProcRecord(node="", pid=pid, starttime=st, cmd="", log_dir=""))
    for r in recs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(r.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(is_alive(r) for r in recs):
        time.sleep(0.02)
    for r in recs:
        if is_alive(r):
            with contextlib.suppress(ProcessLookupError):
                os.kill(r.pid, signal.SIGKILL)
    for r in recs:
        _wait_gone(r, 1.0)
