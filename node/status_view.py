"""Human-readable rendering of a node's status (tables for people; --json is for scripts)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def render_status(status: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    roles = ", ".join(status.get("roles", []))
    console.print(f"[bold]{status['name']}[/bold]  roles: {roles}  uptime: {status['uptime']} s")
    crypto = "on" if status.get("encryption") else "[red]OFF[/red]"
    auth = "authenticated" if status.get("authenticated_key_exchange") else "[red]interop[/red]"
    console.print(f"encryption: {crypto} ({auth} key exchange)")
    agent = status.get("agent")
    if agent:
        state = agent["controller"]
        shown = f"[yellow]{state}[/yellow]" if agent["controller_state"] != "connected" else state
        console.print(f"controller {agent['controller_address']}: {shown}")
        console.print(
            f"desired state: v{agent['applied_version']} ({agent['config_source']})"
            + (f"  [red]{agent['apply_error']}[/red]" if agent["apply_error"] else "")
        )
    xtr = status.get("xtr")
    if xtr:
        console.print(f"EIDs: {', '.join(xtr['eid_prefixes'])}  iid {xtr['instance_id']}")
        uplinks = Table("uplink", "RLOC", "priority", "weight", "state", title="uplinks")
        for up in xtr["uplinks"]:
            state = "up" if up["up"] else "[red]down[/red]"
            uplinks.add_row(up["interface"] or "-", up["address"], str(up["priority"]),
                            str(up["weight"]), state)  # fmt: skip
        console.print(uplinks)
        servers = Table("map-server", "registered", "sent", "notifies", title="map-servers")
        for ms in xtr["map_servers"]:
            servers.add_row(ms["address"], "yes" if ms["registered"] else "[red]no[/red]",
                            str(ms["registers_sent"]), str(ms["notifies"]))  # fmt: skip
        console.print(servers)
        cache = Table("EID prefix", "peer", "RLOC in use", "key-id", "TTL s", title="map-cache")
        for entry in xtr["map_cache"]:
            cache.add_row(entry["prefix"], entry["peer"] or entry["action"] or "-",
                          entry["in_use"] or "-", str(entry["key_id"] or "-"),
                          str(entry["ttl_remaining"]))  # fmt: skip
        console.print(cache)
        if xtr["drops"]:
            drops = Table("reason", "packets", title="drops")
            for reason, count in sorted(xtr["drops"].items()):
                drops.add_row(reason, str(count))
            console.print(drops)
        for error in xtr.get("errors", [])[-5:]:
            console.print(f"[yellow]recent: {error}[/yellow]")
    ms = status.get("map_server")
    if ms:
        count = ms.get("registration_count", len(ms.get("registrations", [])))
        console.print(f"map-server: {count} registrations")
