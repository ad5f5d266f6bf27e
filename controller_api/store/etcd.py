"""The `Store` in etcd: several controller replicas share one cluster.

Every row is one JSON document under the store's key prefix (default `/lispmesh/`):

    meta/<key>  ca  tokens/<id>  nodes/<id>  policies/<version>  objects/<kind>/<key>
    retired/<cert_fp>  internal/policy_generation  internal/fenced (the last leader write's term)
    index/name/<name>  index/slot/<instance-id>/<slot>  index/cert/<fp>
    index/onboarding/<fp>  index/pubkey/<fp>/<node-id>          (each -> a node id)

Every read-modify-write is optimistic: read, decide, then one transaction that compares the mod
revision of every key the decision rested on (and the absence of every key it creates) and
writes only if none changed; a lost compare re-reads and decides again, a bounded number of
times. So a token's use is a compare-and-increment (a one-use token redeemed by two replicas at
once counts one use, the other sees it used up), and a slot or a name is claimed by creating
its index key, which exists at most once. Slots are unique per instance-id, and with the pools
fixed at first start (meta) so are the EID prefixes computed from them.

The store revision is etcd's own revision: it grows with every committed change (also changes
outside this prefix), and a record's revision is its key's mod revision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from controller_api.store import etcd_codec as codec
from controller_api.store.allocation import allocate
from controller_api.store.etcd_client import (
    EtcdClient,
    EtcdTls,
    compare_create,
    compare_mod,
    delete,
    get,
    put,
)
from controller_api.store.model import (
    AlreadyEnrolled,
    CaMaterial,
    Conflict,
    EidPools,
    Fence,
    Fenced,
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

DEFAULT_PREFIX = "/lispmesh/"
# Lost compares in a row before giving up: contention this long means something is wrong.
MAX_ATTEMPTS = 64
# etcd refuses transactions with more operations than --max-txn-ops (128 by default).
_BATCH = 100


class EtcdStore:
    def __init__(
        self,
        endpoints: Sequence[str],
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 5.0,
        tls: EtcdTls | None = None,
    ) -> None:
        if not prefix.endswith("/"):
            raise StoreError(f"etcd key prefix {prefix!r} must end with '/'")
        self.prefix = prefix
        self.etcd = EtcdClient(endpoints, timeout, tls)

    def close(self) -> None:
        self.etcd.close()

    def _k(self, *parts: object) -> bytes:
        return (self.prefix + "/".join(str(p) for p in parts)).encode()

    def revision(self) -> int:
        return self.etcd.revision()

    # ------------------------------------------------------------------ helpers

    def _doc(self, key: bytes) -> tuple[dict[str, Any] | None, int]:
        raw, mod = self.etcd.get(key)
        return (codec.loads(raw, key.decode()) if raw is not None else None), mod

    def _docs(self, prefix: bytes) -> list[dict[str, Any]]:
        kvs = self.etcd.range(prefix, prefix=True).kvs
        return [codec.loads(kv.value, kv.key.decode()) for kv in kvs]

    def _keys(self, prefix: bytes) -> list[str]:
        kvs = self.etcd.range(prefix, prefix=True, keys_only=True).kvs
        return [bytes(kv.key)[len(prefix) :].decode() for kv in kvs]

    def _create_default(self, key: bytes, value: bytes) -> bytes:
        """The stored value of `key`, storing `value` first if there is none: one transaction."""
        for _ in range(MAX_ATTEMPTS):  # the key may vanish between the compare and the read
            answer = self.etcd.txn([compare_create(key, 0)], [put(key, value)], [get(key)])
            if answer.succeeded:
                return value
            kvs = answer.responses[0].response_range.kvs
            if kvs:
                return bytes(kvs[0].value)
        raise StoreError(f"etcd key {key.decode()}: deleted {MAX_ATTEMPTS} times while read")

    def _modify(
        self, key: bytes, change: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        """Compare-and-swap the document at `key` with `change(doc)` (None: leave it as it is);
        the document as stored afterwards, None if there is none."""
        for _ in range(MAX_ATTEMPTS):
            doc, mod = self._doc(key)
            if doc is None:
                return None
            new = change(dict(doc))
            if new is None or new == doc:
                return doc
            if self.etcd.txn([compare_mod(key, mod)], [put(key, codec.dumps(new))]).succeeded:
                return new
        raise StoreError(f"etcd key {key.decode()}: changed {MAX_ATTEMPTS} times while updating")

    # ------------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        raw, _ = self.etcd.get(self._k("meta", key))
        return raw.decode() if raw is not None else None

    def set_meta_default(self, key: str, value: str) -> str:
        return self._create_default(self._k("meta", key), value.encode()).decode()

    # ------------------------------------------------------------------ the CA

    def ca_material(self) -> CaMaterial | None:
        doc, _ = self._doc(self._k("ca"))
        return codec.ca_material(doc) if doc is not None else None

    def init_ca_material(self, material: CaMaterial) -> CaMaterial:
        raw = self._create_default(self._k("ca"), codec.dumps(codec.ca_doc(material)))
        return codec.ca_material(codec.loads(raw, "ca"))

    def ca_materials(self) -> list[CaMaterial]:
        first = self.ca_material()
        if first is None:
            return []
        doc, _ = self._doc(self._k("ca_others"))
        return [first, *(codec.ca_material(d) for d in (doc or {}).get("cas", []))]

    def replace_ca_materials(
        self, expected: Sequence[CaMaterial], new: Sequence[CaMaterial]
    ) -> None:
        if not new:
            raise StoreError("a controller needs at least one CA")
        first_key, others_key = self._k("ca"), self._k("ca_others")
        first, first_mod = self._doc(first_key)
        others, others_mod = self._doc(others_key)
        stored = [codec.ca_material(first)] if first is not None else []
        stored += [codec.ca_material(d) for d in (others or {}).get("cas", [])]
        rest = {"cas": [codec.ca_doc(m) for m in new[1:]]}
        ops = [put(first_key, codec.dumps(codec.ca_doc(new[0]))),
               put(others_key, codec.dumps(rest))]  # fmt: skip
        checks = [compare_mod(first_key, first_mod), compare_mod(others_key, others_mod)]
        if stored != list(expected) or not self.etcd.txn(checks, ops).succeeded:
            raise Conflict("the controller's CAs changed meanwhile: look again")

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
        key = self._k("tokens", token_id)
        doc = codec.dumps(codec.token_doc(token))
        if not self.etcd.txn([compare_create(key, 0)], [put(key, doc)]).succeeded:
            raise StoreError(f"token {token_id} exists already")
        return token

    def get_token(self, token_id: str) -> TokenRow | None:
        doc, _ = self._doc(self._k("tokens", token_id))
        return codec.token_row(doc) if doc is not None else None

    def list_tokens(self) -> list[TokenRow]:
        rows = [codec.token_row(d) for d in self._docs(self._k("tokens", ""))]
        return sorted(rows, key=lambda t: t.created_at)

    def revoke_token(self, token_id: str, now: float) -> TokenRow | None:
        def revoke(doc: dict[str, Any]) -> dict[str, Any] | None:
            return {**doc, "revoked_at": now} if doc["revoked_at"] is None else None

        doc = self._modify(self._k("tokens", token_id), revoke)
        return codec.token_row(doc) if doc is not None else None

    # ------------------------------------------------------------------ nodes

    def create_node(self, new: NewNode, pools: EidPools, issue: Issuer, now: float) -> NodeRow:
        for attempt in range(MAX_ATTEMPTS):
            node = self._try_create_node(new, pools, issue, now, attempt)
            if node is not None:
                return node
        raise StoreError(f"enrollment of {new.requested_name}: lost {MAX_ATTEMPTS} races in a row")

    def _try_create_node(
        self, new: NewNode, pools: EidPools, issue: Issuer, now: float, attempt: int
    ) -> NodeRow | None:
        """One optimistic round: the node, or None if another writer got in between."""
        compare, success = [], []
        if new.token_id is not None:
            again = [
                n for n in self._nodes_by_public_key(new.public_key_fp)
                if n.token_id == new.token_id and not n.revoked
            ]  # fmt: skip
            if again:
                return again[0]
            token_key = self._k("tokens", new.token_id)
            doc, mod = self._doc(token_key)
            token = codec.token_row(doc) if doc is not None else None
            if token is None or token.state(now) != "valid":
                raise TokenUnusable(token)
            used = replace(token, uses=token.uses + 1)
            compare.append(compare_mod(token_key, mod))
            success.append(put(token_key, codec.dumps(codec.token_doc(used))))
        if new.onboarding_fp is not None:
            known = self.node_by_onboarding(new.onboarding_fp)
            if known is not None:
                raise AlreadyEnrolled(known)
        if self.get_node(new.node_id) is not None:
            raise StoreError(f"node id {new.node_id} exists already")
        used_slots = (int(s) for s in self._keys(self._k("index", "slot", new.instance_id, "")))
        alloc = allocate(new, pools, used_slots, self._keys(self._k("index", "name", "")), attempt)
        issued = issue(alloc)
        row = NodeRow(
            node_id=new.node_id, name=alloc.name, slot=alloc.slot, instance_id=new.instance_id,
            eid4=alloc.eid4, eid6=alloc.eid6, tags=new.tags, token_id=new.token_id,
            onboarding_fp=new.onboarding_fp, public_key_fp=new.public_key_fp,
            cert_pem=issued.cert_pem, cert_fp=issued.cert_fp, cert_not_after=issued.not_after,
            site_key=new.site_key, hostname=new.hostname, enrolled_at=now, revoked_at=None,
            config_version=0, config_hash="", applied_version=0, apply_error="", last_seen=None,
            status={}, metrics={},
        )  # fmt: skip
        creates = [(self._k("nodes", row.node_id), codec.dumps(codec.node_doc(row)))]
        creates += [(key, row.node_id.encode()) for key in self._index_keys(row)]
        compare += [compare_create(key, 0) for key, _ in creates]
        success += [put(key, value) for key, value in creates]
        return row if self.etcd.txn(compare, success).succeeded else None

    def _index_keys(self, n: NodeRow) -> list[bytes]:
        keys = [
            self._k("index", "name", n.name),
            self._k("index", "slot", n.instance_id, n.slot),
            self._k("index", "cert", n.cert_fp),
            self._k("index", "pubkey", n.public_key_fp, n.node_id),
        ]
        if n.onboarding_fp is not None:
            keys.append(self._k("index", "onboarding", n.onboarding_fp))
        return keys

    def _by_index(self, *parts: object) -> NodeRow | None:
        node_id, _ = self.etcd.get(self._k("index", *parts))
        return self.get_node(node_id.decode()) if node_id is not None else None

    def _nodes_by_public_key(self, public_key_fp: str) -> list[NodeRow]:
        ids = self._keys(self._k("index", "pubkey", public_key_fp, ""))
        return [n for n in (self.get_node(i) for i in ids) if n is not None]

    def get_node(self, node_id: str) -> NodeRow | None:
        doc, _ = self._doc(self._k("nodes", node_id))
        return codec.node_row(doc) if doc is not None else None

    def find_node(self, name_or_id: str) -> NodeRow | None:
        return self.get_node(name_or_id) or self._by_index("name", name_or_id)

    def node_by_cert(self, cert_fp: str) -> NodeRow | None:
        return self._by_index("cert", cert_fp)

    def node_by_public_key(self, public_key_fp: str) -> NodeRow | None:
        live = [n for n in self._nodes_by_public_key(public_key_fp) if not n.revoked]
        return live[0] if live else None

    def node_by_onboarding(self, onboarding_fp: str) -> NodeRow | None:
        return self._by_index("onboarding", onboarding_fp)

    def list_nodes(self, include_revoked: bool = True) -> list[NodeRow]:
        rows = [codec.node_row(d) for d in self._docs(self._k("nodes", ""))]
        rows = [n for n in rows if include_revoked or not n.revoked]
        return sorted(rows, key=lambda n: (n.instance_id, n.slot))

    def _modify_node(
        self, node_id: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> NodeRow | None:
        doc = self._modify(self._k("nodes", node_id), change)
        return codec.node_row(doc) if doc is not None else None

    def revoke_node(self, node_id: str, now: float) -> NodeRow | None:
        def revoke(doc: dict[str, Any]) -> dict[str, Any] | None:
            return {**doc, "revoked_at": now} if doc["revoked_at"] is None else None

        return self._modify_node(node_id, revoke)

    def node_by_retired_cert(self, cert_fp: str, now: float) -> NodeRow | None:
        doc, _ = self._doc(self._k("retired", cert_fp))
        if doc is None or doc["until"] <= now:
            return None
        return self.get_node(doc["node_id"])

    def replace_certificate(
        self,
        node_id: str,
        cert_pem: str,
        cert_fp: str,
        not_after: float,
        public_key_fp: str,
        retire_until: float | None = None,
    ) -> NodeRow | None:
        key = self._k("nodes", node_id)
        for _ in range(MAX_ATTEMPTS):
            doc, mod = self._doc(key)
            if doc is None or doc["revoked_at"] is not None:
                return None
            old = codec.node_row(doc)
            new = replace(old, cert_pem=cert_pem, cert_fp=cert_fp, cert_not_after=not_after,
                          public_key_fp=public_key_fp)  # fmt: skip
            holder = self._by_index("cert", cert_fp)
            if holder is not None and holder.node_id != node_id:
                raise StoreError(f"certificate {cert_fp} belongs to node {holder.name}")
            old_pub = self._k("index", "pubkey", old.public_key_fp, node_id)
            old_cert, new_cert = (
                self._k("index", "cert", old.cert_fp),
                self._k("index", "cert", cert_fp),
            )
            ops = [delete(old_cert), delete(old_pub), put(key, codec.dumps(codec.node_doc(new))),
                   put(new_cert, node_id.encode()),
                   put(self._k("index", "pubkey", public_key_fp, node_id), b"")]  # fmt: skip
            if retire_until is not None:
                retired = {"node_id": node_id, "until": retire_until}
                ops.append(put(self._k("retired", old.cert_fp), codec.dumps(retired)))
            else:
                ops.append(delete(self._k("retired", old.cert_fp)))
            if self.etcd.txn([compare_mod(key, mod)], ops).succeeded:
                return new
        raise StoreError(f"node {node_id}: changed {MAX_ATTEMPTS} times while renewing")

    def set_config_hash(self, node_id: str, config_hash: str) -> int:
        def bump(doc: dict[str, Any]) -> dict[str, Any] | None:
            if doc["config_hash"] == config_hash:
                return None
            return {**doc, "config_hash": config_hash, "config_version": doc["config_version"] + 1}

        node = self._modify_node(node_id, bump)
        if node is None:
            raise StoreError(f"no node {node_id}")
        return node.config_version

    def record_ack(self, node_id: str, version: int, error: str, now: float) -> None:
        def ack(doc: dict[str, Any]) -> dict[str, Any]:
            if error:
                return {**doc, "apply_error": error, "last_seen": now}
            applied = max(doc["applied_version"], version)
            return {**doc, "applied_version": applied, "apply_error": "", "last_seen": now}

        self._modify_node(node_id, ack)

    def record_status(self, node_id: str, status: dict[str, Any], now: float) -> None:
        self._modify_node(node_id, lambda doc: {**doc, "status": status, "last_seen": now})

    def record_metrics(self, node_id: str, metrics: dict[str, Any], now: float) -> None:
        self._modify_node(node_id, lambda doc: {**doc, "metrics": metrics, "last_seen": now})

    def touch(self, node_id: str, now: float) -> None:
        self._modify_node(node_id, lambda doc: {**doc, "last_seen": now})

    # ------------------------------------------------------------------ policies

    def current_policy(self) -> PolicyRow | None:
        kvs = self.etcd.range(self._k("policies", ""), prefix=True, limit=1, descend=True).kvs
        return codec.policy_row(codec.loads(kvs[0].value, "policies")) if kvs else None

    def list_policies(self) -> list[PolicyRow]:
        return [codec.policy_row(d) for d in self._docs(self._k("policies", ""))]

    def _policy_key(self, version: int) -> bytes:
        return self._k("policies", f"{version:012d}")  # zero-padded: key order is version order

    def add_policy(
        self, text: str, filename: str, compiled: dict[str, Any], now: float, who: str
    ) -> tuple[int, int]:
        generation_key = self._k("internal", "policy_generation")
        for _ in range(MAX_ATTEMPTS):
            current = self.current_policy()
            version = (current.version if current is not None else 0) + 1
            raw, mod = self.etcd.get(generation_key)
            generation = int(raw or b"0") + 1
            key = self._policy_key(version)
            row = codec.dumps(
                codec.policy_doc(PolicyRow(version, text, filename, compiled, now, who))
            )
            answer = self.etcd.txn(
                [compare_create(key, 0), compare_mod(generation_key, mod)],
                [put(key, row), put(generation_key, str(generation).encode())],
            )
            if answer.succeeded:
                return version, generation
        raise StoreError(f"policies: changed {MAX_ATTEMPTS} times while applying")

    def policy_generation(self) -> int:
        raw, _ = self.etcd.get(self._k("internal", "policy_generation"))
        return int(raw or b"0")

    def bump_policy_generation(self) -> int:
        key = self._k("internal", "policy_generation")
        for _ in range(MAX_ATTEMPTS):
            raw, mod = self.etcd.get(key)
            generation = int(raw or b"0") + 1
            if self.etcd.txn(
                [compare_mod(key, mod)], [put(key, str(generation).encode())]
            ).succeeded:
                return generation
        raise StoreError(f"policy generation: changed {MAX_ATTEMPTS} times while bumping")

    # ------------------------------------------------------------------ app specs, placements

    def get_object(self, kind: str, key: str) -> Record | None:
        check_object_kind(kind, key)
        kvs = self.etcd.range(self._k("objects", kind, key)).kvs
        return Record(kind, key, kvs[0].value.decode(), int(kvs[0].mod_revision)) if kvs else None

    def list_objects(self, kind: str) -> list[Record]:
        check_object_kind(kind, "*")
        prefix = self._k("objects", kind, "")
        kvs = self.etcd.range(prefix, prefix=True).kvs
        return [
            Record(
                kind, bytes(kv.key)[len(prefix) :].decode(), kv.value.decode(), int(kv.mod_revision)
            )
            for kv in kvs
        ]

    def _fence(self, fence: Fence | None) -> list[Any]:
        return [] if fence is None else [compare_create(fence.key.encode(), fence.revision)]

    def _witness(self, fence: Fence | None) -> list[Any]:
        """A fenced transaction also writes the term it was fenced by to `internal/fenced`: at
        the same revision as its other writes, so etcd's history says which term made every
        leader write (the HA history check reads it; an unfenced write has none)."""
        if fence is None:
            return []
        return [put(self._k("internal", "fenced"), codec.dumps({"term": fence.revision}))]

    def _check_fence(self, fence: Fence | None) -> None:
        """Raise `Fenced` if `fence`'s term is over (after a transaction lost a compare)."""
        if fence is None:
            return
        kvs = self.etcd.range(fence.key.encode()).kvs
        holder = int(kvs[0].create_revision) if kvs else 0
        if holder != fence.revision:
            raise Fenced(f"the leader term {fence.revision} is over"
                         + (f" (term {holder} leads)" if holder else " (no leader)"))  # fmt: skip

    def commit_objects(self, writes: Sequence[ObjectWrite], fence: Fence | None = None) -> int:
        compare, ops = self._fence(fence), []
        for w in writes:
            check_object_kind(w.kind, w.key)
            key = self._k("objects", w.kind, w.key)
            if w.expect_revision is not None:
                compare.append(compare_mod(key, w.expect_revision))
            ops.append(delete(key) if w.value is None else put(key, w.value.encode()))
        answer = self.etcd.txn(compare, ops + self._witness(fence))
        if not answer.succeeded:
            self._check_fence(fence)
            for w in writes:
                now = self.get_object(w.kind, w.key)
                seen = now.revision if now is not None else 0
                if w.expect_revision is not None and seen != w.expect_revision:
                    raise Conflict(f"{w.kind}/{w.key} changed (revision {seen},"
                                   f" expected {w.expect_revision})")  # fmt: skip
            raise Conflict("an object changed while committing")
        return int(answer.header.revision)

    def expire_retired_certs(self, now: float, fence: Fence | None = None) -> int:
        prefix = self._k("retired", "")
        due = [
            kv for kv in self.etcd.range(prefix, prefix=True).kvs
            if codec.loads(kv.value, kv.key.decode())["until"] <= now
        ]  # fmt: skip
        for start in range(0, len(due), _BATCH):
            batch = due[start : start + _BATCH]
            compare = self._fence(fence) + [compare_mod(kv.key, kv.mod_revision) for kv in batch]
            ops = [delete(kv.key) for kv in batch] + self._witness(fence)
            if not self.etcd.txn(compare, ops).succeeded:
                self._check_fence(fence)
                return start  # a renewal touched one meanwhile: the next round finishes
        return len(due)

    # ------------------------------------------------------------------ migration

    def snapshot(self) -> Snapshot:
        at = self.etcd.revision()  # every range below reads the store as of this revision

        def docs(*parts: object) -> list[tuple[str, dict[str, Any]]]:
            prefix = self._k(*parts, "")
            kvs = self.etcd.range(prefix, prefix=True, revision=at).kvs
            return [(bytes(kv.key)[len(prefix) :].decode(), codec.loads(kv.value, "snapshot"))
                    for kv in kvs]  # fmt: skip

        meta_prefix = self._k("meta", "")
        meta = {
            bytes(kv.key)[len(meta_prefix) :].decode(): kv.value.decode()
            for kv in self.etcd.range(meta_prefix, prefix=True, revision=at).kvs
        }
        objects = []
        objects_prefix = self._k("objects", "")
        for kv in self.etcd.range(objects_prefix, prefix=True, revision=at).kvs:
            kind, _, key = bytes(kv.key)[len(objects_prefix) :].decode().partition("/")
            objects.append(Record(kind, key, kv.value.decode(), int(kv.mod_revision)))
        generation = self.etcd.range(self._k("internal", "policy_generation"), revision=at).kvs
        ca = self.etcd.range(self._k("ca"), revision=at).kvs
        return Snapshot(
            meta=meta,
            tokens=sorted(
                (codec.token_row(d) for _, d in docs("tokens")), key=lambda t: t.created_at
            ),
            nodes=sorted(
                (codec.node_row(d) for _, d in docs("nodes")), key=lambda n: (n.instance_id, n.slot)
            ),
            policies=[codec.policy_row(d) for _, d in docs("policies")],
            policy_generation=int(generation[0].value) if generation else 0,
            objects=sorted(objects, key=lambda r: (r.kind, r.key)),
            ca=codec.ca_material(codec.loads(ca[0].value, "ca")) if ca else None,
        )

    def restore_entries(self, snapshot: Snapshot) -> list[tuple[bytes, bytes]]:
        """Every key and value `restore` writes for `snapshot`."""
        entries = [(self._k("meta", k), v.encode()) for k, v in sorted(snapshot.meta.items())]
        entries.append((self._k("internal", "policy_generation"),
                        str(snapshot.policy_generation).encode()))  # fmt: skip
        if snapshot.ca is not None:
            entries.append((self._k("ca"), codec.dumps(codec.ca_doc(snapshot.ca))))
        for t in snapshot.tokens:
            entries.append((self._k("tokens", t.token_id), codec.dumps(codec.token_doc(t))))
        for n in snapshot.nodes:
            entries.append((self._k("nodes", n.node_id), codec.dumps(codec.node_doc(n))))
            entries += [(key, n.node_id.encode()) for key in self._index_keys(n)]
        for p in snapshot.policies:
            entries.append((self._policy_key(p.version), codec.dumps(codec.policy_doc(p))))
        for r in snapshot.objects:
            entries.append((self._k("objects", r.kind, r.key), r.value.encode()))
        return entries

    def restore(self, snapshot: Snapshot) -> None:
        self.restore_missing(snapshot)

    def restore_missing(self, snapshot: Snapshot) -> int:
        """Write `snapshot`, key by key where absent, in batched transactions. A key already
        holding the same value is skipped, so an interrupted restore can simply run again; a key
        holding anything else (a store in use) refuses the restore before anything is written.
        The number of keys written."""
        entries = self.restore_entries(snapshot)
        held = {
            bytes(kv.key): bytes(kv.value) for kv in self.etcd.range(self._k(""), prefix=True).kvs
        }
        missing = []
        for key, value in entries:
            raw = held.get(key)
            if raw is None:
                missing.append((key, value))
            elif raw != value:
                raise StoreError(
                    f"etcd {self.prefix}: not empty ({key.decode()} differs); restore refused"
                )
        known = {key for key, _ in entries}
        for kind in ("tokens", "nodes", "policies"):
            if any(k.startswith(self._k(kind, "")) and k not in known for k in held):
                raise StoreError(
                    f"etcd {self.prefix}: not empty (it holds {kind}); restore refused"
                )
        for start in range(0, len(missing), _BATCH):
            batch = missing[start : start + _BATCH]
            answer = self.etcd.txn(
                [compare_create(key, 0) for key, _ in batch], [put(k, v) for k, v in batch]
            )
            if not answer.succeeded:
                raise StoreError(f"etcd {self.prefix}: written to during the restore; run it again")
        return len(missing)
