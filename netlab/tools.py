"""`tools link` / `tools netem`: show and change a link's state, rate, delay and loss.

Rate limiting uses the tbf qdisc, delay/jitter/loss the netem qdisc, both on the egress of one
link end (like containerlab's `tools netem`). Kernels without sch_netem (such as the project's CI
machines) get one clear error for delay and loss; rate and state still work.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from typing import Any

from netlab import links, netns
from netlab.errors import NetemUnavailable, NetlabError
from netlab.model import Endpoint, Topology

_RATE_UNITS = {
    "bit": 1,
    "kbit": 10**3,
    "mbit": 10**6,
    "gbit": 10**9,
    "tbit": 10**12,
    "bps": 8,
    "kbps": 8 * 10**3,
    "mbps": 8 * 10**6,
    "gbps": 8 * 10**9,
}


def parse_rate(text: str) -> int:
    """A rate in bit/s: "10mbit", "500kbit", "1gbit", or a bare number of kbit/s (containerlab)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m:
        raise NetlabError(f"'{text}' is not a rate (e.g. 10mbit, 500kbit, or kbit/s as a number)")
    value, unit = float(m.group(1)), m.group(2).lower()
    if unit == "":
        return int(value * 1000)
    if unit not in _RATE_UNITS:
        raise NetlabError(f"unknown rate unit '{unit}' (use {', '.join(_RATE_UNITS)})")
    return int(value * _RATE_UNITS[unit])


def _check_time(text: str, what: str) -> str:
    if not re.fullmatch(r"\d+(\.\d+)?(us|ms|s)?", text):
        raise NetlabError(f"--{what} '{text}' is not a duration (e.g. 50ms)")
    return text if text[-1] in "smu" else f"{text}ms"


def _check_loss(text: str) -> str:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)%?", text)
    if not m or float(m.group(1)) > 100:
        raise NetlabError(f"--loss '{text}' is not a percentage (e.g. 1%)")
    return f"{m.group(1)}%"


@dataclass
class Target:
    node: str
    ns: str | None
    ifname: str


def find_endpoint(topo: Topology, spec: str) -> tuple[Endpoint, Endpoint]:
    """The endpoint `node:iface` and its peer."""
    if spec.count(":") != 1:
        raise NetlabError(f"endpoint '{spec}' must be written node:interface (e.g. r1:eth1)")
    node, iface = spec.split(":")
    for lk in topo.links:
        for ep, peer in ((lk.a, lk.z), (lk.z, lk.a)):
            if ep.node == node and iface in (ep.iface, ep.ifname):
                return ep, peer
    raise NetlabError(f"lab '{topo.name}' has no link on {spec}")


def target(topo: Topology, node: str, iface: str) -> Target:
    ep, _ = find_endpoint(topo, f"{node}:{iface}")
    ns = topo.ns_of(ep.node)
    if ns is not None and not netns.exists(ns):
        raise NetlabError(f"lab '{topo.name}' is not deployed (no namespace {ns})")
    return Target(ep.node, ns, ep.ifname)


def _tc(t: Target, *args: str) -> subprocess.CompletedProcess[str]:
    argv = ["tc", *(["-n", t.ns] if t.ns else []), *args]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise NetlabError("the tc command is missing (apt-get install iproute2)") from None


def qdisc(t: Target) -> dict[str, str]:
    """The shaping currently on an interface: rate, delay, jitter, loss (empty strings if none)."""
    res = _tc(t, "qdisc", "show", "dev", t.ifname, "root")
    out = {"qdisc": "", "rate": "", "delay": "", "jitter": "", "loss": ""}
    text = res.stdout.split("\n")[0]
    m = re.match(r"qdisc (\S+)", text)
    if m and m.group(1) in ("tbf", "netem"):
        out["qdisc"] = m.group(1)
        for key, pat in (
            ("rate", r" rate (\S+)"),
            ("delay", r" delay (\S+)"),
            ("jitter", r" delay \S+\s+(\S+)"),
            ("loss", r" loss (\S+)"),
        ):
            mm = re.search(pat, text)
            if mm and not (key == "jitter" and mm.group(1) in ("loss", "rate", "seed")):
                out[key] = mm.group(1)
    return out


def set_link(
    t: Target,
    *,
    state: str | None = None,
    rate: str | None = None,
    delay: str | None = None,
    jitter: str | None = None,
    loss: str | None = None,
    clear: bool = False,
) -> None:
    """Apply state and shaping to one link end; netem is tried first so a kernel without it
    changes nothing."""
    if state is not None:
        if state not in ("up", "down"):
            raise NetlabError(f"--state must be up or down, not '{state}'")
        with netns.ipr(t.ns) as ipr:
            links.set_state(ipr, t.ifname, state == "up")
    if clear:
        _tc(t, "qdisc", "del", "dev", t.ifname, "root")  # "no qdisc" errors are fine here
    wants_netem = any(v not in (None, "", "0", "0ms", "0%") for v in (delay, jitter, loss))
    if wants_netem:
        args = ["qdisc", "replace", "dev", t.ifname, "root", "netem"]
        if delay or jitter:
            args += ["delay", _check_time(delay or "0ms", "delay")]
            if jitter:
                args.append(_check_time(jitter, "jitter"))
        if loss:
            args += ["loss", _check_loss(loss)]
        if rate:
            args += ["rate", f"{parse_rate(rate)}bit"]
        res = _tc(t, *args)
        if res.returncode != 0:
            if "unknown" in res.stderr.lower() or "no such file" in res.stderr.lower():
                raise NetemUnavailable()
            raise NetlabError(f"tc netem on {t.node}:{t.ifname} failed: {res.stderr.strip()}")
    elif rate is not None:
        bits = parse_rate(rate)
        if bits == 0:
            _tc(t, "qdisc", "del", "dev", t.ifname, "root")
            return
        # tbf needs a bucket of at least one MTU-sized packet; 10 ms of traffic keeps high
        # rates accurate without making low rates bursty.
        burst = max(bits // 8 // 100, 4 * 1514)
        res = _tc(
            t,
            "qdisc",
            "replace",
            "dev",
            t.ifname,
            "root",
            "tbf",
            "rate",
            f"{bits}bit",
            "burst",
            str(burst),
            "latency",
            "50ms",
        )
        if res.returncode != 0:
            raise NetlabError(f"tc tbf on {t.node}:{t.ifname} failed: {res.stderr.strip()}")


def show_links(topo: Topology) -> list[dict[str, Any]]:
    """Each link end of a deployed lab: operational state, MTU and shaping."""
    rows = []
    for lk in topo.links:
        for ep, peer in ((lk.a, lk.z), (lk.z, lk.a)):
            ns = topo.ns_of(ep.node)
            row: dict[str, Any] = {
                "endpoint": f"{ep.node}:{ep.iface}",
                "peer": f"{peer.node}:{peer.iface}",
                "ifname": ep.ifname,
                "netns": ns or "",
                "state": "absent",
                "mtu": None,
            }
            if ns is None or netns.exists(ns):
                with netns.ipr(ns) as ipr:
                    for i in links.info(ipr):
                        if i["ifname"] == ep.ifname:
                            row["state"] = str(i["state"]).lower() if i["up"] else "down"
                            row["mtu"] = i["mtu"]
                            row["addresses"] = i["addresses"]
                row.update(qdisc(Target(ep.node, ns, ep.ifname)))
            rows.append(row)
    return rows
