"""The `Store` in one SQLite file: the embedded default for a single controller.

WAL mode with synchronous=FULL, so a controller killed at any moment loses no committed change;
every change runs in one `BEGIN IMMEDIATE` transaction, so two enrollments racing on the same
file (even from two processes) serialize, and UNIQUE constraints on the slot and the prefixes are
the last line against a double allocation. The store revision is a counter in `meta`, bumped by
every transaction that changed a row. The file is 0600: it holds site keys (and the CA key once
the CA lives in the store).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

from controller_api.store.allocation import allocate
from controller_api.store.model import (
    AlreadyEnrolled,
    CaMaterial,
    Conflict,
    EidPools,
    Fence,
    Issuer,
    NewNode,
    NodeRow,
    ObjectWrite,
    PolicyRow,
    Record,
    Snapshot,
    StoreError,
    TokenRow,
    TokenUnusable,
    check_object_kind,
)

SCHEMA_VERSION = "1"
REVISION_KEY = "store_revision"
GENERATION_KEY = "policy_generation"
_INTERNAL_META = (REVISION_KEY, GENERATION_KEY)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    secret_sha256 BLOB NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    max_uses INTEGER NOT NULL,
    uses INTEGER NOT NULL DEFAULT 0,
    tags TEXT NOT NULL DEFAULT '[]',
    description TEXT NOT NULL DEFAULT '',
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    slot INTEGER NOT NULL,
    instance_id INTEGER NOT NULL,
    eid4 TEXT NOT NULL,
    eid6 TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    token_id TEXT,
    onboarding_fp TEXT,
    public_key_fp TEXT NOT NULL,
    cert_pem TEXT NOT NULL,
    cert_fp TEXT NOT NULL UNIQUE,
    cert_not_after REAL NOT NULL,
    site_key TEXT NOT NULL,
    hostname TEXT NOT NULL DEFAULT '',
    enrolled_at REAL NOT NULL,
    revoked_at REAL,
    config_version INTEGER NOT NULL DEFAULT 0,
    config_hash TEXT NOT NULL DEFAULT '',
    applied_version INTEGER NOT NULL DEFAULT 0,
    apply_error TEXT NOT NULL DEFAULT '',
    last_seen REAL,
    status_json TEXT NOT NULL DEFAULT '{}',
    metrics_json TEXT NOT NULL DEFAULT '{}',
    -- Instance-ids are separate virtual networks: EID prefixes are unique within one.
    UNIQUE (instance_id, slot),
    UNIQUE (instance_id, eid4),
    UNIQUE (instance_id, eid6)
);
CREATE TABLE IF NOT EXISTS policies (
    version INTEGER PRIMARY KEY,
    text TEXT NOT NULL,
    filename TEXT NOT NULL,
    compiled_json TEXT NOT NULL,
    applied_at REAL NOT NULL,
    applied_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    revision INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);
-- Certificates a renewal replaced: still accepted (mTLS) until `until`, the grace period in
-- which a node whose renewal answer was lost can ask again with its old certificate.
CREATE TABLE IF NOT EXISTS retired_certs (
    cert_fp TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ca (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    cert_pem BLOB NOT NULL,
    key_pem BLOB NOT NULL
);
-- The other CAs trusted during a CA rotation (table ca holds the issuing one).
CREATE TABLE IF NOT EXISTS ca_others (
    position INTEGER PRIMARY KEY,
    cert_pem BLOB NOT NULL,
    key_pem BLOB NOT NULL
);
"""

_NODE_COLUMNS = (
    "id, name, slot, instance_id, eid4, eid6, tags, token_id, onboarding_fp, public_key_fp,"
    " cert_pem, cert_fp, cert_not_after, site_key, hostname, enrolled_at, revoked_at,"
    " config_version, config_hash, applied_version, apply_error, last_seen, status_json,"
    " metrics_json"
)


def _token(row: sqlite3.Row) -> TokenRow:
    return TokenRow(
        row["id"], row["secret_sha256"], row["created_at"], row["expires_at"], row["max_uses"],
        row["uses"], tuple(json.loads(row["tags"])), row["description"], row["revoked_at"],
    )  # fmt: skip


