"""The local node for people: status (with its peers), map-cache, ping, trace, netcheck.

Each function takes the JSON document the node's control socket returned (the same that
`--json` prints) and prints it with rich.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from lispmesh.topology_model import rtt_text


def _bytes(count: int | None) -> str:
    if count is None:
        return "-"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


def _ago(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f} s ago"


def _up(up: bool) -> Text:
    return Text("up", style="green") if up else Text("DOWN", style="bold red")


def peers_table(peers: list[dict[str, Any]]) -> Table:
    table = Table(
        "peer", "EID", "path", "RLOC in use", "via", "last key exchange", "sent", "received",
        "RTT", title="peers",
    )  # fmt: skip
    for p in peers:
        table.add_row(
            p["name"],
            "\n".join(str(e) for e in p.get("eids", [])) or "-",
            p.get("path") or "inbound only",
            p.get("rloc") or "-",
            p.get("local_rloc") or "-",
            _ago(p.get("last_key_exchange_ago")),
            _bytes(p.get("bytes_sent")) + f" ({p.get('packets_sent', 0)} pkts)",
            _bytes(p.get("bytes_received")) + f" ({p.get('packets_received', 0)} pkts)",
            rtt_text(p.get("rtt_ms")),
        )
    return table


def status(doc: dict[str, Any], console: Console) -> None:
    """`lispmesh status` (= `lispmesh node status`): identity, controller, EIDs, uplinks,
    map-servers, peers, map-cache, drops and recent errors of a running node."""
    agent = doc.get("agent") or {}
    console.print(
        f"[bold]{doc['name']}[/bold]  node id {agent.get('node_id', '-')}  "
        f"roles: {', '.join(doc.get('roles', [])) or '-'}  uptime {doc.get('uptime', 0)} s"
    )
    if "encryption" in doc:
        crypto = "on" if doc["encryption"] else "[red]OFF[/red]"
        auth = "authenticated" if doc.get("authenticated_key_exchange") else "[red]interop[/red]"
        console.print(f"encryption: {crypto} ({auth} key exchange)")
    if agent:
        line = agent.get("controller", "")
        style = "" if agent.get("controller_state") == "connected" else "yellow"
        replicas = agent.get("controller_addresses") or []
        others = f" (of {len(replicas)} replicas)" if len(replicas) > 1 else ""
        console.print(
            Text.assemble(f"controller {agent.get('controller_address')}{others}: ", (line, style))
        )
        if "applied_version" in agent:
            error = agent.get("apply_error")
            console.print(
                f"desired state: v{agent['applied_version']} ({agent.get('config_source', '-')})"
                + (f"  [red]{error}[/red]" if error else "")
            )
        if agent.get("cert_not_after"):
            renewal = agent.get("cert_renewal_error")
            console.print(
                f"certificate: valid until {agent['cert_not_after']}, "
                f"renews at {agent.get('cert_renew_at', '-')}"
                + (f"  [yellow]last renewal failed: {renewal}[/yellow]" if renewal else "")
            )
        if "identity" in agent:
            where = agent.get("identity_where", "")
            identity = "TPM" if agent["identity"] == "tpm" else "[yellow]file[/yellow]"
            attestation = agent.get("attestation") or ""
            console.print(
                f"identity: {identity} ({where})"
                + (f"  attestation {attestation}" if attestation else "")
            )
            if agent.get("ek_subject"):
                console.print(f"TPM endorsement key: {agent['ek_subject']}")
    xtr = doc.get("xtr")
    if xtr:
        _xtr(xtr, console)
    elif not doc.get("map_server"):
        console.print("no xTR running (waiting for a desired state?)")
    ms = doc.get("map_server")
    if ms:
        count = ms.get("registration_count", len(ms.get("registrations", [])))
        console.print(f"map-server: {count} registrations")


def _nat(uplink: dict[str, Any]) -> str:
    """ ", behind NAT as 203.0.113.7:40342 (endpoint-independent)" and the like."""
    nat = uplink.get("nat", uplink)  # status nests it, netcheck merges it into the uplink
    state = nat.get("state")
    if state == "nat":
        direct = f", direct: {nat['direct']}" if nat.get("direct") else ""
        mapping = nat.get("mapping") or "mapping unknown"
        return f", behind NAT as {nat['translated']} ({mapping}{direct})"
    if state == "none":
        return ", no NAT"
    if state == "no-answer":
        return ", NAT unknown (no Info-Reply)"
    return ", NAT: checking" if state == "checking" else ""


def _nat_cell(uplink: dict[str, Any]) -> str:
    return _nat(uplink).removeprefix(", ") or "-"


def _xtr(xtr: dict[str, Any], console: Console) -> None:
    console.print(f"EIDs: {', '.join(xtr['eid_prefixes'])}  (instance-id {xtr['instance_id']})")
    uplinks = Table("uplink", "RLOC", "priority", "weight", "state", "NAT", title="uplinks")
    for up in xtr["uplinks"]:
        uplinks.add_row(up.get("interface") or "-", up["address"], str(up.get("priority", "-")),
                        str(up.get("weight", "-")), _up(up["up"]), _nat_cell(up))  # fmt: skip
    console.print(uplinks)
    servers = Table("map-server", "registered", "sent", "notifies", title="map-servers")
    for ms in xtr["map_servers"]:
        registered = "yes" if ms["registered"] else Text("no", style="red")
        sent, notifies = str(ms.get("registers_sent", "-")), str(ms.get("notifies", "-"))
        servers.add_row(ms["address"], registered, sent, notifies)
    console.print(servers)
    console.print(peers_table(xtr.get("peers", [])))
    if "map_cache" in xtr:
        cache = Table("EID prefix", "peer", "RLOC in use", "key-id", "TTL s", title="map-cache")
        for entry in xtr["map_cache"]:
            cache.add_row(entry["prefix"], entry.get("peer") or entry.get("action") or "-",
                          entry.get("in_use") or "-", str(entry.get("key_id") or "-"),
                          str(entry.get("ttl_remaining")))  # fmt: skip
        console.print(cache)
    if xtr.get("drops"):
        drops = Table("reason", "packets", title="drops")
        for reason, count in sorted(xtr["drops"].items()):
            drops.add_row(reason, str(count))
        console.print(drops)
    for error in xtr.get("errors", [])[-5:]:
        console.print(f"[yellow]recent: {error}[/yellow]")


def map_cache(entries: list[dict[str, Any]], console: Console) -> None:
    table = Table("EID prefix", "peer", "TTL", "RLOCs (state, RTT)", "in use", title="map-cache")
    for e in entries:
        rlocs = Text()
        for i, r in enumerate(e.get("rlocs", [])):
            if i:
                rlocs.append("\n")
            rlocs.append(f"{r['address']} p{r['priority']} ")
            rlocs.append_text(_up(r["up"]))
            rlocs.append(f" {rtt_text(r.get('rtt_ms'))}")
        table.add_row(
            e["prefix"],
            e.get("peer") or e.get("action") or "-",
            f"{e['ttl_remaining']:.0f} s",
            rlocs if e.get("rlocs") else Text(e.get("action") or "negative", style="yellow"),
            e.get("in_use") or "-",
        )
    console.print(table)


def ping(doc: dict[str, Any], console: Console) -> None:
    peer = doc.get("peer") or "?"
    console.print(
        f"ping {doc['eid']} ({doc['prefix']}, node {peer}) via {doc.get('path') or 'no path'}, "
        f"RLOC in use {doc.get('rloc_in_use') or '-'}"
    )
    lookup = doc.get("lookup")
    if lookup:
        console.print(
            f"  resolved by map-resolver {lookup['map_resolver']} in {rtt_text(lookup['rtt_ms'])}"
        )
    for p in doc["probes"]:
        mark = " (in use)" if p["in_use"] else ""
        if p["replied"]:
            console.print(
                f"  reply from {p['answered_by']}{mark} via {p['local_rloc']}: seq={p['seq']} "
                f"path={p['path']} time={p['rtt_ms']:.2f} ms"
            )
        else:
            console.print(f"  [red]no reply from {p['rloc']}{mark}: seq={p['seq']}[/red]")
    for r in doc["rlocs"]:
        loss = 100 * (r["sent"] - r["received"]) / max(1, r["sent"])
        stats = (
            f", rtt min/avg/max {r['min_ms']:.2f}/{r['avg_ms']:.2f}/{r['max_ms']:.2f} ms"
            if r["received"]
            else ""
        )
        console.print(
            f"  {r['rloc']}: {r['received']}/{r['sent']} replies, {loss:.0f}% loss{stats}"
        )


def trace(doc: dict[str, Any], console: Console) -> None:
    console.print(f"trace {doc['eid']} ({doc['prefix']}, node {doc.get('peer') or '?'})")
    for hop in doc["hops"]:
        name = hop.get("name") or "-"
        answered = hop.get("answered_by")
        extra = f" (answered by {answered})" if answered and answered != hop.get("rloc") else ""
        time_text = "-" if hop.get("rtt_ms") is None else f"{hop['rtt_ms']:.2f} ms"
        if hop["role"] == "rtr":
            time_text = "relays (its time is in the ETR's)"
        elif hop["role"] != "itr" and hop.get("rtt_ms") is None:
            time_text = "[red]no answer[/red]"
        console.print(
            f"  {hop['hop']}  {hop['role']:<13} {name:<16} {hop.get('rloc') or '-':<22} "
            f"{time_text}{extra}"
        )
    answered = "answered" if doc["reached"] else "did NOT answer"
    console.print(f"  path: {doc.get('path') or 'none'}; the ETR {answered}")


def netcheck(doc: dict[str, Any], console: Console) -> None:
    console.print("[bold]uplinks[/bold]")
    for u in doc["uplinks"]:
        console.print(
            Text.assemble(f"  {u['interface'] or '-'} {u['address']}: ", _up(u["up"]), _nat(u))
        )
    console.print(f"[bold]NAT[/bold]: {doc['nat']['detail']}")
    controller = doc.get("controller")
    if controller:
        state = (
            f"reachable (TCP connect {rtt_text(controller['rtt_ms'])})"
            if controller["reachable"]
            else f"[red]unreachable: {controller['error']}[/red]"
        )
        console.print(
            f"[bold]controller[/bold] {controller['address']}: {state}, session "
            f"{controller.get('state') or '-'}"
        )
    for ms in doc["map_servers"]:
        state = (
            f"answers (Map-Register → Map-Notify {rtt_text(ms['rtt_ms'])})"
            if ms["reachable"]
            else "[red]no Map-Notify[/red]"
        )
        console.print(f"[bold]map-server[/bold] {ms['address']}: {state}")
    if doc.get("map_resolvers"):
        console.print(f"[bold]map-resolvers[/bold]: {', '.join(doc['map_resolvers'])}")
    if doc["problems"]:
        for problem in doc["problems"]:
            console.print(f"[red]problem: {problem}[/red]")
    else:
        console.print("[green]all checks passed[/green]")
