"""Mapping-system benchmark: one map-server, 10,000 simulated xTRs, 100,000 EID-prefixes.

The realistic deployment is measured, the way the controller configures a map-server: one site
per xTR, each with its own HMAC-SHA-256 key and its own allowed prefix (xTR i owns 10.i.0/24 as
`10.(i >> 8).(i & 255).0/24` and registers ten /28s of it in one Map-Register). Odd-numbered sites
have `proxy_reply: true` (the map-server answers for them), even ones forward (the default).

Everything runs in a network namespace made for the run (`lmbench-<pid>-<hex>`, removed at the
end), on its loopback: the map-server is a real `python -m lispmesh node run --config ms.yml`
process on 127.0.0.1:4342; the load generator is this process (it enters the namespace with
setns), with sockets for its xTRs' Map-Registers (127.0.3.x), its ITRs (127.0.2.x) and its ETRs
(127.0.1.x:4342, the RLOCs every xTR registers, so forwarded Map-Requests come back here).

Phases, each against the real process and, as the ceiling, against the sans-IO core in-process
(`MapServer.handle` on the same bytes, no sockets), printed side by side:

1. Map-Registers, new: all xTRs register (10 EID-records each, want-map-notify, own xTR-ID and
   random nonce), pre-built and pre-signed before the clock starts, sent with a bounded window of
   outstanding messages; "accepted" = a Map-Notify came back (matched by nonce).
2. Map-Registers, refresh: the same xTRs re-register (new nonces) for --seconds.
3. Map-Requests in ECMs for random registered EIDs of forwarding sites: "answered" = the ECM
   (E bit) forwarded to the registered ETR RLOC arrived at the generator's ETR socket.
4. the same for proxy-reply sites: "answered" = a Map-Reply arrived at the ITR socket.
5. the same for unregistered EIDs (half inside a site's allowance, half outside 10/8): negative
   Map-Replies.
6. latency at a fixed offered rate (--paced-rate, the three kinds mixed), far below saturation,
   so the distribution is the service time and not the queue of a full window.
A UDP echo server (asyncio, the node's read loop, no LISP) measured with the same generator shows
what the loopback and the generator alone can carry.

Also: the map-server's RSS (/proc/PID/status VmRSS) before and after the 100,000 registrations,
and tracemalloc's count for the in-process core; CPU seconds of the map-server and of the
generator per phase; CPU steal; UDP receive-buffer errors of the namespace (any drop shows
there); the map-server's own counters (control socket `status`) checked against what was sent.

Usage (root, from the repository root; about 1-2 minutes at the defaults):
    python3 bench/mapping_bench.py [--xtrs 10000] [--prefixes 100000] [--seconds 5] [--json]
                                   [--window 256] [--paced-rate 1000] [--py-spy DIR]
The run is bounded by a watchdog (170 s); the map-server, the echo server and py-spy are stopped
by pid and the namespace is removed, also on Ctrl-C, SIGTERM or a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import hmac
import json
import math
import os
import random
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from hashlib import sha256
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lisp import auth  # noqa: E402
from lisp.ecm import EncapsulatedControl  # noqa: E402
from lisp.map_register import MapNotify, MapRegister  # noqa: E402
from lisp.map_reply import MapReply  # noqa: E402
from lisp.map_request import MapRequest, RequestRecord  # noqa: E402
from lisp.map_server import MapServer, Site  # noqa: E402
from lisp.records import Action, EidRecord, RlocRecord  # noqa: E402
from mesh.control import query  # noqa: E402

WATCHDOG_SECONDS = 170
MS_ADDR = "127.0.0.1"
MS_PORT = 4342
ECHO_PORT = 4399
ETR_ADDRS = ("127.0.1.1", "127.0.1.2")
ITR_ADDRS = ("127.0.2.1", "127.0.2.2")
REG_ADDRS = ("127.0.3.1", "127.0.3.2")
SOURCE_EID = IPv4Address("10.255.255.1")  # the ITR-side EID asking (not registered)
SOCKET_BUFFER = 8 * 1024 * 1024
RECORD_TTL_MINUTES = 3  # what an xTR sends by default (Timers.register_ttl_minutes)
TIMEOUT = 1.0  # an answer later than this counts as lost
CLONE_NEWNET = 0x40000000
KINDS = ("register", "forward", "proxy", "negative")
TARGET_REGISTERS = 10_000
TARGET_REQUESTS = 10_000
TARGET_BYTES = 1024


def progress(message: str) -> None:
    print(f"[mapping_bench] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Machine: namespace, CPU, memory, UDP counters


class Netns:
    """A network namespace of our own; the calling (main) thread enters it with setns."""

    def __init__(self) -> None:
        self.name = f"lmbench-{os.getpid()}-{os.urandom(3).hex()}"
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._home = -1
        self.created = False

    def _setns(self, fd: int) -> None:
        if self._libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")

    def enter(self) -> None:
        subprocess.run(["ip", "netns", "add", self.name], check=True, timeout=20)
        self.created = True
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True, timeout=20)
        self._home = os.open("/proc/self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            self._setns(fd)
        finally:
            os.close(fd)

    def leave_and_remove(self) -> None:
        if self._home >= 0:
            with contextlib.suppress(OSError):
                self._setns(self._home)
            os.close(self._home)
            self._home = -1
        if self.created:
            subprocess.run(["ip", "netns", "del", self.name], check=False, timeout=20)
            self.created = False


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all threads), seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def proc_kb(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def cpu_times() -> tuple[int, int]:
    """(total, steal) jiffies of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values[:8]), values[7]


def udp_counters(pid: int) -> dict[str, int]:
    """The Udp line of the namespace the process `pid` lives in (/proc/PID/net/snmp)."""
    try:
        lines = [ln.split() for ln in Path(f"/proc/{pid}/net/snmp").read_text().splitlines()]
    except OSError:
        return {}
    rows = [ln for ln in lines if ln and ln[0] == "Udp:"]
    if len(rows) < 2:
        return {}
    return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:], strict=False)}


