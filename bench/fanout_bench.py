"""Fan-out benchmark: one lispmesh node sending to N peers at once, next to the plain underlay.

One OverlayLab (tests/integration/overlay.py) per data plane: a map-server and xTRs n1..n(N+1),
real `lispmesh node run` processes in netlab namespaces, EIDs 10.1.I.1 on the TUN `lm0`, underlay
RLOCs 10.77.0.(10+I) on one bridge (MTU 1500). n1 is the sender, n2..n(N+1) the receivers. Rows,
measured one after the other in the same invocation:

* underlay 1->N:  N simultaneous one-stream iperf3 clients 10.77.0.11 -> 10.77.0.(10+I), in the
                  first lab (its nodes idle): the lab's ceiling for the same fan-out;
* lispmesh 1->N:  the same through the overlay, EID 10.1.1.1 -> 10.1.I.1 (TUN MTU 1400);
* lispmesh 1->1:  one stream n1 -> n2 through the overlay: the per-stream reference.

iperf3 servers listen on distinct ports (5200+I), one per receiver; every client runs
`iperf3 -c ... -t SECONDS -J` for the same duration, all started together. Per row: the aggregate
Gbit/s (sum of the receivers' goodput), each peer's Gbit/s and share, Jain's fairness index, the
machine's CPU steal (so Gbit/s per CPU core received) and the CPU used by neither the nodes nor
iperf3; per node: the CPU seconds it used during the row (utime+stime, /proc/<pid>/stat), Gbit per
CPU-second (the sender: all Gbit; a receiver: its own), peak RSS (VmHWM; target < 80 MB per node)
and the data plane it runs (`status["xtr"]["dataplane"]`).

Usage (root, from the repository root):
    python3 bench/fanout_bench.py [--peers 8] [--seconds 8] [--json]
                                  [--dataplane auto|c|python|c,python] [--no-single]
Bounded (a watchdog stops it after 230 s); everything started is stopped by pid and every lab
destroyed, also on Ctrl-C, SIGTERM or a failure. The machine is shared and noisy: compare rows of
one run, never against a remembered number.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# overlay_bench puts the repository root on sys.path (netlab, tests.integration.overlay).
from overlay_bench import (
    CLK_TCK,
    LISPMESH_MTU,
    UNDERLAY_MTU,
    BudgetExceeded,
    Resources,
    cpu_stat,
    fmt,
    link_mtu,
    proc_cpu_seconds,
    proc_hwm_kb,
    run,
    wait_for,
)

BUDGET_SECONDS = 230  # the whole run, set-up and tear-down included, stays under 4 minutes
MEMORY_TARGET_MB = 80.0  # per node, under load (the performance issue)
BASE_PORT = 5200  # receiver nI's iperf3 server listens on BASE_PORT + I
DATAPLANES = ("auto", "c", "python")


# ---------------------------------------------------------------------------- results


@dataclass
class Flow:
    peer: str
    dst: str
    port: int
    gbps: float | None = None  # receiver goodput
    gbps_sender: float | None = None
    gbit: float | None = None  # received
    retransmits: int | None = None
    seconds: float | None = None
    share_pct: float | None = None
    error: str | None = None


@dataclass
class NodeUse:
    node: str
    role: str  # "sender", "receiver", "idle" (an xTR not in this row), "map-server"
    dataplane: str | None = None
    cpu_s: float | None = None
    gbit: float | None = None
    gbit_per_cpu_s: float | None = None
    rss_before_mb: float | None = None  # VmRSS right before the row
    rss_after_mb: float | None = None  # VmRSS right after it
    hwm_mb: float | None = None  # VmHWM (peak RSS since the node started) after the row
    kernel_drops: dict[str, int] = field(default_factory=dict)  # see KERNEL_DROPS, during the row


@dataclass
class Row:
    label: str
    kind: str  # "underlay" or "lispmesh"
    dataplane: str | None  # as requested (XtrSpec.dataplane)
    dataplane_used: str | None = None  # as the nodes report it
    streams: int = 0
    mtu: int | None = None
    status: str = "ok"
    flows: list[Flow] = field(default_factory=list)
    aggregate_gbps: float | None = None  # sum of the receivers' goodput
    aggregate_gbps_wall: float | None = None  # all bytes / (first client start .. last end)
    jain: float | None = None
    min_share_pct: float | None = None
    max_share_pct: float | None = None
    retransmits: int | None = None
    start_skew_ms: float | None = None
    wall_s: float | None = None
    steal_pct: float | None = None
    cpu_busy_pct: float | None = None
    other_cpu_pct: float | None = None
    cores_received: float | None = None
    gbps_per_core_received: float | None = None
    sender_cpu_s: float | None = None
    receivers_cpu_s: float | None = None
    gbit_per_cpu_s_sender: float | None = None
    gbit_per_cpu_s_receivers: float | None = None
    gbit_per_cpu_s_nodes: float | None = None  # sender + receivers
    max_hwm_mb: float | None = None
    max_hwm_node: str | None = None
    kernel_drops: dict[str, int] = field(default_factory=dict)  # summed over the xTR namespaces
    nodes: list[NodeUse] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def jain_index(values: list[float]) -> float | None:
    square_sum = sum(v * v for v in values)
    if not values or square_sum <= 0:
        return None
    return sum(values) ** 2 / (len(values) * square_sum)


def proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def mb(kb: int) -> float:
    return round(kb / 1024, 1)


# Kernel counters of an xTR's namespace that lose overlay packets outside lispmesh's own drop
# counters: UDP datagrams dropped for a full socket buffer (receive, send) and packets the TUN
# dropped (tx: the kernel -> lispmesh queue was full; rx: lispmesh's writes the kernel refused).
KERNEL_DROPS = ("udp_rcvbuf_errors", "udp_sndbuf_errors", "tun_tx_dropped", "tun_rx_dropped")


def kernel_counters(ns: str) -> dict[str, int] | None:
    stats = "/sys/class/net/lm0/statistics"
    out = run(["cat", "/proc/net/snmp", f"{stats}/tx_dropped", f"{stats}/rx_dropped"], 5, ns)
    lines = out.stdout.splitlines()
    udp = [line.split()[1:] for line in lines if line.startswith("Udp:")]
    if out.returncode != 0 or len(udp) < 2 or len(lines) < 2:
        return None
    values = dict(zip(udp[0], udp[1], strict=False))
    try:
        return {
            "udp_rcvbuf_errors": int(values["RcvbufErrors"]),
            "udp_sndbuf_errors": int(values["SndbufErrors"]),
            "tun_tx_dropped": int(lines[-2]),
            "tun_rx_dropped": int(lines[-1]),
        }
    except (KeyError, ValueError):
        return None


# ---------------------------------------------------------------------------- measuring


@dataclass
class Target:
    peer: str
    ns: str
    dst: str
    port: int


def parse_iperf(text: str) -> dict[str, Any]:
    start = text.find("{")
    if start < 0:
        raise ValueError(text.strip()[-200:] or "no output")
    report, _ = json.JSONDecoder().raw_decode(text[start:])
    if "end" not in report or "sum_received" not in report["end"]:
        raise ValueError(str(report.get("error", "no end report")))
    return report


def measure_fanout(
    row: Row,
    res: Resources,
    sender_ns: str,
    targets: list[Target],
    seconds: int,
    nodes: dict[str, tuple[int, str, str | None]],  # name -> (pid, role, dataplane)
    netns_of: dict[str, str],  # xTR name -> its namespace (for KERNEL_DROPS)
    workdir: Path,
) -> None:
    """len(targets) simultaneous one-stream iperf3 clients from sender_ns; CPU and memory of
    `nodes` and the machine's steal over the run."""
    tag = row.label.replace(" ", "-").replace(">", "")
    servers = [
        res.popen(
            t.ns,
            ["iperf3", "-s", "-1", "-p", str(t.port)],
            workdir / f"iperf3-server-{tag}-{t.peer}.log",
        )
        for t in targets
    ]
    clients = []
    try:
        for t in targets:
            wait_for(
                lambda t=t: (
                    f":{t.port}" in run(["ss", "-Hltn", "sport", f"= :{t.port}"], 5, t.ns).stdout
                ),
                10,
                f"the iperf3 server of {t.peer} to listen",
            )
        kern0 = {n: kernel_counters(ns) for n, ns in netns_of.items()}
        rss0 = {n: proc_rss_kb(pid) for n, (pid, _, _) in nodes.items()}
        cpu0 = {n: proc_cpu_seconds(pid) for n, (pid, _, _) in nodes.items()}
        stat0 = cpu_stat()
        logs = []
        starts = []
        for t in targets:
            log = workdir / f"iperf3-client-{tag}-{t.peer}.json"
            logs.append(log)
            starts.append(time.monotonic())
            clients.append(
                res.popen(
                    sender_ns,
                    ["iperf3", "-c", t.dst, "-p", str(t.port), "-t", str(seconds), "-J"],
                    log,
                )
            )
        deadline = time.monotonic() + seconds + 30
        for proc in clients:
            with contextlib.suppress(Exception):
                proc.wait(max(0.1, deadline - time.monotonic()))
        end = time.monotonic()
        stat1 = cpu_stat()
        cpu1 = {}
        for n, (pid, _, _) in nodes.items():
            try:
                cpu1[n] = proc_cpu_seconds(pid)
            except OSError:
                row.notes.append(f"node {n} (pid {pid}) exited during the run")
        rss1 = {n: proc_rss_kb(pid) for n, (pid, _, _) in nodes.items() if n in cpu1}
        hwm1 = {n: proc_hwm_kb(pid) for n, (pid, _, _) in nodes.items() if n in cpu1}
        kern1 = {n: kernel_counters(ns) for n, ns in netns_of.items()}
    finally:
        for proc in clients + servers:
            res.stop(proc, timeout=2.0)

    row.streams = len(targets)
    row.start_skew_ms = round(1000 * (starts[-1] - starts[0]), 1)
    row.wall_s = round(end - starts[0], 2)
    iperf_cpu = 0.0
    for t, log in zip(targets, logs, strict=True):
        flow = Flow(t.peer, t.dst, t.port)
        row.flows.append(flow)
        try:
            report = parse_iperf(log.read_text(errors="replace"))
        except (OSError, ValueError) as exc:
            flow.error = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            row.notes.append(f"{t.peer}: iperf3 failed: {flow.error}")
            continue
        sent, received = report["end"]["sum_sent"], report["end"]["sum_received"]
        flow.gbps = received["bits_per_second"] / 1e9
        flow.gbps_sender = sent["bits_per_second"] / 1e9
        flow.gbit = received["bytes"] * 8 / 1e9
        flow.retransmits = sent.get("retransmits")
        flow.seconds = round(received.get("seconds", 0.0), 2)
        util = report["end"].get("cpu_utilization_percent", {})
        iperf_cpu += (
            (util.get("host_total", 0.0) + util.get("remote_total", 0.0)) / 100 * flow.seconds
        )
    ok = [f for f in row.flows if f.gbps is not None]
    if not ok:
        raise RuntimeError("no iperf3 client reported")
    rates = [f.gbps or 0.0 for f in row.flows]  # a failed flow counts as 0 (unfair)
    row.aggregate_gbps = sum(rates)
    total_gbit = sum(f.gbit or 0.0 for f in row.flows)
    row.aggregate_gbps_wall = total_gbit / max(end - starts[0], 1e-3)
    for f in row.flows:
        f.share_pct = 100 * (f.gbps or 0.0) / row.aggregate_gbps if row.aggregate_gbps else None
    shares = [f.share_pct for f in row.flows if f.share_pct is not None]
    row.min_share_pct = min(shares, default=None)
    row.max_share_pct = max(shares, default=None)
    row.jain = jain_index(rates)
    row.retransmits = sum(f.retransmits or 0 for f in ok)

    delta = [b - a for a, b in zip(stat0, stat1, strict=True)]
    total = sum(delta) or 1
    steal = delta[7] / total
    ncpu = os.cpu_count() or 1
    row.steal_pct = round(100 * steal, 1)
    row.cpu_busy_pct = round(100 * (total - delta[3] - delta[4] - delta[7]) / total, 1)
    row.cores_received = round(ncpu * (1 - steal), 2)
    row.gbps_per_core_received = row.aggregate_gbps / max(ncpu * (1 - steal), 0.01)
    used = {n: cpu1[n] - cpu0[n] for n in cpu1}
    busy = (total - delta[3] - delta[4] - delta[7]) / CLK_TCK
    row.other_cpu_pct = round(
        max(0.0, 100 * (busy - sum(used.values()) - iperf_cpu) / (total / CLK_TCK)), 1
    )

    by_peer = {f.peer: f for f in row.flows}
    sender_s = receivers_s = 0.0
    for n, (_pid, role, dataplane) in nodes.items():
        use = NodeUse(n, role, dataplane)
        row.nodes.append(use)
        if n not in cpu1:
            continue
        use.cpu_s = round(used[n], 2)
        use.rss_before_mb = mb(rss0[n])
        use.rss_after_mb = mb(rss1[n])
        use.hwm_mb = mb(hwm1[n])
        k0, k1 = kern0.get(n), kern1.get(n)
        if k0 is not None and k1 is not None:
            use.kernel_drops = {k: k1[k] - k0[k] for k in KERNEL_DROPS}
            for k in KERNEL_DROPS:
                row.kernel_drops[k] = row.kernel_drops.get(k, 0) + use.kernel_drops[k]
        if role == "sender":
            sender_s += used[n]
            use.gbit = total_gbit
        elif role == "receiver":
            receivers_s += used[n]
            use.gbit = by_peer[n].gbit if n in by_peer else None
        if row.kind == "lispmesh" and use.gbit is not None and used[n] > 0:
            use.gbit_per_cpu_s = use.gbit / used[n]
    row.sender_cpu_s = round(sender_s, 2)
    row.receivers_cpu_s = round(receivers_s, 2)
    if row.kind == "lispmesh":
        if sender_s > 0:
            row.gbit_per_cpu_s_sender = total_gbit / sender_s
        if receivers_s > 0:
            row.gbit_per_cpu_s_receivers = total_gbit / receivers_s
        if sender_s + receivers_s > 0:
            row.gbit_per_cpu_s_nodes = total_gbit / (sender_s + receivers_s)
    xtrs = [u for u in row.nodes if u.role != "map-server" and u.hwm_mb is not None]
    if xtrs:
        top = max(xtrs, key=lambda u: u.hwm_mb or 0.0)
        row.max_hwm_mb, row.max_hwm_node = top.hwm_mb, top.node


