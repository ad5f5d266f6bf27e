"""On-demand diagnostics of a running xTR, for `lispmesh ping`, `trace` and `netcheck`.

Everything here runs in the node's event loop (control-socket commands) and uses the xTR's own
control plane: RLOC-probes (Map-Request with the P bit) timed by nonce, a Map-Request through the
map-resolver, a Map-Register/Map-Notify exchange with each map-server, and a TCP connect to the
controller. Every wait is bounded; nothing is sent anywhere but to the mesh's own RLOCs,
map-resolvers, map-servers and controller.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from common.errors import LispmeshError
from lisp import Action, MapReply
from lisp.map_cache import MapCacheEntry
from mesh.peer_stats import PATH_DIRECT
from mesh.xtr import Xtr

MAX_COUNT = 100
MAX_TIMEOUT = 10.0


class DiagnosticError(LispmeshError):
    """The request cannot be carried out (one line for the operator)."""


@dataclass
class Answer:
    rloc: str
    rtt: float


def _now(xtr: Xtr) -> float:
    xtr.now = time.monotonic()
    return xtr.now


async def _await_reply(xtr: Xtr, nonce: int | None, sent: float, timeout: float) -> Answer | None:
    """The Map-Reply to `nonce` (who answered, after how long), or None after `timeout`."""
    if nonce is None:
        return None
    future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()

    def arrived(reply: MapReply, source: tuple[str, int]) -> None:
        if not future.done():
            future.set_result(Answer(source[0], time.monotonic() - sent))

    xtr.resolver.reply_waiters[nonce] = arrived
    try:
        return await asyncio.wait_for(future, timeout)
    except TimeoutError:
        return None
    finally:
        xtr.resolver.reply_waiters.pop(nonce, None)


def _parse_eid(text: Any) -> IPv4Address | IPv6Address:
    try:
        return ip_address(str(text))
    except ValueError:
        raise DiagnosticError(f"{text!r} is not an EID address") from None


def _is_local(xtr: Xtr, eid: IPv4Address | IPv6Address) -> bool:
    return any(eid.version == p.version and eid in p for p in xtr.ctx.xcfg.eid_prefixes)


async def _lookup(xtr: Xtr, eid: IPv4Address | IPv6Address, timeout: float) -> dict[str, Any]:
    """Ask the map-resolver about `eid` and time the answer (installs what it learns)."""
    width = 32 if eid.version == 4 else 128
    sent = _now(xtr)
    nonce = xtr.resolver.send_resolve(eid, width)
    answer = await _await_reply(xtr, nonce, sent, timeout)
    resolver = xtr.resolver.last_resolver()
    if nonce is None:
        return {"map_resolver": None, "answered": False, "rtt_ms": None, "answered_by": None}
    return {
        "map_resolver": resolver,
        "answered": answer is not None,
        "rtt_ms": _ms(answer.rtt) if answer else None,
        "answered_by": answer.rloc if answer else None,
    }


def _entry(xtr: Xtr, eid: IPv4Address | IPv6Address) -> MapCacheEntry | None:
    return xtr.path_table.map_cache.lookup(xtr.ctx.iid, eid, _now(xtr))


async def _resolve(
    xtr: Xtr, eid: IPv4Address | IPv6Address, timeout: float
) -> tuple[MapCacheEntry, dict[str, Any] | None]:
    entry = _entry(xtr, eid)
    lookup = None
    if entry is None:
        lookup = await _lookup(xtr, eid, timeout)
        await asyncio.sleep(0)  # the reply's records are installed by now
        entry = _entry(xtr, eid)
    if entry is None and lookup is not None and lookup["answered"]:
        raise DiagnosticError(f"{eid} is not in the mesh (the map-resolver knows no mapping)")
    if entry is None:
        raise DiagnosticError(f"no mapping for {eid} (the map-resolver did not answer in time)")
    if entry.negative:
        action = Action(entry.action).name
        raise DiagnosticError(f"{eid} is not in the mesh (negative mapping: {action})")
    return entry, lookup


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _path_of(xtr: Xtr, entry: MapCacheEntry) -> tuple[str | None, str | None, str | None]:
    """(peer name, RLOC in use, our uplink) for an entry."""
    path = xtr.path_table.paths.get((entry.iid, entry.prefix))
    if path is None:
        return None, None, None
    return path.encap.peer_name, path.remote[0], path.local.key


def _relay_hop(xtr: Xtr, entry: MapCacheEntry) -> list[dict[str, Any]]:
    """The RTR hop when the path goes through one (its time is inside the ETR hop's: the probe
    crosses it both ways)."""
    path = xtr.path_table.paths.get((entry.iid, entry.prefix))
    if path is None or path.via is None:
        return []
    return [{"hop": 3, "role": "rtr", "name": path.via, "rloc": path.remote[0], "rtt_ms": None}]


def _path_name(xtr: Xtr, entry: MapCacheEntry) -> str:
    path = xtr.path_table.paths.get((entry.iid, entry.prefix))
    return f"rtr:{path.via}" if path is not None and path.via is not None else PATH_DIRECT


async def _probe(xtr: Xtr, entry: MapCacheEntry, rloc: str, timeout: float) -> dict[str, Any]:
    local = xtr.ctx.local_for(ip_address(rloc).version)
    sent = _now(xtr)
    nonce = xtr.prober.send_probe(entry, rloc, with_key=False)
    answer = await _await_reply(xtr, nonce, sent, timeout)
    return {
        "rloc": rloc,
        "local_rloc": local.key if local is not None else None,
        "replied": answer is not None,
        "answered_by": answer.rloc if answer else None,
        "rtt_ms": _ms(answer.rtt) if answer else None,
    }


async def ping(xtr: Xtr, request: dict[str, Any]) -> dict[str, Any]:
    """RLOC-probe every RLOC of the EID's mapping `count` times; which answered, how fast."""
    eid = _parse_eid(request.get("eid"))
    count = max(1, min(MAX_COUNT, int(request.get("count", 3))))
    timeout = max(0.05, min(MAX_TIMEOUT, float(request.get("wait", 1.0))))
    interval = max(0.0, min(5.0, float(request.get("interval", 0.2))))
    if _is_local(xtr, eid):
        raise DiagnosticError(f"{eid} is one of this node's own EIDs")
    entry, lookup = await _resolve(xtr, eid, timeout)
    peer, in_use, _ = _path_of(xtr, entry)
    rlocs = [str(r.address) for r in entry.rlocs]
    probes: list[dict[str, Any]] = []
    for seq in range(1, count + 1):
        rounds = await asyncio.gather(*(_probe(xtr, entry, r, timeout) for r in rlocs))
        for result in rounds:
            result.update(seq=seq, in_use=result["rloc"] == in_use, path=PATH_DIRECT)
            probes.append(result)
        if seq < count:
            await asyncio.sleep(interval)
    summary = []
    for rloc in rlocs:
        rtts = [p["rtt_ms"] for p in probes if p["rloc"] == rloc and p["replied"]]
        summary.append(
            {
                "rloc": rloc,
                "in_use": rloc == in_use,
                "sent": count,
                "received": len(rtts),
                "min_ms": min(rtts) if rtts else None,
                "avg_ms": round(sum(rtts) / len(rtts), 3) if rtts else None,
                "max_ms": max(rtts) if rtts else None,
            }
        )
    return {
        "eid": str(eid),
        "prefix": str(entry.prefix),
        "peer": peer,
        "path": PATH_DIRECT if in_use else None,
        "rloc_in_use": in_use,
        "lookup": lookup,
        "probes": probes,
        "rlocs": summary,
        "replies": sum(1 for p in probes if p["replied"]),
    }


