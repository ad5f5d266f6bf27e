"""Overlay benchmark: lispmesh side by side with plain veth, wireguard-go, nebula, fastd, openvpn
and tinc, in one run.

Every row is built on the same netlab lab shape: two namespaces `n1` (10.77.0.11) and `n2`
(10.77.0.12) whose `eth1` sits on one underlay bridge, MTU 1500. Per row:

* plain veth:    iperf3 between the two underlay addresses (the ceiling of the lab);
* lispmesh:      tests/integration/overlay.py's OverlayLab (a map-server and two xTRs), iperf3
                 from EID 10.1.1.1 to 10.1.2.1 through the TUN devices `lm0` (MTU 1400, the
                 default `xtr.mtu`);
* wireguard-go:  Debian's userspace wireguard-go in each namespace (the kernel module is missing
                 on our machines), keys set with `wg`, overlay 10.2.0.0/24, MTU 1420 (its default);
* nebula:        Debian's nebula with a CA and host certificates made by nebula-cert, a
                 lighthouse-less static_host_map, overlay 10.3.0.0/24, MTU 1300 (its default);
* fastd:         Debian's fastd in tun mode, method salsa2012+umac, overlay 10.4.0.0/24, MTU 1426;
* openvpn:       OpenVPN 2.6 peer to peer over UDP, TLS with pinned self-signed P-256 certificates,
                 AES-256-GCM, userspace data channel (no DCO), overlay 10.5.0.0/24;
* tinc:          tinc 1.0 router mode, RSA host keys, aes-256-cbc + sha256, overlay 10.6.0.0/24.

Measured the same way on every row: one TCP stream `iperf3 -c ... -t SECONDS -J` (receiver Gbit/s,
retransmits), ping RTT at idle (`ping -c 20 -i 0.05`) and under load (pinging during the stream),
then 8 TCP streams (`-P 8`) and 64-byte UDP payloads at an unlimited rate (packets received per
second), each `--extra-seconds` long; the CPU seconds the tunnel daemons of both ends used during
the iperf3 run (utime+stime from /proc/<pid>/stat) and so Gbit per daemon CPU-second, their peak
RSS (VmHWM), and the machine's CPU steal during the run (from /proc/stat), which gives the
throughput per CPU core actually received (steal on these machines swings from 0 to 90%: compare
rows of one run, never against a remembered number).

The lispmesh row then gets a ratio against the best peer of the run for each figure. Before its
measured stream (so that nothing but the daemons runs during it, as on every other row), a short
separate stream is captured: underlay and TUN packets in n1 (AF_PACKET, with the
virtio-net header so GSO/GRO super-packets are split the way the wire would see them) and checks
the framing rules of the issue: every UDP 4341 datagram is at most 1500 bytes of IP, not an IP
fragment (MF=0, offset 0; DF is reported), starts with a LISP data header whose KK bits are set
(encrypted), and carries exactly one inner packet: its size minus the 36 bytes of LISP + IV + tag
overhead is the size of a packet read from (or written to) the TUN, in the same order.

Usage (root, from the repository root):
    python3 bench/overlay_bench.py [--seconds 10] [--extra-seconds 5] [--json]
                                   [--only lispmesh,wireguard-go]
                                   [--install] [--py-spy DIR]
    python3 bench/overlay_bench.py --against REV [--rounds 2] [--seconds 10]
        the same rows (default: lispmesh) in REV's tree and in this one, alternating, printed
        side by side (bench/tree_compare.py)
Nothing is installed unless --install is given; a missing peer is one line and a skipped row.
Everything started is stopped by pid and every namespace removed, also on Ctrl-C or a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import yaml  # noqa: E402

from lispmesh.waiting import wait_until  # noqa: E402
from netlab import Lab, netns  # noqa: E402

ROWS = ("plain veth", "lispmesh", "wireguard-go", "nebula", "fastd", "openvpn", "tinc")
PEER_ROWS = ROWS[2:]  # the other overlays lispmesh is compared with
UNDERLAY_MTU = 1500
LISPMESH_MTU = 1400  # mesh/config.py xtr.mtu default
WIREGUARD_MTU = 1420  # wireguard-go's default
NEBULA_MTU = 1300  # nebula 1.6's default tun.mtu
FASTD_MTU = 1426  # fastd's default mtu (sized for its worst case, TAP over IPv6)
LISP_OVERHEAD = 8 + 12 + 16  # LISP data header + IV (salt || counter) + AEAD tag (lisp/crypto.py)
DATA_PORT = 4341
BUDGET_SECONDS = 600  # the whole run (7 rows), set-up and tear-down included: 10 minutes
APT_INSTALL = [
    "apt-get",
    "-o",
    "DPkg::Lock::Timeout=600",
    "install",
    "-y",
    "--no-install-recommends",
    "iperf3",
    "wireguard-go",
    "wireguard-tools",
    "nebula",
    "fastd",
    "openvpn",
    "tinc",
]
PEERS = {  # row -> the executables it needs
    "plain veth": ["iperf3"],
    "lispmesh": ["iperf3"],
    "wireguard-go": ["iperf3", "wireguard-go", "wg"],
    "nebula": ["iperf3", "nebula", "nebula-cert"],
    "fastd": ["iperf3", "fastd"],
    "openvpn": ["iperf3", "openvpn", "openssl"],
    "tinc": ["iperf3", "tincd"],
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BudgetExceeded(BaseException):
    """The whole benchmark ran past its time budget (raised from SIGALRM)."""


# ---------------------------------------------------------------------------- results


@dataclass
class Row:
    path: str
    status: str = "ok"  # "ok", "not installed: ...", "error: ..."
    tunnel_mtu: int | None = None
    gbps: float | None = None  # receiver (goodput)
    gbps_sender: float | None = None
    retransmits: int | None = None
    seconds: float | None = None
    steal_pct: float | None = None
    cpu_busy_pct: float | None = None  # machine, all cores, excluding idle/iowait/steal
    # Machine CPU used by neither the daemons nor iperf3 (other tenants of a shared machine, and
    # kernel work charged elsewhere), in % of the machine: a noise indicator for the row.
    other_cpu_pct: float | None = None
    cores_received: float | None = None
    gbps_per_core_received: float | None = None
    daemon_cpu_s: float | None = None
    gbit_per_daemon_cpu_s: float | None = None
    rss_mb: float | None = None  # peak RSS (VmHWM) summed over the daemons of both ends
    rtt_min_ms: float | None = None
    rtt_avg_ms: float | None = None
    rtt_max_ms: float | None = None
    rtt_loss_pct: float | None = None
    rtt_load_avg_ms: float | None = None  # ping during the measured TCP stream
    rtt_load_max_ms: float | None = None
    gbps_8_streams: float | None = None  # iperf3 -P 8, receiver
    udp64_kpps: float | None = None  # 64-byte UDP payloads received per second, in thousands
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- processes


class Resources:
    """Everything this run started, so it can be stopped (by pid) and removed in `finally`."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.labs: list[Callable[[], None]] = []
        self.files: list[Path] = []

    def popen(
        self, ns: str | None, argv: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                netns.ns_argv(ns, argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 3.0) -> None:
        if proc.poll() is None:
            # `ip netns exec` execs, so proc.pid is the daemon itself (and leads its own session).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(2.0)
        if proc in self.procs:
            self.procs.remove(proc)

    def cleanup(self) -> None:
        for proc in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                self.stop(proc)
        for destroy in reversed(self.labs):
            with contextlib.suppress(Exception):
                destroy()
        self.labs.clear()
        for path in self.files:
            with contextlib.suppress(OSError):
                path.unlink()
        self.files.clear()


def run(
    argv: list[str], timeout: float, ns: str | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run to completion, bounded; a timeout becomes returncode 124 (never an exception)."""
    try:
        return netns.run(ns, argv, timeout=timeout, input=input)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return subprocess.CompletedProcess(argv, 124, out, f"timed out after {timeout:g} s")


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    return wait_until(condition, timeout, what, interval)


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime, all threads


def proc_hwm_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def cpu_stat() -> list[int]:
    with open("/proc/stat") as f:
        return [
            int(x) for x in f.readline().split()[1:9]
        ]  # user nice system idle iowait irq softirq steal


def link_mtu(ns: str, ifname: str) -> int | None:
    res = run(["ip", "-j", "link", "show", "dev", ifname], 5, ns)
    with contextlib.suppress(ValueError, IndexError, KeyError):
        return int(json.loads(res.stdout)[0]["mtu"])
    return None


# ---------------------------------------------------------------------------- measuring


PING_RE = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/")
LOSS_RE = re.compile(r"([\d.]+)% packet loss")


def ping_ok(ns: str, dst: str) -> bool:
    return run(["ping", "-c", "1", "-W", "1", dst], 5, ns).returncode == 0


def measure_rtt(row: Row, ns: str, dst: str) -> None:
    res = run(["ping", "-c", "20", "-i", "0.05", "-W", "1", "-q", dst], 20, ns)
    m = PING_RE.search(res.stdout)
    if m:
        row.rtt_min_ms, row.rtt_avg_ms, row.rtt_max_ms = (float(x) for x in m.groups())
    loss = LOSS_RE.search(res.stdout)
    if loss:
        row.rtt_loss_pct = float(loss.group(1))
    if not m:
        row.notes.append(f"ping failed: {(res.stdout + res.stderr).strip()[-200:]}")


def ping_under_load(row: Row, ns: str, dst: str, seconds: int) -> None:
    """Ping `dst` while a stream runs (after it ramps up, until just before it ends)."""
    ramp = min(2.0, seconds / 4)
    time.sleep(ramp)  # the stream's slow start is not "under load"
    count = max(3, int((seconds - ramp - 1) / 0.05))
    res = run(["ping", "-c", str(count), "-i", "0.05", "-W", "1", "-q", dst], seconds + 10, ns)
    m = PING_RE.search(res.stdout)
    if m:
        row.rtt_load_avg_ms, row.rtt_load_max_ms = float(m.group(2)), float(m.group(3))


def iperf_report(
    res: Resources, client_ns: str, server_ns: str, client_args: list[str], timeout: float,
    log: Path,
) -> dict[str, Any]:  # fmt: skip
    """One iperf3 client run against a one-shot server; its JSON report (RuntimeError if none)."""
    with iperf_server(res, server_ns, log):
        out = run(["iperf3", *client_args, "-J"], timeout, client_ns)
    return parse_iperf(out)


@contextlib.contextmanager
def iperf_server(res: Resources, ns: str, log: Path) -> Iterator[None]:
    """A one-shot iperf3 server in `ns`, listening (TCP and UDP) by the time the body runs."""
    server = res.popen(ns, ["iperf3", "-s", "-1"], log)
    try:
        wait_for(
            lambda: ":5201" in run(["ss", "-Hltn", "sport", "= :5201"], 5, ns).stdout,
            10,
            "the iperf3 server to listen",
        )
        yield
    finally:
        res.stop(server)


def parse_iperf(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        report: dict[str, Any] = json.loads(out.stdout)
    except ValueError:
        raise RuntimeError(
            f"iperf3 gave no JSON: {(out.stdout + out.stderr).strip()[-300:]}"
        ) from None
    if "end" not in report:
        raise RuntimeError(f"iperf3: {report.get('error', 'no result')}")
    return report


def measure_extra(
    row: Row, res: Resources, client_ns: str, server_ns: str, dst: str, seconds: int,
    workdir: Path,
) -> None:  # fmt: skip
    """The multi-stream row (8 TCP streams) and the small-packet row (64-byte UDP payloads,
    unlimited rate: what arrives per second is the tunnel's packet rate)."""
    log = workdir / f"iperf3-extra-{row.path.replace(' ', '-')}.log"
    streams = iperf_report(
        res, client_ns, server_ns, ["-c", dst, "-t", str(seconds), "-P", "8"], seconds + 30, log
    )
    row.gbps_8_streams = streams["end"]["sum_received"]["bits_per_second"] / 1e9
    udp = iperf_report(
        res, client_ns, server_ns,
        ["-c", dst, "-t", str(seconds), "-u", "-l", "64", "-b", "0"], seconds + 30, log,
    )  # fmt: skip
    total = udp["end"]["sum"]
    received = total.get("packets", 0) - total.get("lost_packets", 0)
    row.udp64_kpps = received / max(total.get("seconds", seconds), 0.001) / 1000


def measure_row(
    row: Row, res: Resources, client_ns: str, server_ns: str, dst: str, daemons: list[int],
    workdir: Path, args: argparse.Namespace, during: Callable[[], None] | None = None,
) -> None:  # fmt: skip
    """Everything measured on every row, the same way: idle RTT, one TCP stream with the
    daemons' CPU and the RTT under load, then 8 streams and 64-byte UDP."""
    measure_rtt(row, client_ns, dst)
    if not args.iperf:
        return
    measure_iperf(row, res, client_ns, server_ns, dst, args.seconds, daemons, workdir, during)
    if args.extra_seconds:
        measure_extra(row, res, client_ns, server_ns, dst, args.extra_seconds, workdir)


def measure_iperf(
    row: Row,
    res: Resources,
    client_ns: str,
    server_ns: str,
    dst: str,
    seconds: int,
    daemons: list[int],
    workdir: Path,
    during: Callable[[], None] | None = None,
    load_ping: bool = True,
) -> None:
    """One TCP stream client_ns -> server_ns; CPU of `daemons` and machine steal over the run,
    and (`load_ping`) the ping RTT to `dst` while the stream runs."""
    log = workdir / f"iperf3-server-{row.path.replace(' ', '-')}.log"
    with iperf_server(res, server_ns, log):
        cpu0 = {pid: proc_cpu_seconds(pid) for pid in daemons}
        stat0 = cpu_stat()
        threads = []
        if during is not None:
            threads.append(threading.Thread(target=during, name="during-iperf", daemon=True))
        if load_ping:
            threads.append(
                threading.Thread(
                    target=ping_under_load, args=(row, client_ns, dst, seconds), daemon=True
                )
            )
        for thread in threads:
            thread.start()
        t0 = time.monotonic()
        out = run(["iperf3", "-c", dst, "-t", str(seconds), "-J"], seconds + 30, client_ns)
        wall = time.monotonic() - t0
        stat1 = cpu_stat()
        cpu1 = {pid: proc_cpu_seconds(pid) for pid in daemons}
        for thread in threads:
            thread.join(seconds + 10)
    report = parse_iperf(out)
    end = report["end"]
    sent, received = end["sum_sent"], end["sum_received"]
    row.gbps = received["bits_per_second"] / 1e9
    row.gbps_sender = sent["bits_per_second"] / 1e9
    row.retransmits = sent.get("retransmits")
    row.seconds = round(received.get("seconds", wall), 2)
    delta = [b - a for a, b in zip(stat0, stat1, strict=True)]
    total = sum(delta) or 1
    steal = delta[7] / total
    ncpu = os.cpu_count() or 1
    row.steal_pct = round(100 * steal, 1)
    row.cpu_busy_pct = round(100 * (total - delta[3] - delta[4] - delta[7]) / total, 1)
    row.cores_received = round(ncpu * (1 - steal), 2)
    row.gbps_per_core_received = row.gbps / max(ncpu * (1 - steal), 0.01)
    used = sum(cpu1[p] - cpu0[p] for p in daemons)
    util = end.get("cpu_utilization_percent", {})
    iperf_cpu = (util.get("host_total", 0.0) + util.get("remote_total", 0.0)) / 100 * wall
    busy = (total - delta[3] - delta[4] - delta[7]) / CLK_TCK
    row.other_cpu_pct = round(max(0.0, 100 * (busy - used - iperf_cpu) / (total / CLK_TCK)), 1)
    if daemons:
        row.daemon_cpu_s = round(used, 2)
        if used > 0:
            row.gbit_per_daemon_cpu_s = received["bytes"] * 8 / 1e9 / used
        row.rss_mb = round(sum(proc_hwm_kb(p) for p in daemons) / 1024, 1)


# ---------------------------------------------------------------------------- labs


def two_node_lab(res: Resources, workdir: Path, tag: str) -> Lab:
    """n1 and n2 on an underlay bridge: the shape OverlayLab builds, without the map-server."""
    name = f"ob{tag}{secrets.token_hex(2)}"
    nodes: dict[str, Any] = {"ul": {"kind": "bridge"}}
    links = []
    for i in (1, 2):
        nodes[f"n{i}"] = {"kind": "linux", "addresses": {"eth1": [f"10.77.0.{10 + i}/24"]}}
        links.append({"endpoints": [f"n{i}:eth1", f"ul:n{i}u0"]})
    path = workdir / f"{name}.clab.yml"
    path.write_text(yaml.safe_dump({"name": name, "topology": {"nodes": nodes, "links": links}}))
    lab = Lab.from_file(path)
    res.labs.append(lab.destroy)
    lab.deploy()
    return lab


def row_veth(row: Row, res: Resources, workdir: Path, args: argparse.Namespace) -> None:
    lab = two_node_lab(res, workdir, "v")
    ns1, ns2 = lab.netns_name("n1"), lab.netns_name("n2")
    row.tunnel_mtu = link_mtu(ns1, "eth1")
    wait_for(lambda: ping_ok(ns1, "10.77.0.12"), 10, "n1 to reach n2 on the underlay")
    measure_row(row, res, ns1, ns2, "10.77.0.12", [], workdir, args)
    row.notes.append("no tunnel: the lab's ceiling")


def row_lispmesh(
    row: Row, res: Resources, workdir: Path, args: argparse.Namespace, framing: dict[str, Any]
) -> None:
    from tests.integration.overlay import OverlayLab, XtrSpec

    overlay = OverlayLab(workdir / "lispmesh", [XtrSpec(1), XtrSpec(2)], name_prefix="obl")
    res.labs.append(lambda: overlay.__exit__(None, None, None))
    overlay.__enter__()
    assert overlay.lab is not None
    ns1, ns2 = overlay.lab.netns_name("n1"), overlay.lab.netns_name("n2")
    overlay.wait_registered(timeout=30)
    overlay.wait_ping("n1", "10.1.2.1", timeout=20)
    overlay.wait_ping("n2", "10.1.1.1", timeout=20)
    row.tunnel_mtu = link_mtu(ns1, "lm0")
    pids = [int(overlay.status("n1")["pid"]), int(overlay.status("n2")["pid"])]
    framing["pings"] = verify_ping_sizes(ns1, "10.1.2.1")
    if args.iperf and args.capture:
        # The framing check captures in its own short stream, so the measured stream below runs
        # with nothing but the daemons, as every other row's does.
        scratch = Row("lispmesh framing pass")

        def capture_framing() -> None:
            time.sleep(1.0)  # past the stream's start
            framing.update(verify_framing(ns1, limit=args.capture, timeout=3.0))

        measure_iperf(scratch, res, ns1, ns2, "10.1.2.1", 4, [], workdir, capture_framing, False)
    spies: list[subprocess.Popen[bytes]] = []

    def during() -> None:
        time.sleep(min(2.0, args.seconds / 4))  # let the stream reach its steady state
        if args.py_spy:
            out = Path(args.py_spy)
            out.mkdir(parents=True, exist_ok=True)
            secs = max(1, args.seconds - 4)
            for node, pid in zip(("n1", "n2"), pids, strict=True):
                spies.append(
                    res.popen(
                        None,
                        [
                            "py-spy",
                            "record",
                            "--nonblocking",
                            "-r",
                            "200",
                            "-d",
                            str(secs),
                            "-p",
                            str(pid),
                            "-f",
                            "raw",
                            "-o",
                            str(out / f"lispmesh-{node}.txt"),
                        ],
                        out / f"py-spy-{node}.log",
                    )
                )

    measure_row(
        row, res, ns1, ns2, "10.1.2.1", pids, workdir, args, during if args.py_spy else None
    )
    for spy in spies:
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(15)
        res.stop(spy)
    drops = {n: overlay.drops(n) for n in ("n1", "n2")}
    if any(drops.values()):
        row.notes.append(f"xTR drops: {drops}")
    errors = {n: overlay.status(n).get("runtime_errors") for n in ("n1", "n2")}
    if any(errors.values()):
        row.notes.append(f"runtime errors: {errors}")


def row_wireguard(row: Row, res: Resources, workdir: Path, args: argparse.Namespace) -> None:
    lab = two_node_lab(res, workdir, "w")
    ns = {i: lab.netns_name(f"n{i}") for i in (1, 2)}
    # wireguard-go's UAPI socket is /var/run/wireguard/<ifname>.sock, shared by every namespace:
    # unique interface names keep two ends (and concurrent runs) apart.
    tag = secrets.token_hex(3)
    ifname = {i: f"wgb{tag}{i}" for i in (1, 2)}
    keys: dict[int, tuple[Path, str]] = {}
    for i in (1, 2):
        private = run(["wg", "genkey"], 5).stdout.strip()
        public = run(["wg", "pubkey"], 5, input=private + "\n").stdout.strip()
        path = workdir / f"wg{i}.key"
        path.write_text(private + "\n")
        path.chmod(0o600)
        keys[i] = (path, public)
    daemons = []
    for i in (1, 2):
        sock = Path(f"/var/run/wireguard/{ifname[i]}.sock")
        res.files.append(sock)
        daemons.append(
            res.popen(
                ns[i],
                ["wireguard-go", "-f", ifname[i]],
                workdir / f"wireguard-go-{i}.log",
                env={"LOG_LEVEL": "error", "WG_PROCESS_FOREGROUND": "1"},
            )
        )
        wait_for(sock.exists, 10, f"wireguard-go's UAPI socket {sock}")
    for i, j in ((1, 2), (2, 1)):
        cmds = [
            [
                "wg",
                "set",
                ifname[i],
                "listen-port",
                "51820",
                "private-key",
                str(keys[i][0]),
                "peer",
                keys[j][1],
                "allowed-ips",
                f"10.2.0.{j}/32",
                "endpoint",
                f"10.77.0.{10 + j}:51820",
            ],
            ["ip", "addr", "add", f"10.2.0.{i}/24", "dev", ifname[i]],
            ["ip", "link", "set", ifname[i], "up"],
        ]
        for cmd in cmds:
            out = run(cmd, 10, ns[i])
            if out.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip()}")
    row.tunnel_mtu = link_mtu(ns[1], ifname[1])
    wait_for(lambda: ping_ok(ns[1], "10.2.0.2"), 15, "the wireguard handshake")
    measure_row(row, res, ns[1], ns[2], "10.2.0.2", [d.pid for d in daemons], workdir, args)
    for d in daemons:
        res.stop(d)


def row_nebula(row: Row, res: Resources, workdir: Path, args: argparse.Namespace) -> None:
    lab = two_node_lab(res, workdir, "n")
    ns = {i: lab.netns_name(f"n{i}") for i in (1, 2)}
    pki = workdir / "nebula"
    pki.mkdir(exist_ok=True)
    ca_crt, ca_key = pki / "ca.crt", pki / "ca.key"
    out = run(
        [
            "nebula-cert",
            "ca",
            "-name",
            "lispmesh-bench",
            "-duration",
            "2h",
            "-out-crt",
            str(ca_crt),
            "-out-key",
            str(ca_key),
        ],
        20,
    )
    if out.returncode != 0:
        raise RuntimeError(f"nebula-cert ca: {out.stderr.strip()}")
    daemons = []
    for i, j in ((1, 2), (2, 1)):
        crt, key = pki / f"n{i}.crt", pki / f"n{i}.key"
        out = run(
            [
                "nebula-cert",
                "sign",
                "-name",
                f"n{i}",
                "-ip",
                f"10.3.0.{i}/24",
                "-ca-crt",
                str(ca_crt),
                "-ca-key",
                str(ca_key),
                "-out-crt",
                str(crt),
                "-out-key",
                str(key),
            ],
            20,
        )
        if out.returncode != 0:
            raise RuntimeError(f"nebula-cert sign: {out.stderr.strip()}")
        config = {
            "pki": {"ca": str(ca_crt), "cert": str(crt), "key": str(key)},
            "static_host_map": {f"10.3.0.{j}": [f"10.77.0.{10 + j}:4242"]},
            "lighthouse": {"am_lighthouse": False, "interval": 60, "hosts": []},
            "listen": {"host": "0.0.0.0", "port": 4242},
            "punchy": {"punch": False},
            "tun": {
                "disabled": False,
                "dev": f"neb{i}",
                "drop_local_broadcast": False,
                "drop_multicast": False,
                "tx_queue": 500,
                "mtu": NEBULA_MTU,
            },
            "logging": {"level": "warning", "format": "text"},
            "firewall": {
                "conntrack": {"tcp_timeout": "12m", "udp_timeout": "3m", "default_timeout": "10m"},
                "outbound": [{"port": "any", "proto": "any", "host": "any"}],
                "inbound": [{"port": "any", "proto": "any", "host": "any"}],
            },
        }
        path = pki / f"n{i}.yml"
        path.write_text(yaml.safe_dump(config))
        daemons.append(
            res.popen(ns[i], ["nebula", "-config", str(path)], workdir / f"nebula-{i}.log")
        )
    wait_for(
        lambda: link_mtu(ns[1], "neb1") and link_mtu(ns[2], "neb2"), 10, "nebula's TUN devices"
    )
    row.tunnel_mtu = link_mtu(ns[1], "neb1")
    wait_for(lambda: ping_ok(ns[1], "10.3.0.2"), 15, "the nebula handshake")
    measure_row(row, res, ns[1], ns[2], "10.3.0.2", [d.pid for d in daemons], workdir, args)
    for d in daemons:
        res.stop(d)


def configure(ns: str, cmds: list[list[str]]) -> None:
    for cmd in cmds:
        out = run(cmd, 10, ns)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip()}")


def tunnel_up(ns: dict[int, str], ifname: dict[int, str], dst: str, what: str) -> None:
    wait_for(
        lambda: link_mtu(ns[1], ifname[1]) and link_mtu(ns[2], ifname[2]), 15, f"{what}'s TUNs"
    )
    wait_for(lambda: ping_ok(ns[1], dst), 20, f"the {what} handshake")


def row_fastd(row: Row, res: Resources, workdir: Path, args: argparse.Namespace) -> None:
    """fastd in tun mode, one static peer each side, its recommended method salsa2012+umac."""
    lab = two_node_lab(res, workdir, "f")
    ns = {i: lab.netns_name(f"n{i}") for i in (1, 2)}
    ifname = {i: f"fd{i}" for i in (1, 2)}
    keys: dict[int, tuple[str, str]] = {}
    for i in (1, 2):
        out = run(["fastd", "--generate-key"], 10)
        found = dict(re.findall(r"^(Secret|Public): ([0-9a-f]{64})$", out.stdout, re.MULTILINE))
        if len(found) != 2:
            raise RuntimeError(f"fastd --generate-key: {(out.stdout + out.stderr).strip()[-200:]}")
        keys[i] = (found["Secret"], found["Public"])
    daemons = []
    for i, j in ((1, 2), (2, 1)):
        path = workdir / f"fastd-{i}.conf"
        path.write_text(
            f'log level warn;\ninterface "{ifname[i]}";\nmode tun;\n'
            f'method "salsa2012+umac";\nbind 10.77.0.{10 + i}:10000;\nmtu {FASTD_MTU};\n'
            f'secret "{keys[i][0]}";\n'
            # Only n1 initiates: two ends handshaking at once left fastd v22 with sessions whose
            # packets the other end fails to verify ("verification failed" in its log).
            f'peer "n{j}" {{ key "{keys[j][1]}"; '
            + (f"remote 10.77.0.{10 + j}:10000; " if i == 1 else "")
            + "}\n"
        )
        path.chmod(0o600)
        daemons.append(res.popen(ns[i], ["fastd", "-c", str(path)], workdir / f"fastd-{i}.log"))
    for i in (1, 2):  # addressed from here: fastd runs its `on up` hook without privileges
        wait_for(lambda i=i: link_mtu(ns[i], ifname[i]), 15, f"fastd's TUN {ifname[i]}")
        configure(
            ns[i],
            [
                ["ip", "addr", "add", f"10.4.0.{i}/24", "dev", ifname[i]],
                ["ip", "link", "set", ifname[i], "up"],
            ],
        )
    tunnel_up(ns, ifname, "10.4.0.2", "fastd")
    row.tunnel_mtu = link_mtu(ns[1], ifname[1])
    measure_row(row, res, ns[1], ns[2], "10.4.0.2", [d.pid for d in daemons], workdir, args)


def row_openvpn(row: Row, res: Resources, workdir: Path, args: argparse.Namespace) -> None:
    """OpenVPN 2.6 peer to peer over UDP: TLS with self-signed P-256 certificates pinned by
    fingerprint (--peer-fingerprint), AES-256-GCM data channel, userspace (no DCO module here)."""
    lab = two_node_lab(res, workdir, "o")
    ns = {i: lab.netns_name(f"n{i}") for i in (1, 2)}
    ifname = {i: f"ovpn{i}" for i in (1, 2)}
    certs: dict[int, tuple[Path, Path, str]] = {}
    for i in (1, 2):
        crt, key = workdir / f"ovpn{i}.crt", workdir / f"ovpn{i}.key"
        out = run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", f"/CN=n{i}",
             "-keyout", str(key), "-out", str(crt)],
            20,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"openssl req: {out.stderr.strip()[-200:]}")
        fp = run(["openssl", "x509", "-in", str(crt), "-noout", "-fingerprint", "-sha256"], 10)
        certs[i] = (crt, key, fp.stdout.strip().split("=", 1)[-1])
    daemons = []
    for i, j in ((1, 2), (2, 1)):
        argv = [
            "openvpn", "--dev", ifname[i], "--dev-type", "tun", "--proto", "udp",
            "--local", f"10.77.0.{10 + i}", "--lport", "1194",
            "--remote", f"10.77.0.{10 + j}", "--rport", "1194",
            "--ifconfig", f"10.5.0.{i}", f"10.5.0.{j}",
            "--tls-server" if i == 1 else "--tls-client",
            "--cert", str(certs[i][0]), "--key", str(certs[i][1]),
            "--peer-fingerprint", certs[j][2], "--dh", "none",
            "--data-ciphers", "AES-256-GCM", "--verb", "1", "--disable-dco",
        ]  # fmt: skip
        daemons.append(res.popen(ns[i], argv, workdir / f"openvpn-{i}.log"))
    tunnel_up(ns, ifname, "10.5.0.2", "openvpn")
    row.tunnel_mtu = link_mtu(ns[1], ifname[1])
    measure_row(row, res, ns[1], ns[2], "10.5.0.2", [d.pid for d in daemons], workdir, args)


