"""The node's workloads: what should run, driven through their lifecycles by the runtimes.

State directory (default /var/lib/lispmesh/workloads):
    store/               the content-addressed blob store (oci_store.py)
    records/<name>.json  per workload: the image (index entry), attachment, restart policy and
                         the lifecycle checkpoint; written after every step (atomically)
    containers/, vms/    the runtimes' own files
    lock                 held (flock) by whoever is changing the records
Workloads outlive whoever drives them: a new `Supervisor` on the same state dir restores every
record and re-adopts from what the runtime reports (a running container stays untouched, a dead
one is restarted with backoff). `step()` is the supervision loop's body: observe each workload's
runtime state, let its lifecycle react (restarts after backoff), do the actions, save.
"""

from __future__ import annotations

import builtins
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from common.errors import LispmeshError
from common.workload_model import Port
from node.workloads.admission import Capacity, admit, host_capacity
from node.workloads.errors import WorkloadError
from node.workloads.lifecycle import Action, Desired, Lifecycle, Restart, State
from node.workloads.oci_image import image_from, load_image
from node.workloads.oci_store import BlobStore, Descriptor
from node.workloads.package import WorkloadSpec, workload_spec
from node.workloads.runtime import Attachment, Runtime, Workload

log = logging.getLogger(__name__)
DEFAULT_STATE_DIR = Path("/var/lib/lispmesh/workloads")
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}\Z")
MAX_ACTIONS_PER_STEP = 12  # a bound on one step's work for one workload


@dataclass
class _Entry:
    workload: Workload
    machine: Lifecycle
    # Placed by the controller (node/workloads/managed.py): app, replica, version, digest and
    # the spec's overrides of the image's annotations. None: run by hand (`lispmesh app run`).
    managed: dict[str, Any] | None = None