# ---------------------------------------------------------------------------- the labs


def bench_lab(
    dataplane: str,
    with_underlay: bool,
    args: argparse.Namespace,
    res: Resources,
    workdir: Path,
    rows: list[Row],
    say: Any,
    started: float,
) -> None:
    from tests.integration.overlay import OverlayLab, XtrSpec, eid4, rloc

    n = args.peers
    receivers = [f"n{i}" for i in range(2, n + 2)]
    overlay = OverlayLab(
        workdir / f"lab-{dataplane}",
        [XtrSpec(i, dataplane=dataplane) for i in range(1, n + 2)],
        name_prefix="fan",
    )
    res.labs.append(lambda: overlay.__exit__(None, None, None))
    overlay.__enter__()
    assert overlay.lab is not None
    ns = {name: overlay.lab.netns_name(name) for name in ["n1", *receivers]}
    overlay.wait_registered(timeout=45)
    for i in range(2, n + 2):
        overlay.wait_ping("n1", eid4(i), timeout=25)
    say(f"[{time.monotonic() - started:5.1f} s]   lab up: n1 reaches {n} peers through lispmesh")
    status = {name: overlay.status(name) for name in ["n1", *receivers]}
    used = {name: s["xtr"].get("dataplane") for name, s in status.items()}
    pids = {name: int(s["pid"]) for name, s in status.items()}
    ms_status = overlay.try_status("ms")
    used_set = sorted({str(v) for v in used.values()})

    def nodes_for(active: list[str]) -> dict[str, tuple[int, str, str | None]]:
        out: dict[str, tuple[int, str, str | None]] = {}
        for name in ["n1", *receivers]:
            role = "sender" if name == "n1" else ("receiver" if name in active else "idle")
            out[name] = (pids[name], role, used[name])
        if ms_status and "pid" in ms_status:
            out["ms"] = (int(ms_status["pid"]), "map-server", None)
        return out

    plans: list[tuple[str, str, list[Target]]] = []
    if with_underlay:
        plans.append(
            (
                f"underlay 1->{n}",
                "underlay",
                [Target(r, ns[r], rloc(i), BASE_PORT + i) for i, r in enumerate(receivers, 2)],
            )
        )
    plans.append(
        (
            f"lispmesh {dataplane} 1->{n}",
            "lispmesh",
            [Target(r, ns[r], eid4(i), BASE_PORT + i) for i, r in enumerate(receivers, 2)],
        )
    )
    if args.single:
        plans.append(
            (f"lispmesh {dataplane} 1->1", "lispmesh", [Target("n2", ns["n2"], eid4(2), 5202)])
        )
    for label, kind, targets in plans:
        row = Row(label, kind, dataplane if kind == "lispmesh" else None)
        rows.append(row)
        row.dataplane_used = ",".join(used_set) if kind == "lispmesh" else None
        row.mtu = link_mtu(ns["n1"], "lm0" if kind == "lispmesh" else "eth1")
        if kind == "lispmesh" and dataplane != "auto" and used_set != [dataplane]:
            row.notes.append(f"asked for data plane {dataplane}, nodes report {used}")
        say(f"[{time.monotonic() - started:5.1f} s]   {label} ...")
        try:
            measure_fanout(
                row,
                res,
                ns["n1"],
                targets,
                args.seconds,
                nodes_for([t.peer for t in targets]),
                ns,
                workdir,
            )
        except (Exception, AssertionError) as exc:
            row.status = f"error: {str(exc).splitlines()[0][:120] if str(exc) else exc!r}"
            say(f"  {label}: {row.status}")
    lm_rows = [r for r in rows if r.kind == "lispmesh" and r.dataplane == dataplane]
    drops = {}
    errors = {}
    for name in ["n1", *receivers]:
        s = overlay.try_status(name)
        if s is None:
            continue
        # "not-overlay" counts multicast and link-local packets (IPv6 RS, MLD) the kernel sends
        # out of every interface: never data-path losses.
        lost = {k: v for k, v in s["xtr"].get("drops", {}).items() if v and k != "not-overlay"}
        if lost:
            drops[name] = lost
        if s.get("runtime_errors"):
            errors[name] = s["runtime_errors"]
    if lm_rows and drops:
        lm_rows[-1].notes.append(f"xTR drops (whole lab): {drops}")
    if lm_rows and errors:
        lm_rows[-1].notes.append(f"runtime errors: {errors}")