def row_tinc(row: Row, res: Resources, workdir: Path, args: argparse.Namespace) -> None:
    """tinc 1.0 in router mode, UDP, RSA host keys; Cipher aes-256-cbc and Digest sha256 set
    (its built-in defaults are blowfish and SHA-1)."""
    lab = two_node_lab(res, workdir, "t")
    ns = {i: lab.netns_name(f"n{i}") for i in (1, 2)}
    ifname = {i: f"tinc{i}" for i in (1, 2)}
    confs = {i: workdir / f"tinc{i}" for i in (1, 2)}
    for i, j in ((1, 2), (2, 1)):
        (confs[i] / "hosts").mkdir(parents=True)
        (confs[i] / "tinc.conf").write_text(
            f"Name = n{i}\nInterface = {ifname[i]}\nDeviceType = tun\nAddressFamily = ipv4\n"
            f"BindToAddress = 10.77.0.{10 + i}\nConnectTo = n{j}\n"
        )
        (confs[i] / "hosts" / f"n{i}").write_text(
            f"Address = 10.77.0.{10 + i}\nSubnet = 10.6.0.{i}/32\n"
            "Cipher = aes-256-cbc\nDigest = sha256\n"
        )
        up = confs[i] / "tinc-up"
        up.write_text(
            f"#!/bin/sh\nip addr add 10.6.0.{i}/24 dev $INTERFACE\nip link set $INTERFACE up\n"
        )
        up.chmod(0o755)
        out = run(["tincd", "-c", str(confs[i]), "-K2048"], 60, input="\n\n")
        if out.returncode != 0:
            raise RuntimeError(f"tincd -K: {(out.stdout + out.stderr).strip()[-200:]}")
    for i, j in ((1, 2), (2, 1)):  # each end knows the other's host file (with its public key)
        shutil.copy(confs[j] / "hosts" / f"n{j}", confs[i] / "hosts" / f"n{j}")
    daemons = [
        res.popen(
            ns[i],
            ["tincd", "-c", str(confs[i]), "-D", "-d0", f"--pidfile={confs[i] / 'pid'}"],
            workdir / f"tinc-{i}.log",
        )
        for i in (1, 2)
    ]
    tunnel_up(ns, ifname, "10.6.0.2", "tinc")
    row.tunnel_mtu = link_mtu(ns[1], ifname[1])
    measure_row(row, res, ns[1], ns[2], "10.6.0.2", [d.pid for d in daemons], workdir, args)