async def trace(xtr: Xtr, request: dict[str, Any]) -> dict[str, Any]:
    """The hops towards an EID: this ITR, the map-resolver's answer, any relay, the ETR."""
    eid = _parse_eid(request.get("eid"))
    timeout = max(0.05, min(MAX_TIMEOUT, float(request.get("wait", 1.0))))
    if _is_local(xtr, eid):
        raise DiagnosticError(f"{eid} is one of this node's own EIDs")
    lookup = await _lookup(xtr, eid, timeout)
    await asyncio.sleep(0)
    entry, _ = await _resolve(xtr, eid, timeout)
    peer, in_use, local = _path_of(xtr, entry)
    target = in_use or str(entry.rlocs[0].address)
    probe = await _probe(xtr, entry, target, timeout)
    relay = _relay_hop(xtr, entry)
    hops: list[dict[str, Any]] = [
        {
            "hop": 1,
            "role": "itr",
            "name": xtr.config.name,
            "rloc": local or probe["local_rloc"],
            "rtt_ms": 0.0,
        },
        {
            "hop": 2,
            "role": "map-resolver",
            "name": None,
            "rloc": lookup["map_resolver"],
            "rtt_ms": lookup["rtt_ms"],
            "answered_by": lookup["answered_by"],
        },
        *relay,
        {
            "hop": 3 + len(relay),
            "role": "etr",
            "name": peer,
            "rloc": target,
            "rtt_ms": probe["rtt_ms"],
            "answered_by": probe["answered_by"],
        },
    ]
    return {
        "eid": str(eid),
        "prefix": str(entry.prefix),
        "peer": peer,
        "path": _path_name(xtr, entry) if in_use else None,
        "hops": hops,
        "reached": bool(probe["replied"]),
    }