# ---------------------------------------------------------------------------- output


def print_tables(rows: list[Row], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(170, shutil.get_terminal_size().columns))
    ok = [r for r in rows if r.status == "ok"]

    def share_range(r: Row) -> str:
        if r.min_share_pct is None or r.streams < 2:
            return "-"
        return f"{r.min_share_pct:.1f}-{r.max_share_pct:.1f}"

    throughput: list[tuple[str, Any]] = [
        ("row", lambda r: r.label),
        ("data plane", lambda r: r.dataplane_used or "-"),
        ("MTU", lambda r: fmt(r.mtu, "d")),
        ("aggregate Gbit/s", lambda r: fmt(r.aggregate_gbps, ".3f")),
        ("Jain", lambda r: fmt(r.jain, ".3f") if r.streams > 1 else "-"),
        ("share % min-max", share_range),
        ("retr", lambda r: fmt(r.retransmits, "d")),
        ("steal %", lambda r: fmt(r.steal_pct, ".0f")),
        ("busy %", lambda r: fmt(r.cpu_busy_pct, ".0f")),
        ("other CPU %", lambda r: fmt(r.other_cpu_pct, ".0f")),
        ("Gbit/s per core recv'd", lambda r: fmt(r.gbps_per_core_received, ".3f")),
    ]
    efficiency: list[tuple[str, Any]] = [
        ("row", lambda r: r.label),
        ("node CPU s sender", lambda r: fmt(r.sender_cpu_s)),
        ("node CPU s receivers", lambda r: fmt(r.receivers_cpu_s)),
        ("Gbit/CPU-s sender", lambda r: fmt(r.gbit_per_cpu_s_sender, ".3f")),
        ("Gbit/CPU-s receivers", lambda r: fmt(r.gbit_per_cpu_s_receivers, ".3f")),
        ("Gbit/CPU-s all nodes", lambda r: fmt(r.gbit_per_cpu_s_nodes, ".3f")),
        (
            "peak RSS max MB",
            lambda r: "-" if r.max_hwm_mb is None else f"{r.max_hwm_mb:.1f} ({r.max_hwm_node})",
        ),
        ("UDP buf drops", lambda r: kernel_pair(r, "udp_rcvbuf_errors", "udp_sndbuf_errors")),
        ("TUN drops", lambda r: kernel_pair(r, "tun_tx_dropped", "tun_rx_dropped")),
    ]

    def show(title: str, columns: list[tuple[str, Any]]) -> None:
        table = Table(title=title)
        for name, _ in columns:
            table.add_column(
                name,
                justify="left" if name in ("row", "data plane") else "right",
                no_wrap=name == "row",
            )
        for r in rows:
            if r.status == "ok":
                table.add_row(*(get(r) for _, get in columns))
            else:
                table.add_row(r.label, r.status, *([""] * (len(columns) - 2)))
        console.print(table)

    show(
        f"fan-out 1->{args.peers}, one TCP stream per peer, {args.seconds} s, {os.cpu_count()} "
        "CPUs: throughput (aggregate = sum of the receivers' iperf3 goodput; per core recv'd = "
        "aggregate / (CPUs x (1 - steal)))",
        throughput,
    )
    show(
        "efficiency: CPU seconds of the lispmesh node processes during the row, Gbit moved per "
        "CPU-second (sender: all Gbit over its CPU-s; receivers: all Gbit over their summed "
        f"CPU-s), peak RSS (VmHWM) of the xTRs, target < {MEMORY_TARGET_MB:.0f} MB per node; "
        "kernel drops in the xTR namespaces: UDP socket buffer full rcv/snd, TUN tx/rx dropped",
        efficiency,
    )

    fan = [r for r in ok if r.streams > 1]
    if fan:
        peers = Table(title="each peer's share (receiver goodput, Gbit/s and % of the row)")
        peers.add_column("peer")
        for r in fan:
            peers.add_column(f"{r.label} Gbit/s", justify="right")
            peers.add_column("%", justify="right")
            peers.add_column("retr", justify="right")
        for i, flow in enumerate(fan[0].flows):
            cells = [flow.peer]
            for r in fan:
                f = r.flows[i] if i < len(r.flows) else None
                if f is None or f.error:
                    cells += ["failed" if f else "-", "", ""]
                else:
                    cells += [fmt(f.gbps, ".3f"), fmt(f.share_pct, ".1f"), fmt(f.retransmits, "d")]
            peers.add_row(*cells)
        console.print(peers)

    lm = [r for r in ok if r.kind == "lispmesh" and r.streams > 1]
    if lm:
        nodes = Table(
            title=(
                "lispmesh nodes during the fan-out (CPU s = utime+stime during the row; Gbit/CPU-s:"
                f" sender all Gbit, receiver its own; peak RSS = VmHWM, target < "
                f"{MEMORY_TARGET_MB:.0f} MB)"
            )
        )
        nodes.add_column("node")
        nodes.add_column("role")
        for r in lm:
            for name in ("data plane", "CPU s", "Gbit/CPU-s", "RSS before MB", "peak RSS MB"):
                nodes.add_column(
                    f"{r.dataplane}: {name}" if name == "data plane" else name, justify="right"
                )
        for i, use in enumerate(lm[0].nodes):
            cells = [use.node, use.role]
            for r in lm:
                u = r.nodes[i] if i < len(r.nodes) else NodeUse(use.node, use.role)
                peak = "-" if u.hwm_mb is None else f"{u.hwm_mb:.1f}"
                if u.hwm_mb is not None and u.hwm_mb >= MEMORY_TARGET_MB:
                    peak += " OVER"
                cells += [
                    u.dataplane or "-",
                    fmt(u.cpu_s),
                    fmt(u.gbit_per_cpu_s, ".3f"),
                    fmt(u.rss_before_mb, ".1f"),
                    peak,
                ]
            nodes.add_row(*cells)
        console.print(nodes)

    for r in rows:
        for note in r.notes:
            print(f"  {r.label}: {note}")
    for r in ok:
        lossy = {
            u.node: {k: v for k, v in u.kernel_drops.items() if v}
            for u in r.nodes
            if any(u.kernel_drops.values())
        }
        if lossy:
            print(f"  {r.label}: kernel drops per node: {lossy}")
    for r in lm:
        print(
            f"memory ({r.label}): peak RSS per xTR max {fmt(r.max_hwm_mb, '.1f')} MB "
            f"({r.max_hwm_node}) -> "
            f"{memory_verdict(r)} the {MEMORY_TARGET_MB:.0f} MB per-node target"
        )
    skews = [r.start_skew_ms for r in ok if r.streams > 1 and r.start_skew_ms is not None]
    if skews:
        print(
            f"the {args.peers} clients of a row started within {max(skews):.0f} ms of each other; "
            f"underlay rows run in the first lab with its nodes idle (MTU {UNDERLAY_MTU} vs "
            f"lispmesh's {LISPMESH_MTU})"
        )
    under = next((r for r in ok if r.kind == "underlay"), None)
    for r in lm:
        single = next(
            (
                x
                for x in ok
                if x.kind == "lispmesh" and x.streams == 1 and x.dataplane == r.dataplane
            ),
            None,
        )
        parts = []
        if under and under.aggregate_gbps:
            parts.append(f"{100 * (r.aggregate_gbps or 0) / under.aggregate_gbps:.1f}% of underlay")
        if single and single.aggregate_gbps:
            parts.append(f"{(r.aggregate_gbps or 0) / single.aggregate_gbps:.2f}x its 1->1 stream")
        if parts:
            print(f"{r.label}: {', '.join(parts)}")