def machine() -> dict[str, Any]:
    load = Path("/proc/loadavg").read_text().split()[:3]
    return {"cpus": os.cpu_count(), "loadavg": [float(x) for x in load], "python": sys.version}


# ---------------------------------------------------------------------------------------------
# The workload: sites, Map-Registers, Map-Requests


def csum_add(total: int, data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    return total + sum(struct.unpack(f"!{len(data) // 2}H", data))


def fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


@dataclass
class Workload:
    xtrs: int
    per_xtr: int
    seed: int
    keys: list[bytes] = field(default_factory=list)
    xtr_ids: list[int] = field(default_factory=list)
    templates: list[bytes] = field(default_factory=list)  # unsigned Map-Registers (nonce 0)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.rng = rng
        self.keys = [f"k{i:05d}-{rng.getrandbits(48):012x}".encode() for i in range(self.xtrs)]
        self.xtr_ids = [rng.getrandbits(128) | 1 for _ in range(self.xtrs)]

    @staticmethod
    def base(i: int) -> int:
        return (10 << 24) | (i << 8)

    @staticmethod
    def proxy(i: int) -> bool:
        return i % 2 == 1

    def sites(self) -> list[Site]:
        return [
            Site(
                f"x{i:05d}",
                {0: self.keys[i]},
                ((0, IPv4Network((self.base(i), 24))),),
                proxy_reply=self.proxy(i),
            )
            for i in range(self.xtrs)
        ]

    def yaml(self, tmp: Path) -> str:
        lines = [
            "name: ms",
            f"state_dir: {tmp / 'state'}",
            f"run_dir: {tmp / 'run'}",
            "log_level: warning",
            "map_server:",
            f"  listen: [{MS_ADDR}]",
            f"  port: {MS_PORT}",
            "  sites:",
        ]
        for i in range(self.xtrs):
            prefix = IPv4Network((self.base(i), 24))
            proxy = ", proxy_reply: true" if self.proxy(i) else ""
            lines.append(
                f'    - {{name: x{i:05d}, keys: {{0: "{self.keys[i].decode()}"}}, '
                f'allowed: ["{prefix}"]{proxy}}}'
            )
        return "\n".join(lines) + "\n"

    def build_templates(self) -> None:
        """One unsigned Map-Register per xTR through lisp.map_register (nonce patched later)."""
        for i in range(self.xtrs):
            rloc = (RlocRecord(IPv4Address(ETR_ADDRS[i % len(ETR_ADDRS)])),)
            records = tuple(
                EidRecord(IPv4Address(self.base(i) + 16 * j), 28, rloc, RECORD_TTL_MINUTES)
                for j in range(self.per_xtr)
            )
            msg = MapRegister(
                nonce=0, records=records, ttl_timeout=True, want_map_notify=True,
                xtr_id=self.xtr_ids[i],
            )  # fmt: skip
            self.templates.append(msg.encode())

    def register_round(self) -> list[tuple[int, bytes, tuple[str, int], bytes, int]]:
        """Every xTR's Map-Register with a fresh random nonce, signed (HMAC-SHA-256 over the
        message with the auth data zeroed: the template already has it zeroed)."""
        items = []
        rng = self.rng
        dest = (MS_ADDR, MS_PORT)
        for i, tmpl in enumerate(self.templates):
            nonce = rng.getrandbits(64).to_bytes(8, "big")
            unsigned = tmpl[:4] + nonce + tmpl[12:]
            digest = hmac.new(self.keys[i], unsigned, sha256).digest()
            data = unsigned[:16] + digest + unsigned[48:]
            items.append((i % len(REG_ADDRS), data, dest, nonce, 0))
        rng.shuffle(items)
        return items

    def request_eid(self, kind: str) -> int:
        rng = self.rng
        if kind == "negative":
            if rng.random() < 0.5:  # inside an allowance, not registered: /28 number 15
                return self.base(rng.randrange(self.xtrs)) + 16 * 15 + rng.randrange(1, 15)
            return (172 << 24) | rng.getrandbits(20)  # outside every allowance
        i = rng.randrange(self.xtrs)
        if self.proxy(i) != (kind == "proxy"):
            i = i - 1 if i > 0 else i + 1
        return self.base(i) + 16 * rng.randrange(self.per_xtr) + rng.randrange(1, 15)


class RequestBuilder:
    """ECM-encapsulated Map-Requests, byte-identical to lisp.map_request + lisp.ecm (checked),
    built from a template with the checksums updated incrementally: about 3 us each instead of
    about 14 us through the dataclasses."""

    def __init__(self, itr: str, port: int) -> None:
        self.itr, self.port = IPv4Address(itr), port
        sample = self.reference(1, 0x0A000001)
        self.template = bytearray(sample)
        # Offsets: ECM 0..3, IPv4 4..23 (checksum 14, dst 20), UDP 24..31 (checksum 30),
        # Map-Request 32..: nonce 36..43, record EID at the end (last 4 bytes).
        self.eid_at = len(sample) - 4
        ip = bytearray(sample[4:24])
        ip[10:12] = b"\0\0"
        ip[16:20] = b"\0\0\0\0"
        self.ip_sum = csum_add(0, bytes(ip))
        udp = bytearray(sample[24:])
        udp[6:8] = b"\0\0"
        udp[12:20] = bytes(8)
        udp[-4:] = b"\0\0\0\0"
        pseudo = SOURCE_EID.packed + struct.pack("!BBH", 0, 17, len(udp))
        self.udp_sum = csum_add(csum_add(0, pseudo), bytes(udp))

    def reference(self, nonce: int, eid: int) -> bytes:
        request = MapRequest(
            nonce, (self.itr,), (RequestRecord(IPv4Address(eid), 32),), source_eid=SOURCE_EID
        )
        ecm = EncapsulatedControl(SOURCE_EID, IPv4Address(eid), request.encode(), self.port)
        return ecm.encode()

    def build(self, nonce: int, eid: int) -> bytes:
        e_hi, e_lo = eid >> 16, eid & 0xFFFF
        n = nonce
        nsum = (n >> 48) + ((n >> 32) & 0xFFFF) + ((n >> 16) & 0xFFFF) + (n & 0xFFFF)
        ip_csum = ~fold(self.ip_sum + e_hi + e_lo) & 0xFFFF
        udp_csum = ~fold(self.udp_sum + 2 * (e_hi + e_lo) + nsum) & 0xFFFF
        packet = self.template
        packet[14:16] = ip_csum.to_bytes(2, "big")
        packet[20:24] = eid.to_bytes(4, "big")
        packet[30:32] = (udp_csum or 0xFFFF).to_bytes(2, "big")
        packet[36:44] = nonce.to_bytes(8, "big")
        packet[self.eid_at :] = eid.to_bytes(4, "big")
        return bytes(packet)


# ---------------------------------------------------------------------------------------------
# The generator: windowed or paced blast, answers matched by nonce


Item = tuple[int, bytes, tuple[str, int], bytes, int]  # socket, data, dest, nonce key, kind


@dataclass
class Phase:
    name: str
    target: str
    sent: int = 0
    answered: int = 0
    lost: int = 0
    unexpected: int = 0
    send_blocked: int = 0
    elapsed: float = 0.0
    ms_cpu: float = math.nan
    gen_cpu: float = 0.0
    steal_pct: float = 0.0
    udp_drops: int = 0
    latencies: dict[str, list[float]] = field(default_factory=dict, repr=False)
    samples: list[bytes] = field(default_factory=list, repr=False)
    gc_pauses: list[float] | None = None  # in-process only: full (gen-2) collections, seconds
    note: str = ""

    @property
    def rate(self) -> float:
        return self.answered / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        all_lat = sorted(x for v in self.latencies.values() for x in v)
        out = {
            "phase": self.name,
            "target": self.target,
            "sent": self.sent,
            "answered": self.answered,
            "lost": self.lost,
            "unexpected": self.unexpected,
            "send_blocked": self.send_blocked,
            "seconds": round(self.elapsed, 3),
            "answered_per_s": round(self.rate, 1),
            "target_cpu_s": round(self.ms_cpu, 3),
            "answered_per_target_cpu_s": round(self.answered / self.ms_cpu, 1)
            if self.ms_cpu and self.ms_cpu == self.ms_cpu
            else None,
            "generator_cpu_s": round(self.gen_cpu, 3),
            "steal_pct": round(self.steal_pct, 1),
            "udp_rcvbuf_errors": self.udp_drops,
            "latency_ms": percentiles(all_lat),
        }
        if len(self.latencies) > 1:
            out["latency_ms_by_kind"] = {
                k: percentiles(sorted(v)) for k, v in sorted(self.latencies.items())
            }
        if self.gc_pauses is not None:
            out["gc_gen2_pauses_ms"] = [round(p * 1e3, 1) for p in self.gc_pauses]
        if self.note:
            out["note"] = self.note
        return out


def percentiles(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))] * 1e3, 3)

    return {"n": len(values), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99),
            "max": round(values[-1] * 1e3, 3)}  # fmt: skip


