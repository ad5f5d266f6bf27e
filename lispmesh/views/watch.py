"""`lispmesh topology --watch`: the topology table, refreshed in place until Ctrl-C.

A fetch that fails (controller restarting) keeps the last picture and shows the error above it;
the view goes on trying. `iterations` bounds the loop (tests run it in tmux).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

Fetch = Callable[[], dict[str, Any]]
Render = Callable[[dict[str, Any]], RenderableType]


def _frame(
    fetch: Fetch, render: Render, last: RenderableType | None
) -> tuple[RenderableType, RenderableType | None]:
    """(what to show, the last good view)."""
    stamp = time.strftime("%H:%M:%S")
    try:
        view = render(fetch())
    except Exception as exc:  # shown in the view: a watch must survive a controller restart
        warning = Text(f"{stamp} cannot refresh: {exc}", style="bold red")
        return (Group(warning, last) if last is not None else warning), last
    header = Text(f"{stamp} lispmesh topology (Ctrl-C to stop)", style="dim")
    return Group(header, view), view


def watch(
    fetch: Fetch,
    render: Render,
    interval: float,
    iterations: int | None = None,
    console: Console | None = None,
) -> None:
    last: RenderableType | None = None
    done = 0
    with Live(console=console, auto_refresh=False, screen=False) as live:
        while iterations is None or done < iterations:
            frame, last = _frame(fetch, render, last)
            live.update(frame, refresh=True)
            done += 1
            if iterations is not None and done >= iterations:
                break
            time.sleep(interval)