def kernel_pair(r: Row, a: str, b: str) -> str:
    if not r.kernel_drops:
        return "-"
    return f"{r.kernel_drops.get(a, 0)}/{r.kernel_drops.get(b, 0)}"


def memory_verdict(r: Row) -> str:
    if r.max_hwm_mb is None:
        return "unknown against"
    return "under" if r.max_hwm_mb < MEMORY_TARGET_MB else "OVER"


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peers", type=int, default=8, help="receivers (1..12, default 8)")
    parser.add_argument(
        "--seconds", type=int, default=8, help="iperf3 duration per row (1..20, default 8)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document instead of tables"
    )
    parser.add_argument(
        "--dataplane",
        default="auto",
        help="the nodes' `dataplane`: auto, c or python, or a comma-separated list "
        "(one lab each, side by side; default auto)",
    )
    parser.add_argument(
        "--no-single",
        dest="single",
        action="store_false",
        help="skip the 1->1 lispmesh reference row",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.peers <= 12:
        parser.error("--peers must be within 1..12")
    if not 1 <= args.seconds <= 20:
        parser.error("--seconds must be within 1..20 (the whole run stays under 4 minutes)")
    dataplanes = [d.strip() for d in args.dataplane.split(",") if d.strip()]
    if not dataplanes or any(d not in DATAPLANES for d in dataplanes):
        parser.error(f"--dataplane: use {', '.join(DATAPLANES)} or a comma-separated list")
    if len(dataplanes) != len(set(dataplanes)):
        parser.error("--dataplane: each data plane once")
    if os.geteuid() != 0:
        print("fanout_bench: needs root (network namespaces, TUN devices)", file=sys.stderr)
        return 2
    if shutil.which("iperf3") is None:
        print("fanout_bench: iperf3 is not installed (apt-get install iperf3)", file=sys.stderr)
        return 2
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print

    res = Resources()
    workdir = Path(tempfile.mkdtemp(prefix="fanout-bench-"))
    rows: list[Row] = []
    started = time.monotonic()
    main_pid = os.getpid()

    def on_signal(sig: int, _frame: Any) -> None:
        if os.getpid() != main_pid:
            os._exit(128 + sig)  # a child forked by a library (pyroute2): never raise in it
        if sig == signal.SIGALRM:
            raise BudgetExceeded(f"the benchmark ran past its {BUDGET_SECONDS} s budget")
        raise KeyboardInterrupt

    old_handlers = {
        sig: signal.signal(sig, on_signal)
        for sig in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT)
    }
    watchdog = threading.Timer(
        BUDGET_SECONDS,
        lambda: signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGALRM),
    )
    watchdog.daemon = True
    watchdog.start()
    interrupted: BaseException | None = None
    try:
        for k, dataplane in enumerate(dataplanes):
            say(f"[{time.monotonic() - started:5.1f} s] lab: 1 + {args.peers} xTRs, {dataplane}")
            try:
                bench_lab(dataplane, k == 0, args, res, workdir, rows, say, started)
            except (Exception, AssertionError) as exc:
                text = str(exc).splitlines()[0][:160] if str(exc) else repr(exc)
                rows.append(
                    Row(f"lispmesh {dataplane}", "lispmesh", dataplane, status=f"error: {text}")
                )
                say(f"  lab {dataplane}: error: {text}")
            finally:
                res.cleanup()  # one lab is gone before the next one is built
    except (KeyboardInterrupt, BudgetExceeded) as exc:
        interrupted = exc
    finally:
        watchdog.cancel()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            res.cleanup()
            shutil.rmtree(workdir, ignore_errors=True)
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
    if interrupted is not None:
        say(f"interrupted ({str(interrupted) or 'Ctrl-C or SIGTERM'}): all stopped and removed")
        if isinstance(interrupted, KeyboardInterrupt):
            return 130

    elapsed = round(time.monotonic() - started, 1)
    if args.json:
        print(
            json.dumps(
                {
                    "machine": {
                        "cpus": os.cpu_count(),
                        "kernel": platform.release(),
                        "python": platform.python_version(),
                    },
                    "settings": {
                        "peers": args.peers,
                        "seconds": args.seconds,
                        "dataplanes": dataplanes,
                        "underlay_mtu": UNDERLAY_MTU,
                        "memory_target_mb": MEMORY_TARGET_MB,
                    },
                    "rows": [asdict(r) for r in rows],
                    "memory": {
                        r.label: {
                            "max_hwm_mb": r.max_hwm_mb,
                            "node": r.max_hwm_node,
                            "under_target": (
                                None if r.max_hwm_mb is None else r.max_hwm_mb < MEMORY_TARGET_MB
                            ),
                        }
                        for r in rows
                        if r.kind == "lispmesh" and r.status == "ok"
                    },
                    "elapsed_s": elapsed,
                },
                indent=2,
            )
        )
        return 0 if interrupted is None else 1
    print()
    print_tables(rows, args)
    print(f"elapsed {elapsed:.0f} s")
    return 0 if interrupted is None else 1


if __name__ == "__main__":
    sys.exit(main())