class Generator:
    def __init__(self) -> None:
        self.socks: list[socket.socket] = []
        self.reg_socks: list[int] = []
        self.itr_socks: list[int] = []
        self.itr_ports: list[int] = []
        for addr in REG_ADDRS:
            self.reg_socks.append(self._open(addr, 0))
        for addr in ITR_ADDRS:
            index = self._open(addr, 0)
            self.itr_socks.append(index)
            self.itr_ports.append(self.socks[index].getsockname()[1])
        for addr in ETR_ADDRS:
            self._open(addr, MS_PORT)
        self.poller = select.epoll()
        self.by_fd = {s.fileno(): s for s in self.socks}
        for s in self.socks:
            self.poller.register(s.fileno(), select.EPOLLIN)

    def _open(self, addr: str, port: int) -> int:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # *BUFFORCE
            try:
                s.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        s.bind((addr, port))
        s.setblocking(False)
        self.socks.append(s)
        return len(self.socks) - 1

    def close(self) -> None:
        self.poller.close()
        for s in self.socks:
            s.close()

    def drain_stale(self) -> int:
        """Throw away whatever arrived after the previous phase ended."""
        n = 0
        for s in self.socks:
            while True:
                try:
                    s.recv(65535)
                except BlockingIOError:
                    break
                n += 1
        return n

    def run(
        self, phase: Phase, items: list[Item], seconds: float, window: int,
        rate: float | None = None, target_pid: int | None = None,
    ) -> Phase:  # fmt: skip
        """Send `items` in order, at most `window` unanswered at a time (and at most `rate` per
        second if given), until they are all answered or `seconds` are over; then wait up to
        TIMEOUT for the stragglers. An answer is matched by its nonce (at byte 4 of a Map-Notify,
        Map-Reply or echo; byte 36 of an ECM with an IPv4 inner header)."""
        self.drain_stale()
        socks, by_fd, poll = self.socks, self.by_fd, self.poller.poll
        perf = time.perf_counter
        names = KINDS
        lat: dict[int, list[float]] = {k: [] for k in {item[4] for item in items}}
        outstanding: dict[bytes, tuple[float, int]] = {}
        pop = outstanding.pop
        n = len(items)
        sent = answered = lost = unexpected = blocked = 0
        samples: list[bytes] = []
        cpu0, ms0, (tot0, steal0) = self_cpu(), self._ms_cpu(target_pid), cpu_times()
        udp0 = udp_counters(target_pid or os.getpid()).get("RcvbufErrors", 0)
        t0 = perf()
        deadline = t0 + seconds
        next_sweep = t0 + 0.1
        last_answer = t0
        sending = True
        while True:
            now = perf()
            if sending and (now >= deadline or sent >= n):
                sending = False
                drain_until = now + TIMEOUT
            if not sending and (not outstanding or now >= drain_until):
                break
            budget = window - len(outstanding) if sending else 0
            if rate is not None and budget > 0:
                budget = min(budget, int((now - t0) * rate) + 1 - sent)
            while budget > 0 and sent < n:
                s, data, dest, key, kind = items[sent]
                try:
                    socks[s].sendto(data, dest)
                except BlockingIOError:
                    blocked += 1
                    break
                outstanding[key] = (perf(), kind)
                sent += 1
                budget -= 1
            timeout = 0 if (sending and budget > 0 and sent < n) else 0.002
            for fd, _ in poll(timeout):
                sock = by_fd[fd]
                while True:
                    try:
                        data = sock.recv(65535)
                    except BlockingIOError:
                        break
                    t = perf()
                    key = data[36:44] if data[0] >> 4 == 8 else data[4:12]
                    entry = pop(key, None)
                    if entry is None:
                        unexpected += 1
                        continue
                    lat[entry[1]].append(t - entry[0])
                    answered += 1
                    last_answer = t
                    if len(samples) < 4:
                        samples.append(data)
            if now >= next_sweep:
                next_sweep = now + 0.1
                old = [k for k, (ts, _) in outstanding.items() if now - ts > TIMEOUT]
                for k in old:
                    del outstanding[k]
                lost += len(old)
        lost += len(outstanding)
        tot1, steal1 = cpu_times()
        phase.sent, phase.answered, phase.lost = sent, answered, lost
        phase.unexpected, phase.send_blocked = unexpected, blocked
        phase.elapsed = last_answer - t0
        phase.gen_cpu = self_cpu() - cpu0
        phase.ms_cpu = self._ms_cpu(target_pid) - ms0
        phase.steal_pct = 100.0 * (steal1 - steal0) / max(1, tot1 - tot0)
        udp1 = udp_counters(target_pid or os.getpid()).get("RcvbufErrors", 0)
        phase.udp_drops = udp1 - udp0
        phase.latencies = {names[k]: v for k, v in lat.items()}
        phase.samples = samples
        return phase

    @staticmethod
    def _ms_cpu(pid: int | None) -> float:
        return proc_cpu(pid) if pid else math.nan