PEER_ROW: dict[str, Callable[[Row, Resources, Path, argparse.Namespace], None]] = {
    "wireguard-go": row_wireguard,
    "nebula": row_nebula,
    "fastd": row_fastd,
    "openvpn": row_openvpn,
    "tinc": row_tinc,
}


# ---------------------------------------------------------------------------- framing check

SOL_PACKET = 263
PACKET_VNET_HDR = 15
SO_RCVBUFFORCE = 33
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
VNET_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
GSO_UDP_L4 = 5
SO_TIMESTAMPNS = 35
TIMESPEC = struct.Struct("=qq")
TIMESTAMP_CMSG = socket.CMSG_SPACE(TIMESPEC.size)


def capture(
    ifnames: list[str], limit: int, timeout: float
) -> dict[str, list[tuple[bool, int, bytes, float]]]:
    """Runs inside a namespace: (outgoing, gso_size, link-layer-stripped bytes, time) per packet."""
    socks = {}
    try:
        for ifname in ifnames:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            socks[ifname] = s
            s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # kernel receive time per frame
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
            s.bind((ifname, ETH_P_ALL))
            s.setblocking(False)
        got: dict[str, list[tuple[bool, int, bytes, float]]] = {n: [] for n in ifnames}
        start = time.monotonic()
        deadline = start + timeout
        by_fd = {s.fileno(): (n, s) for n, s in socks.items()}

        def enough() -> bool:  # `limit` frames each way on every interface (or plenty)
            for frames in got.values():
                out = sum(1 for f in frames if f[0])
                if (out < limit or len(frames) - out < limit) and len(frames) < 40 * limit:
                    return False
            return True

        # At least 0.1 s, so both interfaces see the same stretch of the stream.
        while time.monotonic() < deadline and (time.monotonic() < start + 0.1 or not enough()):
            ready, _, _ = select.select(list(by_fd), [], [], 0.1)
            for fd in ready:
                name, s = by_fd[fd]
                for _ in range(256):
                    try:
                        data, anc, _fl, addr = s.recvmsg(262144, TIMESTAMP_CMSG)
                    except BlockingIOError:
                        break
                    now = 0.0
                    for level, kind, value in anc:
                        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                            sec, nsec = TIMESPEC.unpack_from(value)
                            now = sec + nsec / 1e9
                    if addr[0] != name:  # queued before bind() narrowed it to this interface
                        continue
                    _f, gso_type, _h, gso_size, _cs, _co = VNET_HDR.unpack_from(data)
                    frame = data[VNET_HDR.size :]
                    if addr[3] == 1:  # ARPHRD_ETHER
                        if frame[12:14] != b"\x08\x00":
                            continue
                        frame = frame[14:]
                    got[name].append(
                        (
                            addr[2] == PACKET_OUTGOING,
                            # UDP GSO on the underlay, TCP TSO (types 1 and 4) on the TUN
                            gso_size if gso_type in (GSO_UDP_L4, 1, 4) else 0,
                            frame,
                            now,
                        )
                    )
        return got
    finally:
        for s in socks.values():
            s.close()