def _node(row: sqlite3.Row) -> NodeRow:
    return NodeRow(
        node_id=row["id"],
        name=row["name"],
        slot=row["slot"],
        instance_id=row["instance_id"],
        eid4=IPv4Network(row["eid4"]),
        eid6=IPv6Network(row["eid6"]),
        tags=tuple(json.loads(row["tags"])),
        token_id=row["token_id"],
        onboarding_fp=row["onboarding_fp"],
        public_key_fp=row["public_key_fp"],
        cert_pem=row["cert_pem"],
        cert_fp=row["cert_fp"],
        cert_not_after=row["cert_not_after"],
        site_key=row["site_key"],
        hostname=row["hostname"],
        enrolled_at=row["enrolled_at"],
        revoked_at=row["revoked_at"],
        config_version=row["config_version"],
        config_hash=row["config_hash"],
        applied_version=row["applied_version"],
        apply_error=row["apply_error"],
        last_seen=row["last_seen"],
        status=json.loads(row["status_json"]),
        metrics=json.loads(row["metrics_json"]),
    )


def _node_values(n: NodeRow) -> tuple[Any, ...]:
    return (
        n.node_id, n.name, n.slot, n.instance_id, str(n.eid4), str(n.eid6), json.dumps(n.tags),
        n.token_id, n.onboarding_fp, n.public_key_fp, n.cert_pem, n.cert_fp, n.cert_not_after,
        n.site_key, n.hostname, n.enrolled_at, n.revoked_at, n.config_version, n.config_hash,
        n.applied_version, n.apply_error, n.last_seen, json.dumps(n.status, sort_keys=True),
        json.dumps(n.metrics, sort_keys=True),
    )  # fmt: skip


