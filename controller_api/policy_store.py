"""Applied network policies, kept by the controller's `Store` next to the nodes (same
durability): every applied version with its text, so a restart loses nothing and `policy show`
can say who applied what when; and the policy generation (the version nodes see), bumped when the
policy or the set of nodes changes."""

from __future__ import annotations

from typing import Any

from controller_api.store import PolicyRow, Store

__all__ = ["PolicyRow", "PolicyStore"]


class PolicyStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def current(self) -> PolicyRow | None:
        return self.store.current_policy()

    def add(
        self, text: str, filename: str, compiled: dict[str, Any], now: float, who: str
    ) -> tuple[int, int]:
        """Store a new applied version; returns (version, generation)."""
        return self.store.add_policy(text, filename, compiled, now, who)

    def generation(self) -> int:
        return self.store.policy_generation()

    def bump_generation(self) -> int:
        return self.store.bump_policy_generation()