PING_SIZES = (56, 200, 555, 999, 1372)  # ICMP payloads; 1372 + 28 = 1400, a full TUN MTU


def verify_ping_sizes(ns: str, dst: str) -> dict[str, Any]:
    """At idle, one ping of each size in PING_SIZES: exactly one UDP 4341 datagram each way per
    ping, whose inner size (UDP payload - 36) is exactly the ICMP packet's size (28 + payload)."""
    got: dict[str, Any] = {}

    def body() -> None:
        try:
            got.update(netns.run_in(ns, lambda: capture(["eth1", "lm0"], 1 << 30, 2.5)))
        except OSError as exc:
            got["error"] = str(exc)

    thread = threading.Thread(target=body, name="capture-pings", daemon=True)
    thread.start()
    time.sleep(0.3)
    for size in PING_SIZES:
        run(["ping", "-c", "1", "-W", "1", "-s", str(size), dst], 5, ns)
    thread.join(10)
    if "error" in got or "eth1" not in got:
        return {"error": f"capture failed: {got.get('error', 'no result')}"}
    expected = sorted(28 + size for size in PING_SIZES)
    result: dict[str, Any] = {"expected_inner": expected}
    for outgoing, label in ((True, "n1->n2"), (False, "n2->n1")):
        inner = []
        for out, _gso, ip, _t in got["eth1"]:
            if out != outgoing or len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
                continue
            ihl = (ip[0] & 0x0F) * 4
            if DATA_PORT in struct.unpack_from("!HH", ip, ihl):
                inner.append(struct.unpack_from("!H", ip, 2)[0] - ihl - 8 - LISP_OVERHEAD)
        icmp = sorted(
            struct.unpack_from("!H", ip, 2)[0]
            for out, _g, ip, _t in got["lm0"]
            if out == outgoing and len(ip) >= 20 and ip[0] >> 4 == 4 and ip[9] == 1
        )
        result[label] = {
            "datagram_inner": sorted(inner),
            "tun_icmp": icmp,
            "ok": sorted(inner) == expected == icmp,
        }
    result["ok"] = result["n1->n2"]["ok"] and result["n2->n1"]["ok"]
    return result


