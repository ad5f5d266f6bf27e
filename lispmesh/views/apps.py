"""Workloads for people: `app ls` (one row each) and `app inspect` (one workload in full)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

COLOURS = {"RUNNING": "green", "BROKEN": "red", "FAILED": "red", "HALTED": "yellow"}


def workloads(rows: list[dict[str, Any]], console: Console) -> None:
    if not rows:
        console.print("no workloads on this node")
        return
    table = Table("name", "kind", "state", "restarts", "eids", "image", "last error")
    for row in rows:
        colour = COLOURS.get(row["state"], "")
        state = f"[{colour}]{row['state']}[/{colour}]" if colour else row["state"]
        table.add_row(row["name"], row["kind"], state, str(row["restarts"]),
                      " ".join(row["eids"]), row["image"], row["last_error"])  # fmt: skip
    console.print(table)


def workload(doc: dict[str, Any], console: Console) -> None:
    keys = ["name", "kind", "state", "desired", "restarts", "purges", "eids", "labels", "image",
            "digest", "args", "ports", "resources", "runtime", "usage", "last_error",
            "retry_at"]  # fmt: skip
    table = Table(show_header=False, box=None)
    for key in keys:
        if key in doc and doc[key] not in (None, "", [], {}):
            value = doc[key]
            if isinstance(value, list):
                value = " ".join(str(v) for v in value)
            elif isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            table.add_row(key, str(value))
    console.print(table)
