"""The lab state file and the registry of deployed labs.

Deploy records every object *before* creating it (namespaces, host-side interfaces) and every
process right after starting it, rewriting `clab-<lab>/netlab-state.json` atomically each time.
So destroy can always clean up, even after a deploy that died half-way (crash, Ctrl-C, failure).
The registry (/run/netlab/labs/<lab>.json) maps lab names to lab directories for
`inspect --all` / `destroy --all`; /run is a tmpfs, like the namespaces themselves.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from netlab.procs import ProcRecord

STATE_FILE = "netlab-state.json"
REGISTRY_DIR = Path(os.environ.get("NETLAB_REGISTRY", "/run/netlab"))


def _atomic_write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


class LabState:
    """What a deploy created, persisted after every change. Thread-safe."""

    def __init__(self, labdir: Path, data: dict[str, Any]) -> None:
        self.labdir = labdir
        self.data = data
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.labdir / STATE_FILE

    @classmethod
    def new(cls, labdir: Path, lab: str, topology: Path, prefix: str, digest: str) -> LabState:
        labdir.mkdir(parents=True, exist_ok=True)
        st = cls(
            labdir,
            {
                "lab": lab,
                "topology": str(topology),
                "prefix": prefix,
                "digest": digest,
                "status": "deploying",
                "created": time.time(),
                "namespaces": [],
                "host_links": [],
                "processes": [],
                "dirs": [],
            },
        )
        st.save()
        return st

    @classmethod
    def load(cls, labdir: Path) -> LabState | None:
        try:
            data = json.loads((labdir / STATE_FILE).read_text())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError):
            return None
        return cls(labdir, data)

    def save(self) -> None:
        _atomic_write(self.path, self.data)

    def _append(self, key: str, value: Any) -> None:
        with self._lock:
            self.data[key].append(value)
            self.save()

    def add_namespace(self, name: str) -> None:
        self._append("namespaces", name)

    def add_host_link(self, ifname: str) -> None:
        self._append("host_links", ifname)

    def add_process(self, rec: ProcRecord) -> None:
        self._append("processes", rec.to_dict())

    def add_dir(self, path: Path) -> None:
        """A directory inside the lab dir that destroy removes (node state dirs)."""
        with self._lock:
            dirs = self.data.setdefault("dirs", [])
            if str(path) not in dirs:
                dirs.append(str(path))
                self.save()

    def set_status(self, status: str) -> None:
        with self._lock:
            self.data["status"] = status
            self.save()

    @property
    def status(self) -> str:
        return str(self.data.get("status", ""))

    @property
    def namespaces(self) -> list[str]:
        return list(self.data.get("namespaces", []))

    @property
    def host_links(self) -> list[str]:
        return list(self.data.get("host_links", []))

    @property
    def dirs(self) -> list[Path]:
        return [Path(d) for d in self.data.get("dirs", [])]

    @property
    def processes(self) -> list[ProcRecord]:
        return [ProcRecord(**p) for p in self.data.get("processes", [])]

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


# --- registry -------------------------------------------------------------------------------


def _labs_dir() -> Path:
    d = REGISTRY_DIR / "labs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def register(lab: str, labdir: Path, topology: Path) -> None:
    _atomic_write(
        _labs_dir() / f"{lab}.json", {"lab": lab, "labdir": str(labdir), "topology": str(topology)}
    )


def unregister(lab: str, labdir: Path) -> None:
    entry = lookup(lab)
    if entry is not None and Path(entry["labdir"]) == labdir:
        (_labs_dir() / f"{lab}.json").unlink(missing_ok=True)


def lookup(lab: str) -> dict[str, str] | None:
    try:
        data: dict[str, str] = json.loads((_labs_dir() / f"{lab}.json").read_text())
        return data
    except (OSError, ValueError):
        return None


def all_labs() -> list[dict[str, str]]:
    out = []
    for p in sorted(_labs_dir().glob("*.json")):
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return out


@contextmanager
def lab_lock(lab: str) -> Iterator[None]:
    """Serialise deploy/destroy of one lab name across processes."""
    d = REGISTRY_DIR / "locks"
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f"{lab}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