def verify_framing(ns: str, limit: int, timeout: float) -> dict[str, Any]:
    """Capture on n1's underlay (eth1) and TUN (lm0) and check the rules of the issue."""
    try:
        got = netns.run_in(ns, lambda: capture(["eth1", "lm0"], limit, timeout))
    except OSError as exc:
        return {"error": f"capture failed: {exc}"}
    datagrams = []  # (outgoing, ip_len, df, fragment, kk, udp_payload_len, inner_len)
    fragments = 0
    for outgoing, gso_size, ip, ts in got["eth1"]:
        if len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        ihl = (ip[0] & 0x0F) * 4
        frag = struct.unpack_from("!H", ip, 6)[0]
        is_fragment = bool(frag & 0x2000) or (frag & 0x1FFF) != 0
        if is_fragment:
            fragments += 1
        if ip[9] != 17 or (frag & 0x1FFF):
            continue
        sport, dport = struct.unpack_from("!HH", ip, ihl)
        if DATA_PORT not in (sport, dport):
            continue
        payload = (
            ip[ihl + 8 : struct.unpack_from("!H", ip, 2)[0]] if not gso_size else ip[ihl + 8 :]
        )
        # A GSO/GRO super-packet is several wire datagrams: split it the way the kernel will.
        segments = (
            [payload[k : k + gso_size] for k in range(0, len(payload), gso_size)]
            if gso_size
            else [payload]
        )
        for seg in segments:
            datagrams.append(
                {
                    "outgoing": outgoing,
                    "ip_len": ihl + 8 + len(seg),
                    "df": bool(frag & 0x4000),
                    "fragment": is_fragment,
                    "kk": seg[0] & 0x03 if seg else 0,
                    "udp_payload": len(seg),
                    "inner": len(seg) - LISP_OVERHEAD,
                    "gso": bool(gso_size),
                    "ts": ts,
                }
            )
    tun: dict[bool, list[int]] = {True: [], False: []}  # read by lispmesh / written by it
    tun_start = min((t for *_x, t in got["lm0"]), default=0.0)
    for outgoing, gso, ip, _t in got["lm0"]:
        if len(ip) >= 20 and ip[0] >> 4 == 4:
            length, iphl = struct.unpack_from("!H", ip, 2)[0], (ip[0] & 0x0F) * 4
        elif len(ip) >= 40 and ip[0] >> 4 == 6:
            length, iphl = 40 + struct.unpack_from("!H", ip, 4)[0], 40
        else:
            continue
        if gso and len(ip) >= iphl + 20:
            # A TSO super-packet the node reads whole and cuts into MSS-sized TCP segments,
            # each sent as its own datagram: expect the segments' sizes on the wire.
            hl = iphl + (ip[iphl + 12] >> 4) * 4
            tun[outgoing].extend(hl + min(gso, length - hl - k) for k in range(0, length - hl, gso))
        else:
            tun[outgoing].append(length)
    result: dict[str, Any] = {
        "captured_datagrams": len(datagrams),
        "gso_super_packets_split": sum(d["gso"] for d in datagrams),
        "underlay_ip_fragments": fragments,
        "max_ip_len": max((d["ip_len"] for d in datagrams), default=None),
        "all_le_1500": all(d["ip_len"] <= UNDERLAY_MTU for d in datagrams),
        "all_not_fragment": not any(d["fragment"] for d in datagrams) and fragments == 0,
        "all_df": all(d["df"] for d in datagrams),
        "all_kk_nonzero": all(d["kk"] for d in datagrams),
        "key_ids": sorted({d["kk"] for d in datagrams}),
        "inner_sizes": dict(Counter(d["inner"] for d in datagrams).most_common(6)),
        "tun_packets": {"read": len(tun[True]), "written": len(tun[False])},
    }
    one_each = []
    for outgoing, label in ((True, "n1->n2"), (False, "n2->n1")):
        # The first `limit` datagrams captured once the TUN capture had started (later on, the
        # per-packet TUN capture may drop frames under load and lose the order).
        inner = [
            d["inner"] for d in datagrams if d["outgoing"] == outgoing and d["ts"] > tun_start
        ][:limit]
        match = align(inner, tun[outgoing])
        one_each.append(match is not None)
        result[f"one_inner_per_datagram_{label}"] = (
            {"datagrams": len(inner), "matched_in_order": match[1], "shift": match[0]}
            if match
            else {"datagrams": len(inner), "matched_in_order": 0}
        )
    result["one_inner_per_datagram"] = all(one_each) and bool(datagrams)
    result["verified"] = bool(datagrams) and all(
        result[k]
        for k in ("all_le_1500", "all_not_fragment", "all_kk_nonzero", "one_inner_per_datagram")
    )
    return result


