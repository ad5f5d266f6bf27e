"""The apps deployed at the controller, kept in the Store: one `apps` record per app holding its
spec's text (parsed again when read, so the record is the operator's file, not our encoding),
who deployed it and when, and the texts of the versions replicas may still run (a rolling
update replaces old copies a few at a time: until then the nodes keep running the old spec).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from controller_api.apps.fenced import commit
from controller_api.apps.spec import AppSpec, parse_app
from controller_api.store import APPS, Fence, ObjectWrite, Store

KEEP_VERSIONS = 4  # older texts a record keeps for replicas not yet updated


@dataclass(frozen=True)
class Deployed:
    spec: AppSpec
    deployed_at: float
    deployed_by: str
    revision: int
    versions: dict[str, str]  # AppSpec.version -> the spec text of that version (current included)

    def spec_of(self, version: str) -> AppSpec:
        """The spec a replica at `version` runs (the current one if that text is gone)."""
        text = self.versions.get(version)
        if not version or version == self.spec.version or text is None:
            return self.spec
        return parse_app(text, self.spec.filename)


_parsed: dict[tuple[str, int], Deployed] = {}  # (name, revision) -> parsed: records rarely change


def _decode(key: str, value: str, revision: int) -> Deployed:
    cached = _parsed.get((key, revision))
    if cached is not None:
        return cached
    doc = json.loads(value)
    spec = parse_app(doc["text"], doc["filename"])
    versions = {str(v): str(text) for v, text in doc.get("versions", [])}
    out = Deployed(spec, doc["at"], doc["by"], revision, versions)
    if len(_parsed) > 4096:
        _parsed.clear()
    _parsed[(key, revision)] = out
    return out


def get_app(store: Store, name: str) -> Deployed | None:
    record = store.get_object(APPS, name)
    return _decode(name, record.value, record.revision) if record else None


def list_apps(store: Store) -> list[Deployed]:
    return sorted(
        (_decode(r.key, r.value, r.revision) for r in store.list_objects(APPS)),
        key=lambda d: d.spec.name,
    )


def put_app(
    store: Store, spec: AppSpec, text: str, who: str, now: float, fence: Fence | None = None
) -> bool:
    """Store (or replace) the app; True if it is new. `Conflict` if it changed meanwhile."""
    record = store.get_object(APPS, spec.name)
    versions: dict[str, str] = {}
    if record is not None:
        versions = {str(v): str(s) for v, s in json.loads(record.value).get("versions", [])}
        versions.pop(spec.version, None)
        while len(versions) >= KEEP_VERSIONS:
            versions.pop(next(iter(versions)))
    versions[spec.version] = text
    doc = {
        "text": text,
        "filename": spec.filename,
        "at": now,
        "by": who,
        "versions": list(versions.items()),
    }  # fmt: skip  (oldest first)
    value = json.dumps(doc, sort_keys=True)
    commit(store, [ObjectWrite(APPS, spec.name, value, record.revision if record else 0)], fence)
    return record is None


def delete_app(store: Store, name: str, fence: Fence | None = None) -> bool:
    record = store.get_object(APPS, name)
    if record is None:
        return False
    commit(store, [ObjectWrite(APPS, name, None, record.revision)], fence)
    return True
