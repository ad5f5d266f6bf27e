"""The controller's state in SQLite: tokens, nodes and their EID allocations, reports.

WAL mode with synchronous=FULL, so a controller killed at any moment loses no committed change;
every change runs in one `BEGIN IMMEDIATE` transaction, so two enrollments racing on the same
file (even from two processes) serialize, and UNIQUE constraints on the slot and the prefixes are
the last line against a double allocation. Times are UNIX seconds (float, UTC). An etcd-backed
store can replace this one later behind the same methods.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "1"

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
"""


class StoreError(Exception):
    """A state problem the operator can act on (one line)."""


class PoolExhausted(StoreError):
    pass


@dataclass(frozen=True)
class TokenRow:
    token_id: str
    secret_sha256: bytes
    created_at: float
    expires_at: float
    max_uses: int
    uses: int
    tags: tuple[str, ...]
    description: str
    revoked_at: float | None

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if now >= self.expires_at:
            return "expired"
        if self.uses >= self.max_uses:
            return "used-up"
        return "valid"


@dataclass(frozen=True)
class NodeRow:
    node_id: str
    name: str
    slot: int
    instance_id: int
    eid4: IPv4Network
    eid6: IPv6Network
    tags: tuple[str, ...]
    token_id: str | None
    onboarding_fp: str | None
    public_key_fp: str
    cert_pem: str
    cert_fp: str
    cert_not_after: float
    site_key: str
    hostname: str
    enrolled_at: float
    revoked_at: float | None
    config_version: int
    config_hash: str
    applied_version: int
    apply_error: str
    last_seen: float | None
    status: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


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


@dataclass(frozen=True)
class NewNode:
    """What enrollment decided, before the row exists (slot and EIDs are allocated here)."""

    node_id: str
    requested_name: str
    instance_id: int
    tags: tuple[str, ...]
    token_id: str | None
    onboarding_fp: str | None
    public_key_fp: str
    site_key: str
    hostname: str


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
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
        self.set_meta_default("schema_version", SCHEMA_VERSION)

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (serialized with every other writer of the file)."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def journal_mode(self) -> str:
        return str(self.conn.execute("PRAGMA journal_mode").fetchone()[0])

    # ------------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta_default(self, key: str, value: str) -> str:
        """The stored value of `key`, storing `value` first if there is none."""
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
            return str(conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

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
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO tokens (id, secret_sha256, created_at, expires_at, max_uses, tags,"
                " description) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (token_id, secret_sha256, now, expires_at, max_uses, json.dumps(tags),
                 description),
            )  # fmt: skip
        token = self.get_token(token_id)
        assert token is not None
        return token

    def get_token(self, token_id: str) -> TokenRow | None:
        with self._lock:
            row = self.conn.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return None if row is None else _token(row)

    def list_tokens(self) -> list[TokenRow]:
        with self._lock:
            rows = self.conn.execute("SELECT * FROM tokens ORDER BY created_at").fetchall()
        return [_token(r) for r in rows]

    def revoke_token(self, token_id: str, now: float) -> TokenRow | None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, token_id),
            )
        return self.get_token(token_id)

    def use_token(self, conn: sqlite3.Connection, token_id: str) -> None:
        """Count one use (inside the enrollment's transaction)."""
        conn.execute("UPDATE tokens SET uses = uses + 1 WHERE id = ?", (token_id,))

    # ------------------------------------------------------------------ nodes

    def allocate_node(
        self,
        conn: sqlite3.Connection,
        new: NewNode,
        pool4: IPv4Network,
        len4: int,
        pool6: IPv6Network,
        len6: int,
    ) -> tuple[str, int, IPv4Network, IPv6Network]:
        """A unique name and the lowest free slot (inside the enrollment's transaction).

        Slot i is the i-th /len4 of pool4 and the i-th /len6 of pool6, counted per instance-id
        (virtual networks may reuse the same prefixes). Slots of revoked nodes stay taken:
        traffic for a revoked node's EIDs must never reach a newcomer.
        """
        capacity = min(1 << (len4 - pool4.prefixlen), 1 << (len6 - pool6.prefixlen))
        rows = conn.execute("SELECT slot FROM nodes WHERE instance_id = ?", (new.instance_id,))
        used = {r[0] for r in rows}
        slot = next((i for i in range(capacity) if i not in used), None)
        if slot is None:
            raise PoolExhausted(f"the EID pools are full ({capacity} nodes in {pool4} and {pool6})")
        eid4 = IPv4Network((int(pool4.network_address) + (slot << (32 - len4)), len4))
        eid6 = IPv6Network((int(pool6.network_address) + (slot << (128 - len6)), len6))
        names = {r[0] for r in conn.execute("SELECT name FROM nodes")}
        name, n = new.requested_name, 2
        while name in names:
            suffix = f"-{n}"
            name = new.requested_name[: 63 - len(suffix)] + suffix
            n += 1
        return name, slot, eid4, eid6

    def insert_node(
        self,
        conn: sqlite3.Connection,
        new: NewNode,
        name: str,
        slot: int,
        eids: tuple[IPv4Network, IPv6Network],
        cert_pem: str,
        cert_fp: str,
        cert_not_after: float,
        now: float,
    ) -> None:
        conn.execute(
            "INSERT INTO nodes (id, name, slot, instance_id, eid4, eid6, tags, token_id,"
            " onboarding_fp, public_key_fp, cert_pem, cert_fp, cert_not_after, site_key,"
            " hostname, enrolled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (new.node_id, name, slot, new.instance_id, str(eids[0]), str(eids[1]),
             json.dumps(new.tags), new.token_id, new.onboarding_fp, new.public_key_fp, cert_pem,
             cert_fp, cert_not_after, new.site_key, new.hostname, now),
        )  # fmt: skip

    def replace_certificate(
        self, conn: sqlite3.Connection, node_id: str, cert_pem: str, cert_fp: str,
        not_after: float, public_key_fp: str,
    ) -> None:  # fmt: skip
        conn.execute(
            "UPDATE nodes SET cert_pem = ?, cert_fp = ?, cert_not_after = ?, public_key_fp = ?"
            " WHERE id = ?",
            (cert_pem, cert_fp, not_after, public_key_fp, node_id),
        )

    def _one(self, where: str, *args: Any) -> NodeRow | None:
        with self._lock:
            row = self.conn.execute(f"SELECT * FROM nodes WHERE {where}", args).fetchone()
        return None if row is None else _node(row)

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
        with self._lock:
            rows = self.conn.execute(query + " ORDER BY instance_id, slot").fetchall()
        return [_node(r) for r in rows]

    def revoke_node(self, node_id: str, now: float) -> NodeRow | None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE nodes SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, node_id),
            )
        return self.get_node(node_id)

    def set_config_hash(self, node_id: str, config_hash: str) -> int:
        """The node's desired-state version: bumped (and stored) when the document changed."""
        with self.transaction() as conn:
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
        with self.transaction() as conn:
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
        with self.transaction() as conn:
            conn.execute(
                "UPDATE nodes SET status_json = ?, last_seen = ? WHERE id = ?",
                (json.dumps(status, sort_keys=True), now, node_id),
            )

    def record_metrics(self, node_id: str, metrics: dict[str, Any], now: float) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE nodes SET metrics_json = ?, last_seen = ? WHERE id = ?",
                (json.dumps(metrics, sort_keys=True), now, node_id),
            )

    def touch(self, node_id: str, now: float) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE nodes SET last_seen = ? WHERE id = ?", (now, node_id))
