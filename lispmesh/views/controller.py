"""The controller's records for people: join tokens, nodes, one node in detail (the admin
commands' --json output is for scripts; the topology is lispmesh/views/topology.py)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from lispmesh.views.policy import node_policy_lines


def tokens(records: Iterable[Any], console: Console) -> None:
    """`controller token list` (never a secret)."""
    table = Table("token", "state", "uses", "expires", "tags", "description", title="join tokens")
    for t in records:
        table.add_row(
            f"lmj1.{t.token_id}…",
            t.state,
            f"{t.uses}/{t.max_uses}",
            t.expires_at,
            ",".join(t.tags),
            t.description,
        )
    console.print(table)


def nodes(records: Iterable[Any], console: Console) -> None:
    """`controller node list`."""
    table = Table(
        "name", "id", "state", "identity", "EID prefixes", "RLOCs", "config", "last seen",
        "cert until",
        title="nodes",
    )  # fmt: skip
    for n in records:
        rlocs = ", ".join(f"{u.address} ({u.interface})" for u in n.uplinks) or "-"
        table.add_row(
            n.name,
            n.node_id,
            n.state,
            _identity(n),
            "\n".join(n.eid_prefixes),
            rlocs,
            f"v{n.applied_version}/v{n.config_version}",
            n.last_seen or "-",
            n.cert_not_after or "-",
        )
    console.print(table)


def _identity(n: Any) -> str:
    """Where the node's key lives and, for a TPM node, its last attestation (with the reason)."""
    if n.identity != "tpm":
        return n.identity or "file"
    return f"tpm, attestation {n.attestation or '-'}"


def node_detail(detail: Any, console: Console) -> None:
    """`controller node describe`: its record, certificate, last status and policy counters."""
    n = detail.node
    console.print(f"[bold]{n.name}[/bold] ({n.node_id})  state: {n.state}  iid {n.instance_id}")
    console.print(f"EIDs: {', '.join(n.eid_prefixes)}   tags: {', '.join(n.tags) or '-'}")
    console.print(
        f"enrolled {n.enrolled_at}" + (f", revoked {n.revoked_at}" if n.revoked_at else "")
    )
    console.print(
        f"identity: {_identity(n)}"
        + (f" at {n.attested_at}" if n.attested_at else "")
        + (f"   EK issuer: {n.ek_subject}" if n.ek_subject else "")
    )
    if n.ek_certificate_subject:
        console.print(f"EK certificate: {n.ek_certificate_subject}")
    console.print(
        f"certificate sha256 {detail.certificate_fingerprint}, "
        f"valid until {detail.certificate_not_after}"
    )
    console.print(
        f"config: applied v{n.applied_version} of v{n.config_version}"
        + (f"  [red]error: {detail.apply_error}[/red]" if detail.apply_error else "")
    )
    status = json.loads(detail.status_json or "{}")
    for u in status.get("uplinks", []):
        console.print(
            f"uplink {u.get('interface', '?')}: {u.get('address')} "
            f"{'up' if u.get('up') else 'DOWN'}"
        )
    peers = [p.get("name", "?") for p in status.get("peers", [])]
    console.print(
        f"peers: {', '.join(peers) or '-'}   map-cache: {status.get('map_cache_size', 0)}"
    )
    metrics = json.loads(detail.metrics_json or "{}")
    if metrics:
        console.print(
            f"cpu {metrics.get('cpu_seconds', 0):.1f} s, "
            f"rss {int(metrics.get('rss_bytes', 0)) >> 20} MiB"
        )
    for line in node_policy_lines(status):
        console.print(line, highlight=False, markup=False)
