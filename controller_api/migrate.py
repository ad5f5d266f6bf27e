"""`lispmesh controller migrate --to etcd`: copy a SQLite controller into etcd, then check it.

Stop the controller first: the copy is the SQLite file as one consistent snapshot, and changes
made after it would stay behind. The CA goes along (from the store, or from the state dir's ca/
where older controllers keep it only there). Running it again is safe: keys already holding the
same value are skipped (an interrupted run completes), and a key holding anything else refuses
the migration before anything is written. Afterwards every kind is compared, row by row, and
counted on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from controller_api.pki import CA_DIR, ca_from_dir
from controller_api.settings import StoreSettings
from controller_api.store import EtcdStore, Snapshot, SqliteStore, StoreError
from controller_api.store_backend import DB_FILE, open_store


@dataclass(frozen=True)
class KindCount:
    kind: str
    source: int
    target: int


@dataclass(frozen=True)
class Migration:
    source: str
    target: str
    written: int  # keys written by this run (0: it had been migrated already)
    counts: tuple[KindCount, ...]


def _rows(snap: Snapshot) -> dict[str, set[object]]:
    """What must arrive, by kind (record revisions belong to each store: not compared)."""
    rows: dict[str, set[object]] = {
        "tokens": set(map(repr, snap.tokens)),
        "nodes": set(map(repr, snap.nodes)),
        "policies": set(map(repr, snap.policies)),
        "settings": set(snap.meta.items()),
        "policy generation": {snap.policy_generation},
        "ca": {snap.ca} if snap.ca is not None else set(),
    }
    for r in snap.objects:
        rows.setdefault(r.kind, set()).add((r.key, r.value))
    return rows


def migrate_to_etcd(state_dir: Path, target: StoreSettings) -> Migration:
    db = state_dir / DB_FILE
    if not db.exists():
        raise StoreError(f"no SQLite controller state at {db}")
    if target.backend != "etcd":
        raise StoreError("migrate copies into etcd: give --etcd-endpoints")
    source = SqliteStore(db)
    try:
        snap = source.snapshot()
        rotating = len(source.ca_materials()) > 1
    finally:
        source.close()
    if rotating:
        raise StoreError("a CA rotation is in progress: finish it (ca rotate --finish) first")
    if snap.ca is None:
        snap = replace(snap, ca=ca_from_dir(state_dir / CA_DIR))
    store = open_store(target, state_dir)
    assert isinstance(store, EtcdStore)
    try:
        written = store.restore_missing(snap)
        copied = store.snapshot()
    finally:
        store.close()
    want, got = _rows(snap), _rows(copied)
    counts = []
    for kind, rows in want.items():
        arrived = got.get(kind, set())
        missing = rows - arrived
        if missing:
            raise StoreError(
                f"migration check: {kind}: {len(missing)} of {len(rows)} not in etcd as in SQLite"
            )
        counts.append(KindCount(kind, len(rows), len(arrived)))
    return Migration(str(db), target.where(state_dir), written, tuple(counts))