async def _tcp_check(address: str, timeout: float) -> dict[str, Any]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    started = time.monotonic()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
        return {"address": address, "reachable": False, "rtt_ms": None, "error": reason}
    writer.close()
    return {
        "address": address,
        "reachable": True,
        "rtt_ms": _ms(time.monotonic() - started),
        "error": None,
    }


async def _register_check(xtr: Xtr, key: str, timeout: float) -> dict[str, Any]:
    ms, registration = xtr.registrar.registrations[key]
    before = registration.notify_count
    sent = _now(xtr)
    xtr.registrar.register(ms, registration)
    deadline = sent + timeout
    while registration.notify_count == before and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    answered = registration.notify_count > before and registration.last_notify is not None
    return {
        "address": key,
        "registered": registration.registered,
        "reachable": answered,
        "rtt_ms": _ms(registration.last_notify - sent) if answered else None,  # type: ignore[operator]
    }


async def netcheck(
    xtr: Xtr | None, agent: dict[str, Any] | None, request: dict[str, Any]
) -> dict[str, Any]:
    """Uplinks, NAT, and whether the controller and the map-servers answer."""
    timeout = max(0.05, min(MAX_TIMEOUT, float(request.get("wait", 2.0))))
    problems: list[str] = []
    uplinks: list[dict[str, Any]] = []
    map_servers: list[dict[str, Any]] = []
    nat: dict[str, Any] = {
        "detected": None,
        "method": None,
        "detail": "no xTR: nothing to check",
    }
    if xtr is not None:
        # A fresh Info-Request round on every uplink, answered while the map-servers are checked.
        _now(xtr)
        xtr.nat.recheck()
        for local in xtr.locals:
            uplinks.append({"interface": local.interface, "address": local.key, "up": local.up})
            if not local.up:
                problems.append(f"uplink {local.interface or local.key} is down")
        map_servers = list(
            await asyncio.gather(
                *(_register_check(xtr, k, timeout) for k in xtr.registrar.registrations)
            )
        )
        problems += [f"map-server {m['address']} did not answer" for m in map_servers
                     if not m["reachable"]]  # fmt: skip
        if not any(u["up"] for u in uplinks):
            problems.append("no uplink is up")
        deadline = time.monotonic() + timeout
        while xtr.nat.checking() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for uplink in uplinks:
            _now(xtr)
            uplink.update(xtr.nat.uplink_status(uplink["address"]))
            uplink["direct"] = _direct(uplink)
            if uplink["up"] and uplink["state"] == "no-answer":
                problems.append(
                    f"uplink {uplink['interface'] or uplink['address']}: no map-server answered "
                    "the Info-Requests (NAT unknown)"
                )
        nat = _nat_summary(uplinks, xtr.rtr_client.status())
    controller = None
    if agent is not None and agent.get("controller_address"):
        controller = await _tcp_check(agent["controller_address"], timeout)
        controller["state"] = agent.get("controller_state")
        if not controller["reachable"]:
            problems.append(f"controller {controller['address']}: {controller['error']}")
    return {
        "uplinks": uplinks,
        "nat": nat,
        "controller": controller,
        "map_servers": map_servers,
        "map_resolvers": [str(r) for r in xtr.ctx.xcfg.map_resolvers] if xtr is not None else [],
        "problems": problems,
        "ok": not problems,
    }


