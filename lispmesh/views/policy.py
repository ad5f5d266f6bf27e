"""Policy for people: `policy explain`, `policy show`, and the policy part of
`controller node describe` (per-rule counters and the flow log a node reported)."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

PROTOCOLS = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}


def explanation(reply: Any, console: Console) -> None:
    """`policy explain`: the verdict, the deciding rule, and why the earlier rules did not."""
    color = "green" if reply.verdict == "allow" else "red"
    port = f"/{reply.port}" if reply.port else ""
    console.print(
        f"{reply.src} -> {reply.dst} {reply.protocol}{port} (instance-id {reply.instance_id}): "
        f"[bold {color}]{reply.verdict}[/bold {color}]"
        + (f" by rule {reply.rule!r} (line {reply.line})" if reply.rule else ""),
        highlight=False,
    )
    console.print(f"why: {reply.reason}", highlight=False)
    if reply.skipped:
        table = Table("line", "rule", "not matched because", title="earlier rules")
        for s in reply.skipped:
            table.add_row(str(s.line), s.rule, s.why)
        console.print(table)


def applied(state: Any, console: Console) -> None:
    """`policy show`: the applied version and how many rules each node got."""
    if not state.installed:
        console.print("no policy applied: every node allows everything")
        return
    console.print(
        f"policy v{state.version} ({state.filename}) applied {state.applied_at} by "
        f"{state.applied_by}; generation {state.generation}",
        highlight=False,
    )
    table = Table("node", "instance-id", "egress rules", "ingress rules", title="compiled")
    for n in state.nodes:
        table.add_row(n.node, str(n.instance_id), str(n.egress_rules), str(n.ingress_rules))
    console.print(table)


def node_policy_lines(status: dict[str, Any]) -> list[str]:
    """The policy section of a node's last status report, as lines (empty if none)."""
    text = status.get("policy_json") or ""
    if not text:
        return []
    try:
        policy = json.loads(text)
    except ValueError:
        return []
    if not policy.get("installed"):
        return ["policy: none installed (allow everything)"]
    lines = [
        f"policy: v{policy.get('version')} enforced by {policy.get('enforced_by', '?')}, "
        f"{policy.get('flows', 0)} live flow(s), default deny"
    ]
    for direction, rules in (policy.get("rules") or {}).items():
        for r in rules:
            lines.append(
                f"  {direction:7} rule {r.get('id'):>3} {r.get('name')} ({r.get('action')}): "
                f"{r.get('flows', 0)} flows, {r.get('packets', 0)} packets, "
                f"{r.get('bytes', 0)} bytes"
            )
    for direction, c in (policy.get("default_deny") or {}).items():
        lines.append(f"  {direction:7} default deny: {c.get('packets', 0)} packets")
    log = policy.get("flow_log") or []
    if log:
        lines.append(f"flow log (last {min(len(log), 10)} of {len(log)}):")
    for e in log[-10:]:
        proto = PROTOCOLS.get(e.get("protocol"), str(e.get("protocol")))
        port = f":{e.get('dport')}" if proto in ("tcp", "udp") else ""
        lines.append(
            f"  {e.get('direction', ''):7} {e.get('verdict', ''):5} {e.get('src')} -> "
            f"{e.get('dst')}{port} {proto} by {e.get('rule')} ({e.get('age')} s ago)"
        )
    return lines