# ---------------------------------------------------------------------------------------------
# The in-process reference: the sans-IO core on the same bytes


def core_phase(core: MapServer, name: str, items: list[Item], seconds: float) -> Phase:
    """Feed `items` to `core.handle` (one call each, timed), until done or `seconds` are over."""
    phase = Phase(name, "in-process core", gc_pauses=[])
    started = [0.0]

    def on_gc(stage: str, info: dict[str, int]) -> None:
        if stage == "start":
            started[0] = time.perf_counter()
        elif info["generation"] == 2 and phase.gc_pauses is not None:
            phase.gc_pauses.append(time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)
    sources = {0: (REG_ADDRS[0], 40000), 1: (REG_ADDRS[1], 40001)}
    handle = core.handle
    perf = time.perf_counter
    lat: dict[int, list[float]] = {}
    cpu0 = self_cpu()
    tot0, steal0 = cpu_times()
    t0 = perf()
    deadline = t0 + seconds
    answered = 0
    clock = time.monotonic()
    for count, (s, data, _dest, _key, kind) in enumerate(items):
        if count % 512 == 0 and perf() >= deadline:
            break
        source = sources.get(s) or (ITR_ADDRS[s - 2], 40000 + s)
        start = perf()
        actions = handle(data, source, clock)
        lat.setdefault(kind, []).append(perf() - start)
        phase.sent += 1
        if actions and type(actions[-1]).__name__ == "SendTo":
            answered += 1
    phase.elapsed = perf() - t0
    gc.callbacks.remove(on_gc)
    phase.answered = answered
    phase.lost = phase.sent - answered
    phase.gen_cpu = self_cpu() - cpu0
    phase.ms_cpu = phase.gen_cpu
    tot1, steal1 = cpu_times()
    phase.steal_pct = 100.0 * (steal1 - steal0) / max(1, tot1 - tot0)
    phase.latencies = {KINDS[k]: v for k, v in lat.items()}
    return phase


def core_memory(workload: Workload, items: list[Item]) -> dict[str, Any]:
    """tracemalloc: bytes the core holds per registration after loading every xTR once."""
    gc.collect()
    tracemalloc.start(1)
    core = MapServer(workload.sites())
    gc.collect()
    before = tracemalloc.take_snapshot()
    base = tracemalloc.get_traced_memory()[0]
    for s, data, _dest, _key, _kind in items:
        core.handle(data, (REG_ADDRS[s], 40000), time.monotonic())
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    top = tracemalloc.take_snapshot().compare_to(before, "lineno")[:8]
    tracemalloc.stop()
    count = core.registration_count()
    return {
        "registrations": count,
        "bytes_total": after - base,
        "bytes_per_registration": round((after - base) / max(1, count), 1),
        "top_allocations": [
            {
                "where": f"{Path(d.traceback[0].filename).name}:{d.traceback[0].lineno}",
                "bytes_per_registration": round(d.size_diff / max(1, count), 1),
                "objects": d.count_diff,
            }
            for d in top
        ],
    }


# ---------------------------------------------------------------------------------------------
# Processes: the map-server, the echo reference, py-spy