def _direct(uplink: dict[str, Any]) -> str:
    """Can peers reach this uplink without a relay? `yes` (no NAT), `hole-punching` (an
    endpoint-independent mapping: reachable once both sides have sent to each other), `no`
    (endpoint-dependent: a new port per peer, only a relay gets through), or `unknown`."""
    if uplink["state"] == "none":
        return "yes"
    if uplink["state"] != "nat":
        return "unknown"
    return {"endpoint-independent": "hole-punching", "endpoint-dependent": "no"}.get(
        uplink["mapping"], "unknown"
    )


def _nat_summary(
    uplinks: list[dict[str, Any]], relay: dict[str, Any] | None = None
) -> dict[str, Any]:
    """NAT over all uplinks: detected if any is behind one; one line saying what was found and,
    behind a NAT, how peers reach us (`relay`: mesh.rtr_client's status)."""
    up = [u for u in uplinks if u["up"]]
    verdicts = [u["behind_nat"] for u in up]
    detected = True if True in verdicts else (False if verdicts and None not in verdicts else None)
    parts = []
    for u in up:
        name = u["interface"] or u["address"]
        if u["state"] == "nat":
            mapping = u["mapping"] or "mapping unknown (one map-server answered)"
            parts.append(f"{name} behind NAT as {u['translated']}, {mapping}")
        elif u["state"] == "none":
            parts.append(f"{name} not behind NAT")
        elif u["state"] == "no-answer":
            parts.append(f"{name}: unknown, no map-server answered the Info-Requests")
        else:
            parts.append(f"{name}: still checking")
    detail = "; ".join(parts) or "no uplink is up"
    relay = relay or {"via": None, "rtrs": []}
    if detected:
        if relay["via"] is not None:
            detail += f"; peers reach us through RTR {relay['via']}"
        elif relay["rtrs"]:
            names = ", ".join(r["name"] for r in relay["rtrs"])
            detail += f" (peers cannot reach a NAT'd uplink: no RTR answered yet: {names})"
        else:
            detail += " (peers cannot reach a NAT'd uplink: no RTR configured; xtr.rtrs, or "
            detail += "controller serve --rtr; hole punching does not exist yet)"
    return {
        "detected": detected,
        "method": "info-request",
        "detail": detail,
        "via_rtr": relay["via"],
        "rtrs": relay["rtrs"],
    }


COMMANDS = ("ping", "trace", "netcheck")


async def run(
    xtr: Xtr | None, status: Callable[[], dict[str, Any]], request: dict[str, Any]
) -> dict[str, Any]:
    """One diagnostic control command; a problem is one line in the reply's `error`."""
    command = request["command"]
    try:
        if command == "netcheck":
            return await netcheck(xtr, status().get("agent"), request)
        if xtr is None:
            return {"error": "this node has no xTR role"}
        if command == "ping":
            return await ping(xtr, request)
        if command == "trace":
            return await trace(xtr, request)
    except DiagnosticError as exc:
        return {"error": str(exc)}
    except (TypeError, ValueError) as exc:
        return {"error": f"bad {command} request: {exc}"}
    return {"error": f"unknown diagnostic {command!r}"}
