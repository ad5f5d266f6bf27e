"""A lab for people, in containerlab's table shapes: `lab inspect` and `lab tools link show`."""

from __future__ import annotations

import sys
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table


def console() -> Console:
    """When output is not a terminal, wide enough not to truncate containerlab's wide tables."""
    return Console() if sys.stdout.isatty() else Console(width=250)


def containers(rows: list[dict[str, Any]]) -> Table:
    """`lab inspect` (and what deploy prints): one row per node."""
    table = Table(box=box.SQUARE, show_lines=False)
    for col in ("#", "Name", "Container ID", "Image", "Kind", "State", "IPv4 Address",
                "IPv6 Address"):  # fmt: skip
        table.add_column(col)
    for i, r in enumerate(rows, 1):
        table.add_row(str(i), r["name"], r["container_id"], r["image"], r["kind"], r["state"],
                      r["ipv4_address"], r["ipv6_address"])  # fmt: skip
    return table


def links(rows: list[dict[str, Any]]) -> Table:
    """`lab tools link show`: state, MTU and shaping of every link end."""
    table = Table(box=box.SQUARE)
    for col in ("Endpoint", "Peer", "Interface", "State", "MTU", "Rate", "Delay", "Jitter", "Loss"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["endpoint"], r["peer"], r["ifname"], r["state"], str(r["mtu"] or ""),
                      r.get("rate", ""), r.get("delay", ""), r.get("jitter", ""),
                      r.get("loss", ""))  # fmt: skip
    return table