ECHO_SERVER = r"""
import asyncio, socket, sys
async def main():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.bind((sys.argv[1], int(sys.argv[2])))
    s.setblocking(False)
    def readable():
        for _ in range(64):
            try:
                data, src = s.recvfrom(65535)
            except BlockingIOError:
                return
            s.sendto(data, src)
    asyncio.get_running_loop().add_reader(s.fileno(), readable)
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


class Processes:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
        handle = log.open("wb")
        proc = subprocess.Popen(
            argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        handle.close()
        self.procs.append(proc)
        return proc.pid

    def stop(self, pid: int) -> None:
        for proc in self.procs:
            if proc.pid == pid and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)

    def alive(self, pid: int) -> bool:
        return any(p.pid == pid and p.poll() is None for p in self.procs)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc.pid)


def wait_for(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {seconds:g} s waiting for {what}")


def ms_status(sock_path: Path, timeout: float = 90.0) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    status = query(sock_path, "status", timeout=timeout)
    return status, time.perf_counter() - t0


def py_spy_top(raw: Path, limit: int = 15) -> list[tuple[str, float]]:
    """Self-time share of the leaf frames in a py-spy `--format raw` (collapsed stacks) file."""
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        leaves[leaf] += int(count)
        total += int(count)
    return [(leaf, 100.0 * n / max(1, total)) for leaf, n in leaves.most_common(limit)]


def py_spy_inclusive(raw: Path, names: list[str]) -> dict[str, float]:
    """Share of samples whose stack contains each function name (inclusive time)."""
    hits: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for name in names:
            if f"{name} (" in stack:
                hits[name] += int(count)
    return {name: round(100.0 * hits[name] / max(1, total), 1) for name in names}


# ---------------------------------------------------------------------------------------------
# Checks of what came back


def check_samples(phase: Phase, workload: Workload) -> str:
    """Decode a few answers with the lisp package: are they what the phase claims to count?"""
    keys_by_site = {}
    problems = []
    for data in phase.samples:
        kind = data[0] >> 4
        try:
            if phase.name.startswith("echo"):
                continue
            if kind == 4:
                notify = MapNotify.decode(data)
                eid = int(notify.records[0].eid)  # type: ignore[arg-type]
                i = ((eid >> 8) & 0xFFFF) if eid >> 24 == 10 else -1
                key = keys_by_site.setdefault(i, workload.keys[i])
                if not auth.verify(data, key):
                    problems.append("Map-Notify HMAC does not verify")
            elif kind == 8:
                ecm = EncapsulatedControl.decode(data)
                if not ecm.to_etr:
                    problems.append("forwarded ECM without the E bit")
                MapRequest.decode(ecm.message)
            elif kind == 2:
                reply = MapReply.decode(data)
                record = reply.records[0]
                if phase.name.startswith("negative") and (
                    record.rlocs or record.action == Action.NO_ACTION
                ):
                    problems.append("negative reply with RLOCs")
                if phase.name.startswith("proxy") and not record.rlocs:
                    problems.append("proxy reply without RLOCs")
            else:
                problems.append(f"unexpected type {kind}")
        except Exception as exc:  # a benchmark check: report, never crash
            problems.append(f"{type(exc).__name__}: {exc}")
    return "; ".join(problems)


# ---------------------------------------------------------------------------------------------
# Main


def fmt_rate(value: float | None) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:,.0f}"


def verdict(value: float | None, target: float, below: bool = False) -> str:
    if value is None or value != value:
        return "n/a"
    ok = value < target if below else value >= target
    return "MET" if ok else "MISSED"


def run(args: argparse.Namespace) -> dict[str, Any]:
    per_xtr = args.prefixes // args.xtrs
    if not 1 <= per_xtr <= 15 or args.prefixes % args.xtrs:
        raise SystemExit("--prefixes must be 1..15 times --xtrs (ten /28s per xTR by default)")
    if not 1 <= args.xtrs <= 65535:
        raise SystemExit("--xtrs must be 1..65535 (one 10.x.y.0/24 each)")
    seconds = args.seconds
    result: dict[str, Any] = {
        "machine": machine(),
        "settings": {
            "xtrs": args.xtrs,
            "prefixes": args.prefixes,
            "records_per_register": per_xtr,
            "sites": args.xtrs,
            "site_layout": "one site per xTR, own key, own /24 allowance",
            "proxy_reply_sites": args.xtrs // 2,
            "seconds": seconds,
            "window": args.window,
            "paced_rate": args.paced_rate,
            "hmac": "HMAC-SHA-256",
        },
    }
    workload = Workload(args.xtrs, per_xtr, args.seed)
    t = time.perf_counter()
    workload.build_templates()
    new_round = workload.register_round()
    result["settings"]["register_bytes"] = len(new_round[0][1])
    progress(
        f"built {args.xtrs:,} Map-Register templates ({len(new_round[0][1])} bytes, "
        f"{per_xtr} records) in {time.perf_counter() - t:.1f} s"
    )
    # Self-checks: the fast builders give what the library gives.
    for _s, data, _d, _k, _kind in new_round[:50]:
        msg = MapRegister.decode(data)
        i = (int(msg.records[0].eid) >> 8) & 0xFFFF  # type: ignore[arg-type]
        if not auth.verify(data, workload.keys[i]) or msg.xtr_id != workload.xtr_ids[i]:
            raise RuntimeError("pre-signed Map-Register does not verify")

    netns = Netns()
    procs = Processes()
    gen: Generator | None = None
    tmp = Path(tempfile.mkdtemp(prefix="lmbench-ms-"))
    try:
        netns.enter()
        progress(f"namespace {netns.name}")
        gen = Generator()
        builders = [RequestBuilder(ITR_ADDRS[k], gen.itr_ports[k]) for k in range(2)]
        rng = random.Random(args.seed + 1)
        for b in builders:
            for _ in range(50):
                nonce, eid = rng.getrandbits(64), (10 << 24) | rng.getrandbits(24)
                if b.build(nonce, eid) != b.reference(nonce, eid):
                    raise RuntimeError("fast Map-Request builder differs from lisp.ecm")

        def requests(kind: str, count: int) -> list[Item]:
            items: list[Item] = []
            kind_id = KINDS.index(kind)
            for n in range(count):
                k = n & 1
                nonce = workload.rng.getrandbits(64)
                data = builders[k].build(nonce, workload.request_eid(kind))
                items.append((gen.itr_socks[k], data, (MS_ADDR, MS_PORT), data[36:44], kind_id))
            return items

        # -- the in-process reference (also sizes the pre-built lists) ---------------------
        progress("in-process core: registers, requests")
        core = MapServer(workload.sites())
        ref: dict[str, Phase] = {}
        ref["register-new"] = core_phase(core, "register-new", new_round, 60)
        refresh_ref = workload.register_round()
        ref["register-refresh"] = core_phase(core, "register-refresh", refresh_ref, seconds)
        ref_req = {}
        for kind in ("forward", "proxy", "negative"):
            ref_req[kind] = requests(kind, int(min(100_000, max(5_000, 8_000 * seconds))))
            ref[kind] = core_phase(core, kind, ref_req[kind], seconds)
        del core
        gc.collect()
        progress("in-process core: tracemalloc per registration")
        memory = core_memory(workload, new_round)
        result["core_memory"] = memory
        gc.collect()

        # -- pre-build the real-process load ------------------------------------------------
        rounds_needed = math.ceil(1.5 * ref["register-refresh"].rate * seconds / args.xtrs) + 1
        rounds_needed = max(1, min(rounds_needed, 30))
        t = time.perf_counter()
        refresh_items: list[Item] = []
        for _ in range(rounds_needed):
            refresh_items += workload.register_round()
        req_items: dict[str, list[Item]] = {}
        for kind in ("forward", "proxy", "negative"):
            count = int(min(400_000, max(10_000, 1.3 * ref[kind].rate * seconds)))
            req_items[kind] = requests(kind, count)
        paced_n = int(args.paced_rate * seconds) + 10
        paced: list[Item] = []
        for kind in ("forward", "proxy", "negative"):
            paced += requests(kind, paced_n // 3 + 1)
        workload.rng.shuffle(paced)
        progress(
            f"pre-built {len(refresh_items):,} refresh Map-Registers and "
            f"{sum(map(len, req_items.values())) + len(paced):,} Map-Requests in "
            f"{time.perf_counter() - t:.1f} s"
        )

        # -- the real map-server process ---------------------------------------------------
        config = tmp / "ms.yml"
        config.write_text(workload.yaml(tmp))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        sock_path = tmp / "run" / "ms.sock"
        t = time.perf_counter()
        ms_pid = procs.start(
            [sys.executable, "-m", "lispmesh", "node", "run", "--config", str(config)],
            tmp / "ms.log", env,
        )  # fmt: skip

        def ready() -> bool:
            if not procs.alive(ms_pid):
                tail = (tmp / "ms.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"map-server exited:\n{tail}")
            if not sock_path.exists():
                return False
            try:
                query(sock_path, "status", timeout=5)
            except Exception:
                return False
            return True

        wait_for(ready, 90, "the map-server's control socket")
        startup = time.perf_counter() - t
        time.sleep(0.5)
        rss0 = proc_kb(ms_pid, "VmRSS")
        progress(
            f"map-server pid {ms_pid} up in {startup:.1f} s with {args.xtrs:,} sites, "
            f"RSS {rss0 / 1024:.1f} MB"
        )
        real: dict[str, Phase] = {}
        spy: dict[str, Any] = {}

        def spy_start(name: str, duration: float) -> subprocess.Popen[bytes] | None:
            if not args.py_spy or not shutil.which("py-spy"):
                return None
            out = Path(args.py_spy) / f"{name}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            argv = ["py-spy", "record", "-p", str(ms_pid), "-d", str(max(1, int(duration))),
                    "-r", "200", "--nonblocking", "-f", "raw", "-o", str(out)]  # fmt: skip
            pid = procs.start(argv, tmp / f"py-spy-{name}.log")
            time.sleep(1.0)  # py-spy attaches
            spy[name] = out
            return next(p for p in procs.procs if p.pid == pid)

        def spy_wait(proc: subprocess.Popen[bytes] | None) -> None:
            if proc is not None:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    procs.stop(proc.pid)

        progress(f"real process: {args.xtrs:,} new Map-Registers (window {args.window})")
        real["register-new"] = gen.run(
            Phase("register-new", "map-server process"), new_round, 60, args.window,
            target_pid=ms_pid,
        )  # fmt: skip
        time.sleep(0.5)
        rss1 = proc_kb(ms_pid, "VmRSS")
        progress(f"refresh Map-Registers for {seconds} s")
        proc = spy_start("register", seconds)
        real["register-refresh"] = gen.run(
            Phase("register-refresh", "map-server process"), refresh_items, seconds,
            args.window, target_pid=ms_pid,
        )  # fmt: skip
        spy_wait(proc)
        time.sleep(0.3)
        rss2 = proc_kb(ms_pid, "VmRSS")
        for kind in ("forward", "proxy", "negative"):
            progress(f"{kind} Map-Requests for {seconds} s")
            proc = spy_start(kind, seconds) if kind == "forward" else None
            real[kind] = gen.run(
                Phase(kind, "map-server process"), req_items[kind], seconds, args.window,
                target_pid=ms_pid,
            )  # fmt: skip
            spy_wait(proc)
        progress(f"paced mixed Map-Requests at {args.paced_rate:,}/s for {seconds} s")
        real["paced"] = gen.run(
            Phase("paced", "map-server process"), paced, seconds, 4 * args.window,
            rate=args.paced_rate, target_pid=ms_pid,
        )  # fmt: skip
        progress("map-server status (counters)")
        status, status_seconds = ms_status(sock_path)
        ms_counters = status.get("map_server", {}).get("counters", {})
        reg_count = status.get("map_server", {}).get("registration_count")
        result["map_server"] = {
            "pid": ms_pid,
            "startup_s": round(startup, 2),
            "rss_kb_start": rss0,
            "rss_kb_after_new": rss1,
            "rss_kb_after_refresh": rss2,
            "rss_kb_end": proc_kb(ms_pid, "VmRSS"),
            "hwm_kb": proc_kb(ms_pid, "VmHWM"),
            "registration_count": reg_count,
            "rss_bytes_per_registration": round((rss1 - rss0) * 1024 / max(1, reg_count or 1), 1),
            "status_query_s": round(status_seconds, 2),
            "counters": ms_counters,
            "runtime_errors": status.get("runtime_errors", {}),
        }
        procs.stop(ms_pid)

        # -- the UDP echo reference -----------------------------------------------------------
        echo_pid = procs.start(
            [sys.executable, "-c", ECHO_SERVER, MS_ADDR, str(ECHO_PORT)], tmp / "echo.log"
        )
        wait_for(lambda: (tmp / "echo.log").read_text().startswith("ready"), 20, "echo server")
        echo_seconds = min(seconds, 3)
        dest = (MS_ADDR, ECHO_PORT)
        echo_regs = [(s, d, dest, k, kind) for s, d, _x, k, kind in refresh_items]
        echo_reqs = [(s, d, dest, k, kind) for s, d, _x, k, kind in req_items["forward"]]
        progress("UDP echo reference")
        echo = {
            "register": gen.run(Phase("echo-register", "UDP echo"), echo_regs,
                                    echo_seconds, args.window, target_pid=echo_pid),
            "request": gen.run(Phase("echo-request", "UDP echo"), echo_reqs, echo_seconds,
                               args.window, target_pid=echo_pid),
        }  # fmt: skip
        procs.stop(echo_pid)
    finally:
        procs.stop_all()
        if gen is not None:
            gen.close()
        netns.leave_and_remove()
        shutil.rmtree(tmp, ignore_errors=True)

    for phase in real.values():
        phase.note = check_samples(phase, workload)
    result["in_process"] = {k: p.summary() for k, p in ref.items()}
    result["real_process"] = {k: p.summary() for k, p in real.items()}
    result["echo"] = {k: p.summary() for k, p in echo.items()}
    if spy:
        interesting = ["_register", "handle_register", "decode", "encode", "verify", "sign",
                       "_store", "_map_request", "_control_readable", "_ms_send", "handle",
                       "_run_once", "select"]  # fmt: skip
        result["py_spy"] = {
            name: {
                "file": str(path),
                "top_self_pct": [(leaf, round(pct, 1)) for leaf, pct in py_spy_top(path)],
                "inclusive_pct": py_spy_inclusive(path, interesting),
            }
            for name, path in spy.items()
            if path.exists()
        }
    ms = result["map_server"]
    expected = {
        "map-register": sum(real[p].sent for p in ("register-new", "register-refresh")),
        "map-request": sum(real[p].sent for p in ("forward", "proxy", "negative", "paced")),
    }
    result["counter_check"] = {
        "sent_registers": expected["map-register"],
        "ms_map_register": ms["counters"].get("map-register", 0),
        "ms_map_notify": ms["counters"].get("map-notify", 0),
        "sent_requests": expected["map-request"],
        "ms_map_request": ms["counters"].get("map-request", 0),
        "ms_forwarded": ms["counters"].get("forwarded", 0),
        "ms_proxy_reply": ms["counters"].get("proxy-reply", 0),
        "ms_negative_reply": ms["counters"].get("negative-reply", 0),
        "ms_refused": {
            k: v for k, v in ms["counters"].items()
            if k not in ("map-register", "map-notify", "map-request", "forwarded",
                         "proxy-reply", "negative-reply", "registered", "new-registration",
                         "rloc-set-changed")
        },
    }  # fmt: skip
    rss_b = ms["rss_bytes_per_registration"]
    req_min = min(real[k].rate for k in ("forward", "proxy", "negative"))
    result["targets"] = {
        "map_registers_per_s": {
            "target": TARGET_REGISTERS,
            "new": round(real["register-new"].rate),
            "refresh": round(real["register-refresh"].rate),
            "verdict": verdict(
                min(real["register-new"].rate, real["register-refresh"].rate), TARGET_REGISTERS
            ),
        },
        "map_requests_per_s": {
            "target": TARGET_REQUESTS,
            **{k: round(real[k].rate) for k in ("forward", "proxy", "negative")},
            "verdict": verdict(req_min, TARGET_REQUESTS),
        },
        "bytes_per_registration": {
            "target": f"< {TARGET_BYTES}",
            "rss": rss_b,
            "tracemalloc": memory["bytes_per_registration"],
            "verdict": verdict(max(rss_b, memory["bytes_per_registration"]), TARGET_BYTES, True),
        },
    }
    return result


def print_report(r: dict[str, Any]) -> None:
    s, ms = r["settings"], r["map_server"]
    ip, rp, ep = r["in_process"], r["real_process"], r["echo"]
    m = r["machine"]
    print(
        f"\nMapping system: {s['xtrs']:,} xTRs = {s['sites']:,} sites (one per xTR, own "
        f"HMAC-SHA-256 key, own /24), {s['prefixes']:,} EID-prefixes ({s['records_per_register']}"
        f" /28s per {s['register_bytes']}-byte Map-Register), half the sites proxy-reply"
    )
    print(
        f"machine: {m['cpus']} CPUs, load {m['loadavg']}; window {s['window']} outstanding, "
        f"{s['seconds']} s per phase; map-server started in {ms['startup_s']} s\n"
    )
    rows = [
        ("Map-Registers/s, new (10 records each)", "register-new"),
        ("Map-Registers/s, refresh", "register-refresh"),
        ("Map-Requests/s, forwarded to ETR (ECM)", "forward"),
        ("Map-Requests/s, proxy Map-Reply", "proxy"),
        ("Map-Requests/s, negative Map-Reply", "negative"),
    ]
    print(f"{'':40} {'in-process core':>17} {'map-server process':>19} {'UDP echo':>9}")
    print(f"{'':40} {'/s':>8} {'/CPU-s':>8} {'/s':>9} {'/MS CPU-s':>9} {'/s':>9} {'target':>7}")
    for label, key in rows:
        target = TARGET_REGISTERS if key.startswith("register") else TARGET_REQUESTS
        real = rp[key]["answered_per_s"]
        echo = ep["register" if key.startswith("register") else "request"]["answered_per_s"]
        print(
            f"{label:40} {fmt_rate(ip[key]['answered_per_s']):>8} "
            f"{fmt_rate(ip[key]['answered_per_target_cpu_s']):>8} {fmt_rate(real):>9} "
            f"{fmt_rate(rp[key]['answered_per_target_cpu_s']):>9} {fmt_rate(echo):>9} "
            f"{target:>7,} {verdict(real, target)}"
        )
    cm = r["core_memory"]
    print(
        f"{'bytes per registration':40} {cm['bytes_per_registration']:>17,.0f} "
        f"{ms['rss_bytes_per_registration']:>19,.0f} {'':9} {'< 1,024':>7} "
        f"{r['targets']['bytes_per_registration']['verdict']}"
    )
    mb = {k: ms[k] / 1024 for k in ("rss_kb_start", "rss_kb_after_new", "rss_kb_after_refresh")}
    print(
        "  (in-process: tracemalloc of the core; process: VmRSS after - before the new "
        f"registrations; RSS {mb['rss_kb_start']:.1f} -> {mb['rss_kb_after_new']:.1f} MB, "
        f"after refresh {mb['rss_kb_after_refresh']:.1f} MB, peak {ms['hwm_kb'] / 1024:.1f} MB"
        " after the status query)"
    )

    print("\nPhases (real process unless marked; latency = send -> answer by nonce, ms)")
    print(
        f"{'phase':22} {'sent':>8} {'answered':>8} {'lost':>5} {'s':>6} {'/s':>8} "
        f"{'p50':>7} {'p90':>7} {'p99':>7} {'max':>7} {'tgt CPU s':>9} {'gen CPU s':>9} "
        f"{'steal%':>6} {'rcvbuf':>6}"
    )
    listing = [(f"core {k}", v) for k, v in ip.items()]
    listing += [(k, v) for k, v in rp.items()] + [(f"{k} (echo)", v) for k, v in ep.items()]
    for name, p in listing:
        lat = p["latency_ms"]
        print(
            f"{name:22} {p['sent']:>8,} {p['answered']:>8,} {p['lost']:>5,} {p['seconds']:>6.2f} "
            f"{fmt_rate(p['answered_per_s']):>8} {lat.get('p50', '-'):>7} {lat.get('p90', '-'):>7}"
            f" {lat.get('p99', '-'):>7} {lat.get('max', '-'):>7} {p['target_cpu_s']:>9.2f} "
            f"{p['generator_cpu_s']:>9.2f} {p['steal_pct']:>6.1f} {p['udp_rcvbuf_errors']:>6}"
        )
    paced = rp["paced"]
    print(f"\nMap-Reply latency at {s['paced_rate']:,}/s offered (mixed), ms:")
    for kind, lat in paced.get("latency_ms_by_kind", {}).items():
        print(
            f"  {kind:9} n={lat['n']:>6,}  p50 {lat.get('p50')}  p90 {lat.get('p90')}  "
            f"p99 {lat.get('p99')}  max {lat.get('max')}"
        )
    print("  (core rows: the time of one MapServer.handle call; 'core' CPU s = this process)")
    pauses = ip["register-new"].get("gc_gen2_pauses_ms", [])
    print(
        f"in-process full (gen-2) GC collections while loading the registrations: {len(pauses)}, "
        f"{sum(pauses):,.0f} ms in all, longest {max(pauses, default=0):,.0f} ms"
    )
    cc = r["counter_check"]
    print(
        f"\nmap-server counters: map-register {cc['ms_map_register']:,} (sent "
        f"{cc['sent_registers']:,}), map-notify {cc['ms_map_notify']:,}; map-request "
        f"{cc['ms_map_request']:,} (sent {cc['sent_requests']:,}): forwarded "
        f"{cc['ms_forwarded']:,}, proxy-reply {cc['ms_proxy_reply']:,}, negative "
        f"{cc['ms_negative_reply']:,}; registrations {ms['registration_count']:,}; "
        f"other {cc['ms_refused'] or 'none'}; runtime errors {ms['runtime_errors'] or 'none'}"
    )
    print(f"status query with every registration took {ms['status_query_s']} s")
    notes = [f"{k}: {v['note']}" for k, v in rp.items() if v.get("note")]
    print("answer checks: " + ("; ".join(notes) if notes else "all sampled answers decode "
                                "and verify (Map-Notify HMAC, E bit, RLOCs)"))  # fmt: skip
    print("\nTop allocations per registration (tracemalloc, in-process core):")
    for a in cm["top_allocations"][:6]:
        print(f"  {a['where']:32} {a['bytes_per_registration']:>8} B")
    for name, spy in r.get("py_spy", {}).items():
        print(f"\npy-spy, map-server during '{name}' (self time of leaf frames):")
        for leaf, pct in spy["top_self_pct"][:12]:
            print(f"  {pct:5.1f}%  {leaf}")
        print("  inclusive: " + ", ".join(f"{k} {v}%" for k, v in spy["inclusive_pct"].items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--xtrs", type=int, default=10_000)
    parser.add_argument("--prefixes", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="per timed phase (1..10)")
    parser.add_argument("--window", type=int, default=256, help="unanswered messages at most")
    parser.add_argument("--paced-rate", type=int, default=1000, help="offered Map-Requests/s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--py-spy", metavar="DIR", help="record the map-server (raw stacks)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("mapping_bench: needs root (it creates a network namespace)", file=sys.stderr)
        return 2
    if not 1 <= args.seconds <= 10 or not 1 <= args.window <= 4096:
        print("mapping_bench: --seconds is 1..10, --window 1..4096", file=sys.stderr)
        return 2

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"watchdog: the benchmark ran past {WATCHDOG_SECONDS} s")

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(WATCHDOG_SECONDS)
    try:
        result = run(args)
    except (TimeoutError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"mapping_bench: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
    if args.json:
        json.dump(result, sys.stdout, indent=1, default=str)
        print()
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