def _policy(row: sqlite3.Row) -> PolicyRow:
    return PolicyRow(
        row["version"], row["text"], row["filename"], json.loads(row["compiled_json"]),
        row["applied_at"], row["applied_by"],
    )  # fmt: skip


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._revision: int | None = None  # the current transaction's, once bumped
        try:
            self.conn = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA busy_timeout=10000")
            self.conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"state database {path}: {exc}") from None
        path.chmod(0o600)  # it holds site keys
        with self._write() as conn:
            for key, value in (
                ("schema_version", SCHEMA_VERSION), (REVISION_KEY, "0"), (GENERATION_KEY, "0"),
            ):  # fmt: skip
                conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (serialized with every other writer of the file); bumps the
        store revision if it changed anything."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            before, self._revision = self.conn.total_changes, None
            try:
                yield self.conn
                if self.conn.total_changes != before:
                    self._bump_revision(self.conn)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def _bump_revision(self, conn: sqlite3.Connection) -> int:
        """The revision this transaction commits as (bumped once per transaction)."""
        if self._revision is None:
            row = conn.execute(
                "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = ?"
                " RETURNING value",
                (REVISION_KEY,),
            ).fetchone()
            self._revision = int(row[0])
        return self._revision

    def _read(self, query: str, *args: Any) -> list[sqlite3.Row]:
        with self._lock:
            return self.conn.execute(query, args).fetchall()

    def journal_mode(self) -> str:
        return str(self.conn.execute("PRAGMA journal_mode").fetchone()[0])

    def revision(self) -> int:
        return int(self.get_meta(REVISION_KEY) or 0)

    # ------------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", key)
        return str(rows[0][0]) if rows else None

    def set_meta_default(self, key: str, value: str) -> str:
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
            return str(conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    # ------------------------------------------------------------------ the CA

    def ca_material(self) -> CaMaterial | None:
        rows = self._read("SELECT cert_pem, key_pem FROM ca WHERE id = 1")
        return CaMaterial(bytes(rows[0][0]), bytes(rows[0][1])) if rows else None

    def init_ca_material(self, material: CaMaterial) -> CaMaterial:
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO ca (id, cert_pem, key_pem) VALUES (1, ?, ?)",
                (material.cert_pem, material.key_pem),
            )
        stored = self.ca_material()
        assert stored is not None
        return stored

    def ca_materials(self) -> list[CaMaterial]:
        first = self.ca_material()
        if first is None:
            return []
        rows = self._read("SELECT cert_pem, key_pem FROM ca_others ORDER BY position")
        return [first, *(CaMaterial(bytes(c), bytes(k)) for c, k in rows)]

    def replace_ca_materials(
        self, expected: Sequence[CaMaterial], new: Sequence[CaMaterial]
    ) -> None:
        if not new:
            raise StoreError("a controller needs at least one CA")
        with self._write() as conn:
            rows = conn.execute("SELECT cert_pem, key_pem FROM ca WHERE id = 1").fetchall()
            rows += conn.execute(
                "SELECT cert_pem, key_pem FROM ca_others ORDER BY position"
            ).fetchall()
            if [CaMaterial(bytes(c), bytes(k)) for c, k in rows] != list(expected):
                raise Conflict("the controller's CAs changed meanwhile: look again")
            conn.execute(
                "INSERT OR REPLACE INTO ca (id, cert_pem, key_pem) VALUES (1, ?, ?)",
                (new[0].cert_pem, new[0].key_pem),
            )
            conn.execute("DELETE FROM ca_others")
            conn.executemany(
                "INSERT INTO ca_others (position, cert_pem, key_pem) VALUES (?, ?, ?)",
                [(i, m.cert_pem, m.key_pem) for i, m in enumerate(new[1:])],
            )

    # ------------------------------------------------------------------ tokens

    def add_token(
        self,
        token_id: str,
        secret_sha256: bytes,
        now: float,
        expires_at: float,
        max_uses: int,
        tags: tuple[str, ...],
        description: str,
    ) -> TokenRow:
        token = TokenRow(token_id, secret_sha256, now, expires_at, max_uses, 0, tags,
                         description, None)  # fmt: skip
        with self._write() as conn:
            self._insert_token(conn, token)
        return token

    @staticmethod
    def _insert_token(conn: sqlite3.Connection, t: TokenRow) -> None:
        conn.execute(
            "INSERT INTO tokens (id, secret_sha256, created_at, expires_at, max_uses, uses, tags,"
            " description, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (t.token_id, t.secret_sha256, t.created_at, t.expires_at, t.max_uses, t.uses,
             json.dumps(t.tags), t.description, t.revoked_at),
        )  # fmt: skip

    def get_token(self, token_id: str) -> TokenRow | None:
        rows = self._read("SELECT * FROM tokens WHERE id = ?", token_id)
        return _token(rows[0]) if rows else None

    def list_tokens(self) -> list[TokenRow]:
        return [_token(r) for r in self._read("SELECT * FROM tokens ORDER BY created_at")]

    def revoke_token(self, token_id: str, now: float) -> TokenRow | None:
        with self._write() as conn:
            conn.execute(
                "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, token_id),
            )
        return self.get_token(token_id)

    # ------------------------------------------------------------------ nodes

    def create_node(self, new: NewNode, pools: EidPools, issue: Issuer, now: float) -> NodeRow:
        with self._write() as conn:
            if new.token_id is not None:
                rows = conn.execute("SELECT * FROM tokens WHERE id = ?", (new.token_id,))
                token = next((_token(r) for r in rows), None)
                again = conn.execute(
                    "SELECT * FROM nodes WHERE token_id = ? AND public_key_fp = ?"
                    " AND revoked_at IS NULL",
                    (new.token_id, new.public_key_fp),
                ).fetchone()
                if again is not None:
                    return _node(again)
                if token is None or token.state(now) != "valid":
                    raise TokenUnusable(token)
                conn.execute("UPDATE tokens SET uses = uses + 1 WHERE id = ?", (new.token_id,))
            if new.onboarding_fp is not None:
                known = conn.execute(
                    "SELECT * FROM nodes WHERE onboarding_fp = ?", (new.onboarding_fp,)
                ).fetchone()
                if known is not None:
                    raise AlreadyEnrolled(_node(known))
            used = conn.execute("SELECT slot FROM nodes WHERE instance_id = ?", (new.instance_id,))
            names = conn.execute("SELECT name FROM nodes")
            alloc = allocate(new, pools, (r[0] for r in used), (r[0] for r in names))
            issued = issue(alloc)
            conn.execute(
                "INSERT INTO nodes (id, name, slot, instance_id, eid4, eid6, tags, token_id,"
                " onboarding_fp, public_key_fp, cert_pem, cert_fp, cert_not_after, site_key,"
                " hostname, enrolled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (new.node_id, alloc.name, alloc.slot, new.instance_id, str(alloc.eid4),
                 str(alloc.eid6), json.dumps(new.tags), new.token_id, new.onboarding_fp,
                 new.public_key_fp, issued.cert_pem, issued.cert_fp, issued.not_after,
                 new.site_key, new.hostname, now),
            )  # fmt: skip
            return _node(
                conn.execute("SELECT * FROM nodes WHERE id = ?", (new.node_id,)).fetchone()
            )

    def _one(self, where: str, *args: Any) -> NodeRow | None:
        rows = self._read(f"SELECT * FROM nodes WHERE {where}", *args)
        return _node(rows[0]) if rows else None

    def get_node(self, node_id: str) -> NodeRow | None:
        return self._one("id = ?", node_id)

    def find_node(self, name_or_id: str) -> NodeRow | None:
        return self._one("id = ? OR name = ?", name_or_id, name_or_id)

    def node_by_cert(self, cert_fp: str) -> NodeRow | None:
        return self._one("cert_fp = ?", cert_fp)

    def node_by_public_key(self, public_key_fp: str) -> NodeRow | None:
        return self._one("public_key_fp = ? AND revoked_at IS NULL", public_key_fp)

    def node_by_onboarding(self, onboarding_fp: str) -> NodeRow | None:
        return self._one("onboarding_fp = ? ORDER BY enrolled_at DESC", onboarding_fp)

    def list_nodes(self, include_revoked: bool = True) -> list[NodeRow]:
        query = "SELECT * FROM nodes"
        if not include_revoked:
            query += " WHERE revoked_at IS NULL"
        return [_node(r) for r in self._read(query + " ORDER BY instance_id, slot")]

    def revoke_node(self, node_id: str, now: float) -> NodeRow | None:
        with self._write() as conn:
            conn.execute(
                "UPDATE nodes SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, node_id),
            )
        return self.get_node(node_id)

    def node_by_retired_cert(self, cert_fp: str, now: float) -> NodeRow | None:
        rows = self._read(
            "SELECT node_id FROM retired_certs WHERE cert_fp = ? AND until > ?", cert_fp, now
        )
        return self.get_node(rows[0]["node_id"]) if rows else None

    def replace_certificate(
        self,
        node_id: str,
        cert_pem: str,
        cert_fp: str,
        not_after: float,
        public_key_fp: str,
        retire_until: float | None = None,
    ) -> NodeRow | None:
        with self._write() as conn:
            if retire_until is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO retired_certs (cert_fp, node_id, until)"
                    " SELECT cert_fp, id, ? FROM nodes WHERE id = ? AND revoked_at IS NULL",
                    (retire_until, node_id),
                )
            changed = conn.execute(
                "UPDATE nodes SET cert_pem = ?, cert_fp = ?, cert_not_after = ?,"
                " public_key_fp = ? WHERE id = ? AND revoked_at IS NULL",
                (cert_pem, cert_fp, not_after, public_key_fp, node_id),
            ).rowcount
        return self.get_node(node_id) if changed else None

    def set_config_hash(self, node_id: str, config_hash: str) -> int:
        with self._write() as conn:
            row = conn.execute(
                "SELECT config_version, config_hash FROM nodes WHERE id = ?", (node_id,)
            ).fetchone()
            if row is None:
                raise StoreError(f"no node {node_id}")
            version = int(row[0])
            if row[1] != config_hash:
                version += 1
                conn.execute(
                    "UPDATE nodes SET config_version = ?, config_hash = ? WHERE id = ?",
                    (version, config_hash, node_id),
                )
        return version

    def record_ack(self, node_id: str, version: int, error: str, now: float) -> None:
        with self._write() as conn:
            if error:
                conn.execute(
                    "UPDATE nodes SET apply_error = ?, last_seen = ? WHERE id = ?",
                    (error, now, node_id),
                )
            else:
                conn.execute(
                    "UPDATE nodes SET applied_version = MAX(applied_version, ?), apply_error = '',"
                    " last_seen = ? WHERE id = ?",
                    (version, now, node_id),
                )

    def record_status(self, node_id: str, status: dict[str, Any], now: float) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE nodes SET status_json = ?, last_seen = ? WHERE id = ?",
                (json.dumps(status, sort_keys=True), now, node_id),
            )

    def record_metrics(self, node_id: str, metrics: dict[str, Any], now: float) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE nodes SET metrics_json = ?, last_seen = ? WHERE id = ?",
                (json.dumps(metrics, sort_keys=True), now, node_id),
            )

    def touch(self, node_id: str, now: float) -> None:
        with self._write() as conn:
            conn.execute("UPDATE nodes SET last_seen = ? WHERE id = ?", (now, node_id))

    # ------------------------------------------------------------------ policies

    def current_policy(self) -> PolicyRow | None:
        rows = self._read("SELECT * FROM policies ORDER BY version DESC LIMIT 1")
        return _policy(rows[0]) if rows else None

    def list_policies(self) -> list[PolicyRow]:
        return [_policy(r) for r in self._read("SELECT * FROM policies ORDER BY version")]

    def add_policy(
        self, text: str, filename: str, compiled: dict[str, Any], now: float, who: str
    ) -> tuple[int, int]:
        with self._write() as conn:
            row = conn.execute("SELECT MAX(version) FROM policies").fetchone()
            version = int(row[0] or 0) + 1
            self._insert_policy(conn, PolicyRow(version, text, filename, compiled, now, who))
            generation = self._bump_generation(conn)
        return version, generation

    @staticmethod
    def _insert_policy(conn: sqlite3.Connection, p: PolicyRow) -> None:
        conn.execute(
            "INSERT INTO policies (version, text, filename, compiled_json, applied_at,"
            " applied_by) VALUES (?, ?, ?, ?, ?, ?)",
            (p.version, p.text, p.filename, json.dumps(p.compiled, sort_keys=True), p.applied_at,
             p.applied_by),
        )  # fmt: skip

    def policy_generation(self) -> int:
        return int(self.get_meta(GENERATION_KEY) or 0)

    def bump_policy_generation(self) -> int:
        with self._write() as conn:
            return self._bump_generation(conn)

    @staticmethod
    def _bump_generation(conn: sqlite3.Connection) -> int:
        row = conn.execute(
            "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = ?"
            " RETURNING value",
            (GENERATION_KEY,),
        ).fetchone()
        return int(row[0])

    # ------------------------------------------------------------------ app specs, placements

    def get_object(self, kind: str, key: str) -> Record | None:
        check_object_kind(kind, key)
        rows = self._read("SELECT * FROM objects WHERE kind = ? AND key = ?", kind, key)
        return Record(kind, key, rows[0]["value"], rows[0]["revision"]) if rows else None

    def list_objects(self, kind: str) -> list[Record]:
        check_object_kind(kind, "*")
        rows = self._read("SELECT * FROM objects WHERE kind = ? ORDER BY key", kind)
        return [Record(kind, r["key"], r["value"], r["revision"]) for r in rows]

    def commit_objects(self, writes: Sequence[ObjectWrite], fence: Fence | None = None) -> int:
        with self._write() as conn:
            revision = self._bump_revision(conn)
            for w in writes:
                check_object_kind(w.kind, w.key)
                row = conn.execute(
                    "SELECT revision FROM objects WHERE kind = ? AND key = ?", (w.kind, w.key)
                ).fetchone()
                if w.expect_revision is not None and (row[0] if row else 0) != w.expect_revision:
                    raise Conflict(f"{w.kind}/{w.key} changed (revision {row[0] if row else 0},"
                                   f" expected {w.expect_revision})")  # fmt: skip
                if w.value is None:
                    conn.execute("DELETE FROM objects WHERE kind = ? AND key = ?", (w.kind, w.key))
                else:
                    conn.execute(
                        "INSERT OR REPLACE INTO objects (kind, key, value, revision)"
                        " VALUES (?, ?, ?, ?)",
                        (w.kind, w.key, w.value, revision),
                    )
        return revision

    def expire_retired_certs(self, now: float, fence: Fence | None = None) -> int:
        with self._write() as conn:
            return int(conn.execute("DELETE FROM retired_certs WHERE until <= ?", (now,)).rowcount)

    # ------------------------------------------------------------------ migration

    def snapshot(self) -> Snapshot:
        with self._lock:  # one connection, no writer in between: a consistent view
            meta = {
                r[0]: r[1]
                for r in self._read("SELECT key, value FROM meta")
                if r[0] not in _INTERNAL_META
            }
            objects = [
                Record(r["kind"], r["key"], r["value"], r["revision"])
                for r in self._read("SELECT * FROM objects ORDER BY kind, key")
            ]
            return Snapshot(meta, self.list_tokens(), self.list_nodes(), self.list_policies(),
                            self.policy_generation(), objects, self.ca_material())  # fmt: skip

    def restore(self, snapshot: Snapshot) -> None:
        with self._write() as conn:
            for table in ("tokens", "nodes", "policies"):
                if conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]:
                    raise StoreError(f"{self.path}: not empty (it holds {table}); restore refused")
            for key, value in snapshot.meta.items():
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = ?",
                (str(snapshot.policy_generation), GENERATION_KEY),
            )
            for token in snapshot.tokens:
                self._insert_token(conn, token)
            marks = ", ".join("?" * len(_NODE_COLUMNS.split(",")))
            for node in snapshot.nodes:
                conn.execute(
                    f"INSERT INTO nodes ({_NODE_COLUMNS}) VALUES ({marks})", _node_values(node)
                )
            for policy in snapshot.policies:
                self._insert_policy(conn, policy)
            if snapshot.ca is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO ca (id, cert_pem, key_pem) VALUES (1, ?, ?)",
                    (snapshot.ca.cert_pem, snapshot.ca.key_pem),
                )
            # Record revisions belong to the store that wrote them: here they start anew.
            revision = self._bump_revision(conn)
            for r in snapshot.objects:
                conn.execute(
                    "INSERT INTO objects (kind, key, value, revision) VALUES (?, ?, ?, ?)",
                    (r.kind, r.key, r.value, revision),
                )