def align(inner: list[int], tun: list[int], max_shift: int = 2000) -> tuple[int, int] | None:
    """The shift at which the datagrams' inner sizes equal the TUN packets' sizes, in order, over
    their whole overlap (at least 10 packets, or all of them); None if there is none."""
    if not inner or not tun:
        return None
    need = min(10, len(inner))
    for shift in sorted(range(-max_shift, max_shift + 1), key=abs):
        pairs = [(d, tun[i + shift]) for i, d in enumerate(inner) if 0 <= i + shift < len(tun)]
        if len(pairs) >= need and all(a == b for a, b in pairs):
            return shift, len(pairs)
    return None


# ---------------------------------------------------------------------------- output


def fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


COLUMNS = [
    ("path", lambda r: r.path),
    ("MTU", lambda r: fmt(r.tunnel_mtu, "d")),
    ("Gbit/s", lambda r: fmt(r.gbps, ".3f")),
    ("retr", lambda r: fmt(r.retransmits, "d")),
    ("steal %", lambda r: fmt(r.steal_pct, ".0f")),
    ("other CPU %", lambda r: fmt(r.other_cpu_pct, ".0f")),
    ("Gbit/s per core recv'd", lambda r: fmt(r.gbps_per_core_received, ".3f")),
    ("daemon CPU s", lambda r: fmt(r.daemon_cpu_s)),
    ("Gbit/s per CPU-s", lambda r: fmt(r.gbit_per_daemon_cpu_s, ".3f")),
    ("RSS MB", lambda r: fmt(r.rss_mb, ".1f")),
    (
        "RTT min/avg/max ms",
        lambda r: (
            "-"
            if r.rtt_avg_ms is None
            else f"{r.rtt_min_ms:.3f}/{r.rtt_avg_ms:.3f}/{r.rtt_max_ms:.3f}"
        ),
    ),
    (
        "RTT loaded avg/max ms",
        lambda r: (
            "-" if r.rtt_load_avg_ms is None else f"{r.rtt_load_avg_ms:.2f}/{r.rtt_load_max_ms:.2f}"
        ),
    ),
    ("8 streams Gbit/s", lambda r: fmt(r.gbps_8_streams, ".3f")),
    ("UDP 64 B kpps", lambda r: fmt(r.udp64_kpps, ".1f")),
]


