"""The rows of the store as etcd values: canonical JSON, one document per row.

Bytes (token hashes, CA PEM) are hex or base64 text, prefixes their string form, tuples lists;
`sort_keys` keeps equal rows byte-identical, which an idempotent migration compares.
"""

from __future__ import annotations

import base64
import json
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from controller_api.store.model import CaMaterial, NodeRow, PolicyRow, StoreError, TokenRow


def dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def loads(raw: bytes, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise StoreError(f"etcd key {where}: not a JSON document ({exc})") from None
    if not isinstance(doc, dict):
        raise StoreError(f"etcd key {where}: not a JSON object")
    return doc


def token_doc(t: TokenRow) -> dict[str, Any]:
    return {
        "id": t.token_id, "secret_sha256": t.secret_sha256.hex(), "created_at": t.created_at,
        "expires_at": t.expires_at, "max_uses": t.max_uses, "uses": t.uses, "tags": list(t.tags),
        "description": t.description, "revoked_at": t.revoked_at,
    }  # fmt: skip


def token_row(d: dict[str, Any]) -> TokenRow:
    return TokenRow(
        d["id"], bytes.fromhex(d["secret_sha256"]), d["created_at"], d["expires_at"],
        d["max_uses"], d["uses"], tuple(d["tags"]), d["description"], d["revoked_at"],
    )  # fmt: skip


_NODE_PLAIN = (
    "node_id", "name", "slot", "instance_id", "token_id", "onboarding_fp", "public_key_fp",
    "cert_pem", "cert_fp", "cert_not_after", "site_key", "hostname", "enrolled_at", "revoked_at",
    "config_version", "config_hash", "applied_version", "apply_error", "last_seen", "status",
    "metrics",
)  # fmt: skip


def node_doc(n: NodeRow) -> dict[str, Any]:
    doc = {name: getattr(n, name) for name in _NODE_PLAIN}
    doc.update(eid4=str(n.eid4), eid6=str(n.eid6), tags=list(n.tags))
    return doc


def node_row(d: dict[str, Any]) -> NodeRow:
    plain = {name: d[name] for name in _NODE_PLAIN}
    return NodeRow(
        eid4=IPv4Network(d["eid4"]), eid6=IPv6Network(d["eid6"]), tags=tuple(d["tags"]), **plain
    )


def policy_doc(p: PolicyRow) -> dict[str, Any]:
    return {
        "version": p.version, "text": p.text, "filename": p.filename, "compiled": p.compiled,
        "applied_at": p.applied_at, "applied_by": p.applied_by,
    }  # fmt: skip


def policy_row(d: dict[str, Any]) -> PolicyRow:
    return PolicyRow(
        d["version"], d["text"], d["filename"], d["compiled"], d["applied_at"], d["applied_by"]
    )


def ca_doc(c: CaMaterial) -> dict[str, Any]:
    return {
        "cert_pem": base64.b64encode(c.cert_pem).decode(),
        "key_pem": base64.b64encode(c.key_pem).decode(),
    }


def ca_material(d: dict[str, Any]) -> CaMaterial:
    return CaMaterial(base64.b64decode(d["cert_pem"]), base64.b64decode(d["key_pem"]))
