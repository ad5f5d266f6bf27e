"""Applied network policies in the controller's SQLite file, next to the nodes (same
transactions, same durability): every applied version with its text, so a restart loses nothing
and `policy show` can say who applied what when; and the policy generation (the version nodes
see), bumped when the policy or the set of nodes changes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from controller_api.store import Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS policies (
    version INTEGER PRIMARY KEY,
    text TEXT NOT NULL,
    filename TEXT NOT NULL,
    compiled_json TEXT NOT NULL,
    applied_at REAL NOT NULL,
    applied_by TEXT NOT NULL
);
"""
GENERATION_KEY = "policy_generation"


@dataclass(frozen=True)
class PolicyRow:
    version: int
    text: str
    filename: str
    compiled: dict[str, Any]  # node name -> NodePolicy dict, as compiled when applied
    applied_at: float
    applied_by: str


class PolicyStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        with store.transaction() as conn:
            conn.execute(_SCHEMA)
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, '0')", (GENERATION_KEY,)
            )

    def current(self) -> PolicyRow | None:
        with self.store.transaction() as conn:
            row = conn.execute("SELECT * FROM policies ORDER BY version DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return PolicyRow(
            row["version"], row["text"], row["filename"], json.loads(row["compiled_json"]),
            row["applied_at"], row["applied_by"],
        )  # fmt: skip

    def add(
        self, text: str, filename: str, compiled: dict[str, Any], now: float, who: str
    ) -> tuple[int, int]:
        """Store a new applied version; returns (version, generation)."""
        with self.store.transaction() as conn:
            row = conn.execute("SELECT MAX(version) FROM policies").fetchone()
            version = int(row[0] or 0) + 1
            conn.execute(
                "INSERT INTO policies (version, text, filename, compiled_json, applied_at,"
                " applied_by) VALUES (?, ?, ?, ?, ?, ?)",
                (version, text, filename, json.dumps(compiled, sort_keys=True), now, who),
            )
            generation = self._bump(conn)
        return version, generation

    def generation(self) -> int:
        value = self.store.get_meta(GENERATION_KEY)
        return int(value or 0)

    def bump_generation(self) -> int:
        with self.store.transaction() as conn:
            return self._bump(conn)

    @staticmethod
    def _bump(conn: Any) -> int:
        conn.execute(
            "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = ?",
            (GENERATION_KEY,),
        )
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (GENERATION_KEY,)).fetchone()
        return int(row[0])
