"""A replica's feed of what changed in the store: one etcd watch over the store's prefix.

Config streams are driven by it instead of re-reading the store every cycle: each batch of
events is sorted (`classify`) into what it means for the desired states, so a status report
(written every few seconds by every node) wakes nobody, a node's own change wakes that node,
and only what every node's document holds (the revocation list, the policy, the replicas'
map-servers, workloads) wakes them all.

The watch resumes from the revision after the last one it delivered, so a broken stream (a
member died, etcd lost quorum, the network went away) misses nothing and repeats nothing. If
etcd compacted its history past that revision, the feed cannot know what it missed: it starts
over from the current revision and asks for a full resynchronisation (`on_resync`: reload
everything, wake every stream). The watch blocks, so it runs in a thread; its results are
handed to the event loop, where the controller's state lives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller_api.store import APPS, PLACEMENTS, RETIRED_CERTS, TPM_NODES, StoreError
from controller_api.store.etcd_client import Compacted, EtcdClient, WatchStream

log = logging.getLogger("lispmesh.controller.feed")

# Node fields the policy inventory (and every node's compiled rules) depends on.
_INVENTORY_FIELDS = ("name", "tags", "instance_id", "slot", "eid4", "eid6", "revoked_at")
# Fields of a node's own desired state (besides the inventory's) and of its map-server site.
_OWN_FIELDS = ("site_key",)
# Object kinds that reach every node's desired state.
_EVERYONE_KINDS = (APPS, PLACEMENTS, RETIRED_CERTS)

RETRY_MIN, RETRY_MAX = 0.2, 5.0


@dataclass
class Changes:
    """What a batch of store changes means for the desired states."""

    revision: int = 0
    nodes: set[str] = field(default_factory=set)  # these nodes' own documents may differ
    everyone: bool = False  # every node's document may differ
    inventory: bool = False  # a node joined, left or changed name/tags: policies recompile
    policy: bool = False  # a policy was applied or its generation moved: reload it
    sites: bool = False  # the map-server's sites change (a node joined, left, new site key)
    quarantine: bool = False  # a node went into or out of quarantine
    replicas: bool = False  # a replica came or went (the map-servers nodes register with)
    retired: bool = False  # a renewal retired a certificate (every node refuses it later)
    ca: bool = False  # the CAs changed (a rotation): every node's trust bundle

    def __bool__(self) -> bool:
        return bool(self.nodes) or any((self.everyone, self.inventory, self.policy, self.sites,
                                        self.quarantine, self.replicas, self.retired,
                                        self.ca))  # fmt: skip


def _json(raw: bytes) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _quarantined(raw: bytes) -> bool:
    doc = _json(raw)
    attestation = doc.get("attestation") if doc else None
    return isinstance(attestation, dict) and attestation.get("ok") is False


def classify(prefix: str, revision: int, events: Sequence[Any]) -> Changes:
    """Sort etcd events under `prefix` (each with its previous value) into `Changes`."""
    out = Changes(revision=revision)
    for event in events:
        key = bytes(event.kv.key).decode(errors="replace")[len(prefix) :]
        new = b"" if event.type == 1 else bytes(event.kv.value)  # 1: DELETE
        old = bytes(event.prev_kv.value) if event.HasField("prev_kv") else b""
        kind, _, rest = key.partition("/")
        if not old and event.type == 0 and event.kv.version > 1:
            # An update whose previous value etcd compacted away: it could be anything.
            out.everyone = out.inventory = out.sites = out.quarantine = True
            if kind == "nodes":
                out.nodes.add(rest)
        elif kind == "nodes":
            _node_change(out, rest, _json(old), _json(new))
        elif kind == "policies" or key == "internal/policy_generation":
            out.policy = True
        elif key in ("ca", "ca_others"):
            out.ca = out.everyone = True
        elif key.startswith("internal/replicas/"):
            out.replicas = True
        elif kind == "objects":
            object_kind, _, object_key = rest.partition("/")
            if object_kind == RETIRED_CERTS:
                out.retired = True
            if object_kind == TPM_NODES and _quarantined(old) != _quarantined(new):
                out.quarantine = out.everyone = True
                out.nodes.add(object_key)
            elif object_kind in _EVERYONE_KINDS:
                out.everyone = True
    return out


def _node_change(
    out: Changes, node_id: str, old: dict[str, Any] | None, new: dict[str, Any] | None
) -> None:
    if old is None or new is None:  # enrolled (or deleted: a restore, an operator)
        out.inventory = out.sites = True
        out.nodes.add(node_id)
        return
    if any(old.get(f) != new.get(f) for f in _INVENTORY_FIELDS):
        out.inventory = out.sites = True
        out.nodes.add(node_id)
        if old.get("revoked_at") != new.get("revoked_at"):
            out.everyone = True  # every node's revocation list
    elif any(old.get(f) != new.get(f) for f in _OWN_FIELDS):
        out.sites = True
        out.nodes.add(node_id)
    # Anything else (status, metrics, last seen, acks, the config version itself) changes
    # no desired state.


class ChangeFeed:
    """Runs the watch in a thread from `start_revision + 1`; calls `on_changes(Changes)` and
    `on_resync()` in `loop`."""

    def __init__(
        self,
        etcd: EtcdClient,
        prefix: str,
        start_revision: int,
        loop: asyncio.AbstractEventLoop,
        on_changes: Callable[[Changes], None],
        on_resync: Callable[[], None],
    ) -> None:
        self.etcd = etcd
        self.prefix = prefix
        self.revision = start_revision  # the last revision handed to the loop
        self.loop = loop
        self.on_changes = on_changes
        self.on_resync = on_resync
        self.resyncs = 0
        self.batches = 0
        self.broken = 0
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._stream: WatchStream | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="store-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._stream is not None:
                self._stream.cancel()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        delay = RETRY_MIN
        while not self._stop.is_set():
            try:
                self._follow()
                delay = RETRY_MIN
            except Compacted as exc:
                self._resync(exc)
            except StoreError as exc:
                self.connected.clear()
                self.broken += 1
                log.warning("%s; watching again from revision %d", exc, self.revision + 1)
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX)

    def _follow(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            self._stream = stream = self.etcd.watch(self.prefix.encode(), self.revision + 1)
        try:
            self.connected.set()
            for batch in stream:
                changes = classify(self.prefix, batch.revision, batch.events)
                self.revision = batch.revision
                self.batches += 1
                if changes:
                    self.loop.call_soon_threadsafe(self.on_changes, changes)
        finally:
            with self._lock:
                self._stream = None

    def _resync(self, exc: Compacted) -> None:
        """The history we needed is gone: start over from now, and have everything reloaded."""
        try:
            now = self.etcd.revision()
        except StoreError as unavailable:
            log.warning("resynchronising after %s: %s", exc, unavailable)
            self._stop.wait(RETRY_MIN)
            return
        log.warning("%s: resynchronised at revision %d (everything reloaded)", exc, now)
        self.revision = now
        self.resyncs += 1
        self.loop.call_soon_threadsafe(self.on_resync)