class Supervisor:
    def __init__(
        self,
        state_dir: Path,
        runtimes: Mapping[str, Callable[[], Runtime]],
        capacity: Capacity | None = None,
        stop_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state_dir = state_dir
        self.records = state_dir / "records"
        self.records.mkdir(parents=True, exist_ok=True)
        self.store = BlobStore(state_dir / "store")
        self._factories = runtimes  # made on first use: no libvirtd needed for containers only
        self._runtimes: dict[str, Runtime] = {}
        self._capacity = capacity
        self.stop_timeout = stop_timeout
        self.clock = clock
        self.entries: dict[str, _Entry] = {}

    # -- records -----------------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the state dir's lock and work on fresh records (another process may change them)."""
        with (self.state_dir / "lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self.load()
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def load(self) -> None:
        now = self.clock()
        fresh: dict[str, _Entry] = {}
        for path in sorted(self.records.glob("*.json")):
            try:
                fresh[path.stem] = self._restore(json.loads(path.read_text()), now)
            except (LispmeshError, ValueError, KeyError, TypeError) as exc:
                log.error("workload record %s unreadable: %s", path, exc)
        self.entries = fresh

    def _restore(self, doc: dict[str, Any], now: float) -> _Entry:
        chosen = Descriptor.parse(doc["image"], doc["source"])
        image = image_from(self.store, chosen, doc["source"])
        attachment = None
        if doc.get("attachment"):
            fields = dict(doc["attachment"])
            for key in ("eid4", "eid6"):
                fields[key] = ip_address(fields[key]) if fields.get(key) else None
            attachment = Attachment(**fields)
        managed = doc.get("managed")
        spec = with_overrides(workload_spec(image), managed)
        workload = Workload(doc["name"], image, spec, attachment)
        return _Entry(workload, Lifecycle.restore(doc["lifecycle"], now), managed)

    def _save(self, entry: _Entry) -> None:
        workload = entry.workload
        name = workload.name
        path = self.records / f"{name}.json"
        if entry.machine.state == State.DELETED:
            path.unlink(missing_ok=True)
            self.entries.pop(name, None)
            return
        assert workload.image.chosen is not None  # every image here came from a layout index
        doc = {
            "name": name,
            "source": workload.image.source,
            "image": workload.image.chosen.doc(),
            "attachment": asdict(workload.attachment) if workload.attachment else None,
            "lifecycle": entry.machine.checkpoint(),
            "managed": entry.managed,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        os.replace(tmp, path)

    def runtime(self, kind: str) -> Runtime:
        if kind not in self._runtimes:
            if kind not in self._factories:
                raise WorkloadError(f"this node has no runtime for {kind} workloads")
            self._runtimes[kind] = self._factories[kind]()
        return self._runtimes[kind]

    def entry(self, name: str) -> _Entry:
        try:
            return self.entries[name]
        except KeyError:
            raise WorkloadError(f"no workload named {name!r} on this node") from None

    # -- verbs -------------------------------------------------------------------------------

    def run(
        self,
        source: Path,
        name: str | None = None,
        ref: str | None = None,
        attachment: Attachment | None = None,
        restart: Restart = Restart.ALWAYS,
        managed: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Import `source` (a layout dir or tarball), admit it, and drive it to running.
        `managed`: placed by the controller; its `digest` must be the image's (the index entry
        or the manifest), and its resources, env, ports and labels override the annotations."""
        layout = self.store.import_layout(source)
        digest = (managed or {}).get("digest")
        if digest:
            chosen = [d for d in layout.manifests if d.digest == digest]
            image = (
                image_from(self.store, chosen[0], layout.source)
                if chosen
                else load_image(self.store, layout, ref)
            )
            if not chosen and image.manifest_digest != digest:
                raise WorkloadError(
                    f"{source}: holds image {image.manifest_digest}, not {digest} as pinned"
                )
        else:
            image = load_image(self.store, layout, ref)
        spec = with_overrides(workload_spec(image), managed)
        if not name:
            name = image.ref if image.ref not in ("", "latest") else source.name.split(".")[0]
        if not NAME.match(name):
            raise WorkloadError(f"workload name {name!r}: use a-z, 0-9 and '-', at most 40")
        if name in self.entries:
            raise WorkloadError(f"a workload named {name!r} exists already (rm it first)")
        running = [e.workload.spec for e in self.entries.values()
                   if e.machine.desired == Desired.RUNNING]  # fmt: skip
        reason = admit(self.capacity(), running, spec)
        if reason:
            raise WorkloadError(f"{name}: refused by admission control: {reason}")
        self.runtime(spec.kind)  # fail now if there is no runtime for it
        machine = Lifecycle(name, restart=restart)
        entry = _Entry(Workload(name, image, spec, attachment), machine, managed)
        self.entries[name] = entry
        self._drive(entry, machine.want(Desired.RUNNING, self.clock()))
        return self.describe(name)

    def want(self, name: str, desired: Desired) -> dict[str, Any]:
        entry = self.entry(name)
        self._drive(entry, entry.machine.want(desired, self.clock()))
        return self.describe(name) if name in self.entries else {"name": name, "state": "DELETED"}

    def purge(self, name: str) -> dict[str, Any]:
        """Rebuild from the image (EVE's purge): out of the runtime, verified again, started."""
        entry = self.entry(name)
        self._drive(entry, entry.machine.purge(self.clock()))
        return self.describe(name)

    def step(self) -> None:
        for name in sorted(self.entries):
            entry = self.entries[name]
            now = self.clock()
            actions: list[Action] = []
            if entry.machine.state not in (State.INITIAL, State.FAILED, State.DELETED):
                code = None
                try:
                    status = self.runtime(entry.workload.spec.kind).status(name)
                    observed, code = status.state, status.exit_code
                except LispmeshError as exc:
                    log.warning("workload %s: status: %s", name, exc)
                    observed = ""
                if observed:
                    observed = "running" if observed in ("running", "paused") else observed
                    actions = entry.machine.observed(observed, now, code)
            actions += entry.machine.tick(now) if not actions else []
            self._drive(entry, actions)

    def _drive(self, entry: _Entry, actions: list[Action]) -> None:
        runtime = self.runtime(entry.workload.spec.kind)
        for _ in range(MAX_ACTIONS_PER_STEP):
            if not actions:
                break
            (action,) = actions
            try:
                self._perform(runtime, entry.workload, action)
            except (LispmeshError, OSError) as exc:
                log.warning("workload %s: %s failed: %s", entry.workload.name, action, exc)
                actions = entry.machine.failed(action, str(exc), self.clock())
            else:
                actions = entry.machine.done(action, self.clock())
        self._save(entry)

    def _perform(self, runtime: Runtime, workload: Workload, action: Action) -> None:
        name = workload.name
        if action == Action.VERIFY:
            runtime.prepare(self.store, workload)
        elif action == Action.INSTALL:
            runtime.define(workload)
        elif action == Action.START:
            runtime.start(name)
        elif action == Action.STOP:
            runtime.stop(name, self.stop_timeout)
        elif action == Action.DESTROY:
            runtime.destroy(name)
        elif action == Action.DELETE:
            runtime.delete(name)

    # -- reports -----------------------------------------------------------------------------

    def capacity(self) -> Capacity:
        return self._capacity or host_capacity(self.state_dir)

    def describe(self, name: str, detail: bool = False) -> dict[str, Any]:
        entry = self.entry(name)
        workload, spec = entry.workload, entry.workload.spec
        doc = {
            **entry.machine.status(),
            "kind": spec.kind,
            "image": f"{workload.image.source}:{workload.image.ref}".rstrip(":"),
            "digest": workload.image.manifest_digest,
            "eids": [str(a) for a in (workload.attachment.eid4, workload.attachment.eid6) if a]
            if workload.attachment else [],
            "labels": spec.labels,
            # Said for every container: an opted-out one must not pass for a confined one.
            **({"seccomp": spec.seccomp} if spec.kind == "container" else {}),
            **({"managed": entry.managed} if entry.managed else {}),
        }  # fmt: skip
        if detail:
            runtime = self.runtime(spec.kind)
            status = runtime.status(name)
            doc["runtime"] = {"state": status.state, "pid": status.pid, "detail": status.detail}
            doc["resources"] = asdict(spec.resources)
            doc["ports"] = [str(p) for p in spec.ports]
            doc["args"] = list(spec.args)
            if status.state == "running":
                with_stats = runtime.stats(name)
                doc["usage"] = asdict(with_stats)
        return doc

    def list(self) -> list[dict[str, Any]]:
        return [self.describe(name) for name in sorted(self.entries)]

    def logs(self, name: str, max_bytes: int = 65536) -> str:
        entry = self.entry(name)
        return self.runtime(entry.workload.spec.kind).logs(name, max_bytes)

    def log_paths(self, name: str) -> builtins.list[tuple[str, Path]]:  # (list: a method)
        """(workload, its console log) for `name`: that workload, or else every replica of the
        app `name` that this node runs (`<app>-<replica>`, placed by the controller)."""
        if name in self.entries:
            entry = self.entries[name]
            return [(name, self.runtime(entry.workload.spec.kind).log_path(name))]
        replicas = sorted(n for n, e in self.entries.items()
                          if e.managed and e.managed.get("app") == name)  # fmt: skip
        if not replicas:
            raise WorkloadError(f"no workload named {name!r} on this node (nor replicas of an app "
                                "so named)")  # fmt: skip
        return [(n, self.runtime(self.entries[n].workload.spec.kind).log_path(n))
                for n in replicas]  # fmt: skip


def with_overrides(spec: WorkloadSpec, managed: dict[str, Any] | None) -> WorkloadSpec:
    """The image's spec with what the controller's app spec says instead (resources, env over
    the image's Env, ports, labels)."""
    if not managed:
        return spec
    changes: dict[str, Any] = {}
    r = managed.get("resources")
    if r:
        old = spec.resources
        changes["resources"] = replace(
            old,
            memory=int(r["memory"]) or old.memory,
            cpus=int(r["millicpu"]) / 1000 or old.cpus,
            disk=int(r["disk"]) or old.disk,
        )
    env = managed.get("env") or {}
    if env:
        merged = {item.partition("=")[0]: item for item in spec.env}
        merged.update({k: f"{k}={v}" for k, v in sorted(env.items())})
        changes["env"] = tuple(merged.values())
    if managed.get("ports"):
        ports = [p.partition("/") for p in managed["ports"]]
        changes["ports"] = tuple(Port(proto, int(number)) for proto, _, number in ports)
    if managed.get("labels"):
        changes["labels"] = {**spec.labels, **managed["labels"]}
    return replace(spec, **changes)


def node_supervisor(
    state_dir: Path,
    runc_root: Path | None = None,
    prefix: str = "lm-",
    libvirt_uri: str = "qemu:///system",
    node_netns: str | None = None,
    stop_timeout: float = 10.0,
) -> Supervisor:
    """The node's supervisor: runc for containers, libvirt for VMs (connected on first use)."""

    def containers() -> Runtime:
        from node.workloads.runc import DEFAULT_RUNC_ROOT, RuncRuntime

        return RuncRuntime(state_dir / "containers", runc_root or DEFAULT_RUNC_ROOT, prefix,
                           node_netns=node_netns)  # fmt: skip

    def vms() -> Runtime:
        from node.workloads.libvirt_vm import LibvirtRuntime

        return LibvirtRuntime(state_dir / "vms", libvirt_uri, prefix, node_netns=node_netns)

    return Supervisor(state_dir, {"container": containers, "vm": vms}, stop_timeout=stop_timeout)


def supervise_once(supervisor: Supervisor) -> list[dict[str, Any]]:
    """One supervision step under the state dir's lock; the workloads as `app ls` shows them."""
    with supervisor.locked():
        supervisor.step()
        return supervisor.list()