def print_table(rows: list[Row], title: str) -> None:
    cells = [
        [
            get(r) if r.status == "ok" else (get(r) if name == "path" else "")
            for name, get in COLUMNS
        ]
        for r in rows
    ]
    for r, line in zip(rows, cells, strict=True):
        if r.status != "ok":
            line[2] = r.status
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for name, _ in COLUMNS:
            table.add_column(name, justify="left" if name == "path" else "right")
        for line in cells:
            table.add_row(*line)
        Console(width=max(160, shutil.get_terminal_size().columns)).print(table)
    except ImportError:
        widths = [
            max(len(name), *(len(c[i]) for c in cells)) for i, (name, _) in enumerate(COLUMNS)
        ]
        print(title)
        print("  ".join(n.ljust(w) for (n, _), w in zip(COLUMNS, widths, strict=True)))
        for line in cells:
            print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))


def print_framing(framing: dict[str, Any]) -> None:
    pings = framing.get("pings")
    if pings:
        if "error" in pings:
            print(f"framing at idle: {pings['error']}")
        else:
            print(
                f"framing at idle (one ping each of inner sizes {pings['expected_inner']}, "
                "both ways): "
                f"one datagram per inner packet, inner = UDP payload - {LISP_OVERHEAD}: "
                f"{'verified' if pings['ok'] else 'FAILED'}"
            )
            if not pings["ok"]:
                for label in ("n1->n2", "n2->n1"):
                    print(f"  {label}: {pings[label]}")
    if "captured_datagrams" not in framing and "error" not in framing:
        print("framing: not checked (the lispmesh row did not run its iperf3 stream)")
        return
    if "error" in framing:
        print(f"framing: {framing['error']}")
        return

    def ok(b: bool) -> str:
        return "verified" if b else "FAILED"

    n = framing["captured_datagrams"]
    print(
        f"framing (lispmesh, {n} UDP {DATA_PORT} datagrams captured on n1 eth1 during a separate "
        "4 s stream"
        f"{', GSO super-packets split per segment' if framing['gso_super_packets_split'] else ''}):"
    )
    print(
        f"  - IP length <= {UNDERLAY_MTU} (max {framing['max_ip_len']}): "
        f"{ok(framing['all_le_1500'])}"
    )
    print(
        f"  - no IP fragments on the underlay (MF=0, offset=0; {framing['underlay_ip_fragments']} "
        f"fragments seen): {ok(framing['all_not_fragment'])}; DF set on all: {framing['all_df']}"
    )
    print(
        f"  - LISP data header with KK != 0 (key-ids {framing['key_ids']}): "
        f"{ok(framing['all_kk_nonzero'])}"
    )
    for label in ("n1->n2", "n2->n1"):
        m = framing[f"one_inner_per_datagram_{label}"]
        print(
            f"  - {label}: {m['datagrams']} datagrams, inner = UDP payload - {LISP_OVERHEAD}; "
            f"{m['matched_in_order']} matched a TUN packet's size in order"
        )
    print(
        f"  - one inner packet per datagram (inner sizes {framing['inner_sizes']}): "
        f"{ok(framing['one_inner_per_datagram'])}"
    )


# ---------------------------------------------------------------------------- verdict

# What each ratio compares, and whether more is better.
RATIOS = (
    ("gbps_per_core_received", "Gbit/s per core received", True),
    ("gbit_per_daemon_cpu_s", "Gbit per daemon CPU-s", True),
    ("gbps_8_streams", "8 streams Gbit/s", True),
    ("udp64_kpps", "UDP 64 B kpps", True),
    ("rtt_avg_ms", "idle RTT avg ms", False),
    ("rtt_load_avg_ms", "loaded RTT avg ms", False),
)


def compare_with_peers(rows: list[Row]) -> dict[str, Any]:
    """lispmesh against the best peer of this run, per figure (each figure's own best peer)."""
    by = {r.path: r for r in rows if r.status == "ok"}
    lm = by.get("lispmesh")
    if lm is None:
        return {}
    verdict: dict[str, Any] = {}
    for attr, _label, higher in RATIOS:
        ours = getattr(lm, attr)
        peers = [(getattr(by[p], attr), p) for p in PEER_ROWS if p in by]
        peers = [(v, p) for v, p in peers if v]
        if not ours or not peers:
            continue
        best, name = max(peers) if higher else min(peers)
        verdict[attr] = {"best_peer": name, "best": best, "lispmesh": ours, "ratio": ours / best}
    return verdict


