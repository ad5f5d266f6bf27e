"""Apps for people and scripts: a placement plan and its explanation (`app deploy --dry-run`)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from controller_api.placement import Plan


def plan_data(plan: Plan) -> dict[str, Any]:
    return {
        "app": plan.app,
        "summary": plan.summary(),
        "kept": plan.kept,
        "filtered": dict(plan.filtered.counts),
        "placements": [
            {"replica": p.replica, "node": p.node, "score": p.score.total,
             "parts": dict(p.score.parts), "scored": p.score.candidates,
             "feasible": p.score.feasible, "reason": p.reason, "replaces": p.replaces}
            for p in plan.placements
        ],
        "stops": [
            {"replica": s.replica, "node": s.node, "reason": s.reason,
             "after_replacement": s.after_replacement}
            for s in plan.stops
        ],
        "failures": [
            {"replica": f.replica, "reason": f.reason, "filtered": dict(f.filtered.counts),
             "nodes": f.filtered.total}
            for f in plan.failures
        ],
        "explanation": plan.lines(),
    }  # fmt: skip


def plan_table(plan: Plan, console: Console) -> None:
    console.print(plan.summary(), highlight=False)
    if plan.placements:
        table = Table("replica", "node", "score", "why", title="placements")
        for p in plan.placements:
            parts = ", ".join(f"{name} {value:.2f}" for name, value in p.score.parts)
            moved = f"moved from {p.replaces} ({p.reason}); " if p.replaces else ""
            why = f"{moved}{parts}; best of {p.score.candidates} scored"
            table.add_row(str(p.replica), p.node, f"{p.score.total:.2f}", why)
        console.print(table)
    for line in plan.lines()[1 + len(plan.placements) :]:
        console.print(line, highlight=False)


def app_status_table(status: Any, console: Console) -> None:
    """One app as the controller sees it (`lispmesh app status NAME`)."""
    console.print(
        f"{status.name}: {status.running}/{status.replicas} running, {status.kind} "
        f"{status.image}, version {status.version}" + (" (removed)" if status.removed else ""),
        highlight=False,
    )
    table = Table("replica", "node", "EIDs", "state", "restarts", "exit", "version", "error")
    for r in status.placed:
        exited = str(r.exit_code) if r.HasField("exit_code") else ""
        table.add_row(str(r.replica), r.node, " ".join(r.eids), r.state, str(r.restarts), exited,
                      r.version, r.last_error)  # fmt: skip
    console.print(table)
    for line in status.events[-10:]:
        console.print(f"  {line}", highlight=False)


def apps_table(apps: Any, console: Console) -> None:
    table = Table("app", "replicas", "running", "kind", "version", "nodes")
    for a in apps:
        nodes = ", ".join(sorted({r.node for r in a.placed}))
        table.add_row(a.name, str(a.replicas), str(a.running), a.kind, a.version, nodes)
    console.print(table)
