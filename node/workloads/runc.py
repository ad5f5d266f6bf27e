"""Containers with runc: the `Runtime` for container images.

Per workload, under the state dir:
    <name>/rootfs          the unpacked image (layers.py), rebuilt when the image changes
    <name>/image           the manifest digest the rootfs was built from
    <name>/config.json     the runtime spec (oci_spec.py); the directory is runc's bundle
    <name>/attachment.json how it is attached (so delete can detach after an agent restart)
    <name>/console.log     the container's stdout and stderr
runc's own state lives in `runc_root` (tmpfs: a reboot forgets containers that died with it),
so a restarted agent finds its running containers with `runc list` and adopts them. Container
ids and network namespaces are `<prefix><name>`.

A container is started with `runc run --keep` in the foreground under a detached shell of its
own session: runc waits for the container and its exit status lands in `<name>/exit` (what
`status` reports as the exit code); the container keeps the log file as its stdio, and nothing
ties it to the agent's process.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict
from ipaddress import ip_address
from pathlib import Path
from typing import Any, ClassVar

from node.workloads import netattach
from node.workloads.errors import WorkloadError
from node.workloads.layers import unpack
from node.workloads.oci_spec import runtime_spec
from node.workloads.oci_store import BlobStore
from node.workloads.runtime import Attachment, RuntimeStatus, Stats, Workload

DEFAULT_RUNC_ROOT = Path("/run/lispmesh/runc")
POLL = 0.05


class RuncRuntime:
    kind: ClassVar[str] = "container"

    def __init__(
        self,
        state_dir: Path,
        runc_root: Path = DEFAULT_RUNC_ROOT,
        prefix: str = "lm-",
        node_netns: str | None = None,
        runc: str = "runc",
    ) -> None:
        self.state_dir = state_dir
        self.runc_root = runc_root
        self.prefix = prefix
        self.node_netns = node_netns  # where the host ends of the veths go (None: ours)
        self.runc = runc

    def _id(self, name: str) -> str:
        return self.prefix + name

    def _dir(self, name: str) -> Path:
        return self.state_dir / name

    def _runc(self, *args: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
        cmd = [self.runc, "--root", str(self.runc_root), *args]
        kw.setdefault("capture_output", True)
        result = subprocess.run(cmd, text=True, timeout=60, **kw)
        if check and result.returncode != 0:
            raise WorkloadError(f"runc {args[0]} {args[-1]}: {_last_line(result.stderr)}")
        return result

    # -- Runtime -----------------------------------------------------------------------------

    def prepare(self, store: BlobStore, workload: Workload) -> None:
        directory = self._dir(workload.name)
        rootfs, marker = directory / "rootfs", directory / "image"
        if marker.is_file() and marker.read_text() == workload.image.manifest_digest:
            return
        directory.mkdir(parents=True, exist_ok=True)
        marker.unlink(missing_ok=True)
        if rootfs.exists():
            shutil.rmtree(rootfs)
        unpack(store, workload.image, rootfs, max_bytes=workload.spec.resources.disk)
        marker.write_text(workload.image.manifest_digest)

    def define(self, workload: Workload) -> None:
        directory = self._dir(workload.name)
        if not (directory / "image").is_file():
            raise WorkloadError(f"{workload.name}: not prepared (no rootfs)")
        netns = None
        if workload.attachment is not None:
            cid = self._id(workload.name)
            netattach.attach(workload.attachment, cid, self.node_netns)
            netns = netattach.netns_path(workload.attachment, cid)
            _write(directory / "attachment.json", json.dumps(asdict(workload.attachment),
                                                             default=str))  # fmt: skip
        spec = runtime_spec(workload, directory / "rootfs", netns)
        spec["linux"]["cgroupsPath"] = f"/lispmesh/{self._id(workload.name)}"
        _write(directory / "config.json", json.dumps(spec, indent=1))

    def start(self, name: str) -> None:
        state = self.status(name).state
        if state == "running":
            return
        if state == "absent":
            raise WorkloadError(f"{name}: not defined")
        self._runc("delete", "--force", self._id(name), check=False)
        self.runc_root.mkdir(parents=True, exist_ok=True)
        directory = self._dir(name)
        exit_file, pid_file = directory / "exit", directory / "pid"
        exit_file.unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)
        # `runc run --keep` in the foreground, under a shell of its own session that outlives
        # the agent (the outer shell returns at once): runc waits for the container and exits
        # with its status (128 + signal if killed), which the shell writes to `exit`, all under
        # the lock `shim` (held: the exit status is not written yet). The container keeps
        # runc's stdio, the log (a pipe would die with the agent).
        argv = [self.runc, "--root", str(self.runc_root), "run", "--keep", "--bundle",
                str(directory), "--pid-file", str(pid_file), self._id(name)]  # fmt: skip
        inner = '"$@" </dev/null >>"$LOG" 2>&1; echo $? >"$EXIT.tmp"; mv "$EXIT.tmp" "$EXIT"'
        env = {**os.environ, "LOG": str(directory / "console.log"), "EXIT": str(exit_file),
               "SHIM": str(directory / "shim"), "INNER": inner}  # fmt: skip
        subprocess.run(["sh", "-c", 'flock "$SHIM" sh -c "$INNER" sh "$@" &', "sh", *argv],
                       env=env, check=True, timeout=60, start_new_session=True,
                       stdin=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.status(name).state in ("running", "paused"):
                return
            if exit_file.is_file():
                break  # runc failed, or the container was over already
            time.sleep(POLL)
        if pid_file.is_file():
            return  # it ran (and is over already): the lifecycle sees it stopped, and how
        raise WorkloadError(f"{name}: runc run: {_last_line(self.logs(name, 4096))}")

    def stop(self, name: str, timeout: float) -> None:
        if self.status(name).state != "running":
            return
        self._runc("kill", self._id(name), "TERM", check=False)
        if not self._wait_stopped(name, timeout):
            self.destroy(name)

    def destroy(self, name: str) -> None:
        if self.status(name).state not in ("running", "paused", "created"):
            return
        self._runc("kill", "--all", self._id(name), "KILL", check=False)
        if not self._wait_stopped(name, 10):
            raise WorkloadError(f"{name}: still running 10 s after SIGKILL")

    def delete(self, name: str) -> None:
        self._runc("delete", "--force", self._id(name), check=False)
        directory = self._dir(name)
        attachment = _read_attachment(directory / "attachment.json")
        if attachment is not None:
            netattach.detach(attachment, self._id(name), self.node_netns)
        if directory.exists():
            shutil.rmtree(directory)

    def status(self, name: str) -> RuntimeStatus:
        result = self._runc("state", self._id(name), check=False)
        if result.returncode == 0:
            doc = json.loads(result.stdout)
            state = str(doc.get("status", "unknown"))
            pid = int(doc.get("pid") or 0) or None
            if state == "stopped":
                if self._shim_alive(name):
                    return RuntimeStatus("running", pid, detail="exiting")  # status on its way
                return RuntimeStatus(state, pid, self._exit_code(name))
            return RuntimeStatus("stopped" if state == "created" else state, pid)
        if (self._dir(name) / "config.json").is_file():
            return RuntimeStatus("stopped", detail="defined, not created")
        return RuntimeStatus("absent")

    def _shim_alive(self, name: str) -> bool:
        try:
            with (self._dir(name) / "shim").open("rb") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(lock, fcntl.LOCK_UN)
        except FileNotFoundError:
            pass
        return False

    def _exit_code(self, name: str) -> int | None:
        try:
            return int((self._dir(name) / "exit").read_text().strip())
        except (OSError, ValueError):
            return None  # not written (yet): the shell was killed, or runc is finishing

    def stats(self, name: str) -> Stats:
        result = self._runc("events", "--stats", self._id(name))
        data = json.loads(result.stdout).get("data", {})
        return Stats(
            memory_bytes=int(data.get("memory", {}).get("usage", {}).get("usage", 0)),
            cpu_seconds=int(data.get("cpu", {}).get("usage", {}).get("total", 0)) / 1e9,
            pids=int(data.get("pids", {}).get("current", 0)),
        )

    def log_path(self, name: str) -> Path:
        return self._dir(name) / "console.log"

    def logs(self, name: str, max_bytes: int = 65536) -> str:
        path = self.log_path(name)
        try:
            with path.open("rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - max_bytes))
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def names(self) -> list[str]:
        found = set()
        result = self._runc("list", "--format", "json", check=False)
        if result.returncode == 0 and result.stdout.strip() not in ("", "null"):
            for doc in json.loads(result.stdout):
                if str(doc.get("id", "")).startswith(self.prefix):
                    found.add(str(doc["id"])[len(self.prefix) :])
        if self.state_dir.is_dir():
            found.update(p.parent.name for p in self.state_dir.glob("*/config.json"))
        return sorted(found)

    # -- helpers -----------------------------------------------------------------------------

    def _wait_stopped(self, name: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status(name).state not in ("running", "paused"):
                return True
            time.sleep(POLL)
        return self.status(name).state not in ("running", "paused")


def _read_attachment(path: Path) -> Attachment | None:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    for key in ("eid4", "eid6"):
        doc[key] = ip_address(doc[key]) if doc.get(key) else None
    return Attachment(**doc)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "failed"