def print_verdict(verdict: dict[str, Any]) -> None:
    for attr, label, higher in RATIOS:
        v = verdict.get(attr)
        if v is None:
            continue
        better = v["ratio"] >= 1 if higher else v["ratio"] <= 1
        print(
            f"lispmesh / best peer ({v['best_peer']}), {label}: {v['lispmesh']:.3f} vs "
            f"{v['best']:.3f} = {v['ratio']:.2f}x ({'better or equal' if better else 'worse'})"
        )


# ---------------------------------------------------------------------------- main


def missing_tools(row: str) -> list[str]:
    return [tool for tool in PEERS[row] if shutil.which(tool) is None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=int, default=10, help="iperf3 duration per row (1..45, default 10)"
    )
    parser.add_argument(
        "--extra-seconds",
        type=int,
        default=5,
        help="duration of the 8-stream and the 64-byte UDP runs per row (0: skip them; default 5)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document instead of tables"
    )
    parser.add_argument(
        "--only", default=",".join(ROWS), help=f"comma-separated rows (default: {','.join(ROWS)})"
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help="apt-get install the peers first (--no-install-recommends)",
    )
    parser.add_argument(
        "--capture",
        type=int,
        default=50,
        help="datagrams to capture for the framing check (default 50)",
    )
    parser.add_argument(
        "--py-spy",
        metavar="DIR",
        help="record both lispmesh nodes with py-spy (raw stacks) during the stream",
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        help="also run this benchmark in the tree of git revision REV and print both side by "
        "side (default rows: lispmesh)",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="with --against: runs per tree, alternating"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 45:
        parser.error("--seconds must be within 1..45 (the whole run stays within its budget)")
    if not 0 <= args.extra_seconds <= 30:
        parser.error("--extra-seconds must be within 0..30")
    wanted = [r.strip() for r in args.only.split(",") if r.strip()]
    for r in wanted:
        if r not in ROWS:
            parser.error(f"unknown row {r!r} (rows: {', '.join(ROWS)})")
    if os.geteuid() != 0:
        print("overlay_bench: needs root (network namespaces, TUN devices)", file=sys.stderr)
        return 2
    if args.against:
        import tree_compare  # beside this file

        only = args.only if "--only" in (argv if argv is not None else sys.argv) else "lispmesh"
        forwarded = ["--seconds", str(args.seconds), "--only", only]
        return tree_compare.compare(
            REPO_ROOT, args.against, "bench/overlay_bench.py", forwarded, args.rounds
        )
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    if args.install:
        say("installing peers: " + " ".join(APT_INSTALL))
        out = subprocess.run(
            APT_INSTALL,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if out.returncode != 0:
            say(f"apt-get failed ({out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
    args.iperf = shutil.which("iperf3") is not None
    if not args.iperf:
        say(
            "missing peer: iperf3 is not installed (apt-get install iperf3, or --install): "
            "no throughput rows"
        )

    res = Resources()
    workdir = Path(tempfile.mkdtemp(prefix="overlay-bench-"))
    rows: list[Row] = []
    framing: dict[str, Any] = {}
    started = time.monotonic()

    main_pid = os.getpid()

    def on_signal(sig: int, _frame: Any) -> None:
        if os.getpid() != main_pid:
            # A child forked by a library (pyroute2 forks to enter namespaces, then stops the
            # child with SIGTERM): exit it, never raise in it.
            os._exit(128 + sig)
        if sig == signal.SIGALRM:
            raise BudgetExceeded(f"the benchmark ran past its {BUDGET_SECONDS} s budget")
        raise KeyboardInterrupt

    old_handlers = {
        sig: signal.signal(sig, on_signal)
        for sig in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT)
    }
    # The watchdog signals the main thread itself: a process-directed signal may land on another
    # thread and leave the main thread blocked in a lock wait (netlab's parallel deploy).
    watchdog = threading.Timer(
        BUDGET_SECONDS,
        lambda: signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGALRM),
    )
    watchdog.daemon = True
    watchdog.start()
    interrupted: BaseException | None = None
    try:
        for name in ROWS:
            if name not in wanted:
                continue
            row = Row(name)
            rows.append(row)
            missing = [t for t in missing_tools(name) if t != "iperf3"]
            if missing:
                row.status = "not installed"
                pkgs = {"wg": "wireguard-tools", "nebula-cert": "nebula", "tincd": "tinc"}
                say(
                    f"missing peer: {name} row skipped, not installed: {', '.join(missing)} "
                    f"(apt-get install --no-install-recommends "
                    f"{' '.join(sorted({pkgs.get(t, t) for t in missing}))}, or --install)"
                )
                continue
            say(f"[{time.monotonic() - started:5.1f} s] {name} ...")
            try:
                if name == "plain veth":
                    row_veth(row, res, workdir, args)
                elif name == "lispmesh":
                    row_lispmesh(row, res, workdir, args, framing)
                else:
                    PEER_ROW[name](row, res, workdir, args)
            except (Exception, AssertionError) as exc:
                row.status = (
                    f"error: {str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}"
                )
                say(f"  {name}: {row.status}")
            finally:
                res.cleanup()  # one row's lab is gone before the next one is measured
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
        why = interrupted or "Ctrl-C or SIGTERM"
        say(f"interrupted ({why}): everything started was stopped and removed")
        if isinstance(interrupted, KeyboardInterrupt):
            return 130

    verdict = compare_with_peers(rows)
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
                        "seconds": args.seconds,
                        "underlay_mtu": UNDERLAY_MTU,
                        "streams": 1,
                        "mtu": {
                            "lispmesh": LISPMESH_MTU,
                            "wireguard-go": WIREGUARD_MTU,
                            "nebula": NEBULA_MTU,
                            "fastd": FASTD_MTU,
                        },
                        "extra_seconds": args.extra_seconds,
                    },
                    "rows": [asdict(r) for r in rows],
                    "framing": framing,
                    "verdict": verdict,
                    "elapsed_s": round(time.monotonic() - started, 1),
                },
                indent=2,
            )
        )
        return 0
    title = (
        f"one TCP stream, {args.seconds} s, underlay MTU {UNDERLAY_MTU}, {os.cpu_count()} CPUs "
        f"(Gbit/s = iperf3 receiver; per core recv'd = Gbit/s / (CPUs x (1 - steal)); "
        f"per CPU-s = Gbit moved per CPU-second of both ends' tunnel daemons)"
    )
    print()
    print_table(rows, title)
    for r in rows:
        for note in r.notes:
            print(f"  {r.path}: {note}")
    print(
        f"tunnel MTUs are each one's default: lispmesh {LISPMESH_MTU} (xtr.mtu), "
        f"wireguard-go {WIREGUARD_MTU}, nebula {NEBULA_MTU}, fastd {FASTD_MTU}; openvpn and "
        "tinc size theirs from the underlay"
    )
    print_framing(framing)
    print_verdict(verdict)
    print(f"elapsed {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
