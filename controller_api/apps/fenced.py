"""A write through the Store, fenced by the leader's term when there is one (etcd replicas; the
SQLite controller is alone and leads without a term)."""

from __future__ import annotations

from collections.abc import Sequence

from controller_api.store import Fence, ObjectWrite, Store


def commit(store: Store, writes: Sequence[ObjectWrite], fence: Fence | None) -> int:
    if fence is None:
        return store.commit_objects(writes)
    return store.commit_objects(writes, fence)
