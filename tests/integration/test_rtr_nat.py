"""A node behind a port-restricted NAT reached through an RTR (mesh.rtr), on real processes.

    ms  (10.0.9.2) ──┐
    rtr (10.0.6.2) ──┼── wan ──┬── p (10.0.8.2, public)
                               └── nat (10.0.3.2 | 192.168.3.1) ── n (192.168.3.2)

The NAT masquerades (port-restricted) with its conntrack UDP timeouts lowered to NAT_TIMEOUT, so
a keepalive period that is too long loses the binding. n runs the Python data path, p the C one
(dataplane auto), so both carry relayed traffic.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from certs.files import read_certificate, read_private_key
from lisp.address import DistinguishedName
from lisp.info import InfoMessage
from lisp.relay import control_frame
from lispmesh.waiting import wait_until
from mesh.control import ControlError, query
from mesh.identity import KxTranscript, NodeIdentity, make_proof
from mesh.rtr_proof import request_subject
from netlab import netns
from netlab.lab import Lab
from netlab.testing import lab_up
from tests.lab_identities import provision_lab_identities

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

REPO = Path(__file__).resolve().parents[2]
TOOLS = Path(__file__).parent / "tools"
KEY = "rtr-lab-site-key"
MS = "10.0.9.2"
NAT_TIMEOUT = 6  # seconds (conntrack UDP, both kinds)
KEEPALIVE = 2.0
ADDRESSES = {"rtr": "10.0.6.2", "p": "10.0.8.2", "n": "192.168.3.2", "rtr2": "10.0.7.2"}
EIDS = {"rtr": 1, "p": 2, "n": 3, "rtr2": 4}


def eid(node: str) -> str:
    return f"10.1.{EIDS[node]}.1"


def topology(workdir: Path, natted_dataplane: str = "python", rtrs: int = 1) -> Path:
    """The lab file (bench/rtr_bench.py builds it too, with the C data path on n); `rtrs=2`
    adds a second RTR, rtr2 (10.0.7.2), listed after rtr in every node's configuration."""
    names = ["rtr", "p", "n"] + (["rtr2"] if rtrs == 2 else [])
    idents = provision_lab_identities(
        workdir / "pki", "rtr-ca", {n: [(0, f"10.1.{EIDS[n]}.0/24")] for n in names}
    )
    relays = [{"name": r, "address": ADDRESSES[r]} for r in ("rtr", "rtr2")[:rtrs]]
    run = f"{sys.executable} -m lispmesh node run --config"
    env = {"PYTHONPATH": str(REPO)}
    nodes: dict[str, Any] = {"wan": {"kind": "router", "addresses": {}}}
    links: list[dict[str, Any]] = []
    ports = iter(range(1, 10))

    def uplink(node: str, address: str) -> None:
        prefix = address.rsplit(".", 1)[0]
        port = f"eth{next(ports)}"
        nodes["wan"]["addresses"][port] = [f"{prefix}.1/24"]
        nodes[node]["addresses"]["eth1"] = [f"{address}/24"]
        nodes[node]["routes"] = [f"default via {prefix}.1"]
        links.append({"endpoints": [f"wan:{port}", f"{node}:eth1"]})

    def command(name: str, data: dict[str, Any]) -> str:
        path = workdir / f"{name}.yml"
        path.write_text(yaml.safe_dump(data))
        return f"{run} {path}"

    ms = {
        "name": "ms",
        "run_dir": str(workdir / "run"),
        "state_dir": str(workdir / "state" / "ms"),
        "map_server": {
            "listen": [MS],
            "sites": [{"name": "lab", "keys": {0: KEY}, "allowed": ["10.1.0.0/16"]}],
        },
    }
    nodes["ms"] = {"kind": "lispmesh-node", "cmd": command("ms", ms), "env": env, "addresses": {}}
    uplink("ms", MS)
    for name in names:
        index = EIDS[name]
        ident = idents[name]
        xtr: dict[str, Any] = {
            "tun": "lm0",
            "eid_prefixes": [f"10.1.{index}.0/24"],
            "eid_addresses": [eid(name)],
            "overlay_routes": ["10.1.0.0/16"],
            "rlocs": [{"address": ADDRESSES[name], "interface": "eth1"}],
            "map_servers": [{"address": MS, "key": KEY}],
            "rtrs": relays,
            "rtr_keepalive": KEEPALIVE,
            "timers": {"register_interval": 5},
        }
        if name.startswith("rtr"):
            xtr["rtr"] = {"stale_after": 3 * KEEPALIVE}
        config = {
            "name": name,
            "run_dir": str(workdir / "run"),
            "state_dir": str(workdir / "state" / name),
            "dataplane": natted_dataplane if name == "n" else "auto",
            "identity": {k: str(ident / f) for k, f in
                         (("key", "node.key"), ("cert", "node.crt"), ("ca", "ca.crt"))},
            "xtr": xtr,
        }  # fmt: skip
        nodes[name] = {"kind": "lispmesh-node", "cmd": command(name, config), "env": env,
                       "addresses": {}}  # fmt: skip
        if name != "n":
            uplink(name, ADDRESSES[name])
    nodes["nat"] = {
        "kind": "nat",
        "nat": {"outside": "eth1", "profile": "port-restricted", "udp-timeout": NAT_TIMEOUT},
        "addresses": {"eth2": ["192.168.3.1/24"]},
    }
    uplink("nat", "10.0.3.2")
    nodes["n"]["addresses"]["eth1"] = [f"{ADDRESSES['n']}/24"]
    nodes["n"]["routes"] = ["default via 192.168.3.1"]
    links.append({"endpoints": ["nat:eth2", "n:eth1"]})
    topo = {
        "name": "rtrnat",
        "topology": {"defaults": {"network-mode": "none"}, "nodes": nodes, "links": links},
    }
    path = workdir / "rtrnat.clab.yml"
    path.write_text(yaml.safe_dump(topo, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Path, float]]:
    workdir = tmp_path_factory.mktemp("rtrnat")
    started = time.monotonic()
    with lab_up(topology(workdir), workdir) as built:
        yield built, workdir, started


def _status(run: Path, node: str) -> dict[str, Any] | None:
    try:
        return query(run / f"{node}.sock", "status")
    except ControlError:
        return None


def _dump(run: Path) -> str:
    """What each node says, for a failure message."""
    out = []
    for node in ("p", "rtr", "n"):
        doc = (_status(run, node) or {}).get("xtr", {})
        keep = ("peers", "drops", "stats", "nat_relay", "rtr", "map_cache", "errors")
        out.append(f"{node}: {yaml.safe_dump({k: doc.get(k) for k in keep})}")
    return "\n".join(out)


def _ping(lab: Lab, node: str, address: str) -> bool:
    done = lab.exec(node, ["ping", "-c", "1", "-W", "1", address])
    return done.returncode == 0


def _peer(run: Path, node: str, name: str) -> dict[str, Any] | None:
    doc = _status(run, node)
    peers = {p["name"]: p for p in (doc or {}).get("xtr", {}).get("peers", [])}
    return peers.get(name)


def _tcp(lab: Lab, run: Path, src: str, dst: str, size: int = 300_000) -> None:
    port = random.randint(20000, 40000)
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def python(node: str, args: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["ip", "netns", "exec", lab.netns_name(node), sys.executable,
             str(TOOLS / "tcp_transfer.py"), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip

    server = python(dst, ["serve", str(port)])
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        client = python(src, ["send", eid(dst), str(port), str(size)])
        sent, client_err = client.communicate(timeout=60)
        received, _ = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=5)
    why = f"TCP {src} -> {dst} failed: {client_err[-200:]}\n{_dump(run)}"
    assert client.returncode == 0, why
    assert sent.split() == received.split() and sent.split()[0] == str(size)


def test_public_and_natted_nodes_ping_and_tcp_through_the_rtr(
    lab: tuple[Lab, Path, float],
) -> None:
    netlab_lab, workdir, started = lab
    run = workdir / "run"
    wait_until(lambda: _ping(netlab_lab, "p", eid("n")), 60, "p reaches n behind the NAT")
    reachable_after = time.monotonic() - started
    wait_until(lambda: _ping(netlab_lab, "n", eid("p")), 30, "n reaches p")
    _tcp(netlab_lab, run, "p", "n")
    _tcp(netlab_lab, run, "n", "p")
    for node, other in (("p", "n"), ("n", "p")):
        peer = wait_until(lambda: _peer(run, node, other), 10, f"{node} knows {other}")  # noqa: B023
        assert peer["path"] == "rtr:rtr", peer
    n_doc = _status(run, "n")
    assert n_doc is not None and n_doc["xtr"]["nat_relay"]["via"] == "rtr"
    rtr_doc = _status(run, "rtr")
    assert rtr_doc is not None
    (binding,) = [b for b in rtr_doc["xtr"]["rtr"]["bindings"] if b["node"] == "n"]
    assert binding["endpoint"].startswith("10.0.3.2:"), binding  # the NAT's outside address
    stats = rtr_doc["xtr"]["stats"]
    assert stats["rtr-relayed-to-nat"] > 0 and stats["rtr-relayed-from-nat"] > 0
    # The RTR never held n's keys, nor p's unless it sent p traffic of its own (the uplink
    # test of this module pings p from the RTR): what it relays stays sealed end to end.
    keys = rtr_doc["xtr"]["keys"]
    own = {k["peer"] for k in keys["encap"] if k["packets"] > 0}
    held = {k["peer"] for k in keys["decap"]}
    assert "n" not in held and "n" not in own, keys
    assert held & {"p"} <= own, keys
    p_doc = _status(run, "p")
    assert p_doc is not None and p_doc["xtr"]["dataplane"] == "c"
    assert p_doc["xtr"]["stats"]["relayed-in"] > 0 and p_doc["xtr"]["stats"]["relayed-out"] > 0
    trace = query(run / "p.sock", "trace", timeout=15, eid=eid("n"), wait=2)
    assert trace["path"] == "rtr:rtr" and trace["reached"], trace
    assert [h["role"] for h in trace["hops"]] == ["itr", "map-resolver", "rtr", "etr"], trace
    print(f"\nn reachable from p {reachable_after:.1f} s after the lab started")


def test_traffic_flows_after_idling_twice_the_nat_timeout(lab: tuple[Lab, Path, float]) -> None:
    netlab_lab, workdir, _ = lab
    wait_until(lambda: _ping(netlab_lab, "p", eid("n")), 60, "p reaches n")
    # Idle means no overlay traffic (keepalives and probes still run, which is the point).
    time.sleep(2 * NAT_TIMEOUT + 1)  # the property under test is a duration of silence
    run = workdir / "run"
    assert _ping(netlab_lab, "p", eid("n")) or _ping(netlab_lab, "p", eid("n")), _dump(run)
    assert _ping(netlab_lab, "n", eid("p")) or _ping(netlab_lab, "n", eid("p")), _dump(run)


def test_a_spoofed_keepalive_from_another_namespace_cannot_take_the_binding(
    lab: tuple[Lab, Path, float],
) -> None:
    netlab_lab, workdir, _ = lab
    run = workdir / "run"
    wait_until(lambda: _ping(netlab_lab, "p", eid("n")), 60, "p reaches n")

    def binding() -> str | None:
        doc = _status(run, "rtr")
        found = [b for b in (doc or {"xtr": {"rtr": {"bindings": []}}})["xtr"]["rtr"]["bindings"]
                 if b["node"] == "n"]  # fmt: skip
        return found[0]["endpoint"] if found else None

    before = binding()
    assert before is not None and before.startswith("10.0.3.2:")
    # From the map-server's namespace: lispers.net's unauthenticated keepalive naming n's uplink,
    # and one signed by p (a genuine mesh certificate) claiming the same uplink.
    pdir = workdir / "pki" / "p"
    p_identity = NodeIdentity(
        "p", read_private_key(pdir / "node.key"), read_certificate(pdir / "node.crt")
    )
    now_ms = int(time.time() * 1000)
    signed = make_proof(
        p_identity,
        KxTranscript("binding", 7, 0, 1, request_subject("rtr", ADDRESSES["n"]), (), (), now_ms),
    )
    forged = [
        InfoMessage(6, eid=DistinguishedName(ADDRESSES["n"])),
        InfoMessage(7, eid=DistinguishedName(ADDRESSES["n"]), payload=signed),
    ]

    def attack() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((MS, 0))
            for message in forged:
                s.sendto(control_frame(message.encode()), (ADDRESSES["rtr"], 4341))

    netns.run_in(netlab_lab.netns_name("ms"), attack)
    doc = wait_until(
        lambda: (d := _status(run, "rtr")) and d["xtr"]["drops"].get("rtr-binding-refused", 0) >= 1
        and d, 10, "the RTR refused the unauthenticated keepalive",
    )  # fmt: skip
    assert binding() == before, doc["xtr"]["rtr"]
    # p's own signed claim moved only p's binding (it names p's certificate), never n's.
    endpoints = {b["node"]: b["endpoint"] for b in doc["xtr"]["rtr"]["bindings"]}
    assert endpoints.get("p", MS).startswith(MS) and endpoints["n"] == before
    assert _ping(netlab_lab, "p", eid("n")) or _ping(netlab_lab, "p", eid("n"))


def _readdress(lab: Lab, node: str, old: str, new: str) -> None:
    """A DHCP renew with a new address: the old one goes, the new one and the route come."""
    ns, gateway = lab.netns_name(node), new.rsplit(".", 1)[0] + ".1"
    for argv in (
        ["addr", "del", f"{old}/24", "dev", "eth1"],
        ["addr", "add", f"{new}/24", "dev", "eth1"],
        ["route", "replace", "default", "via", gateway],
    ):
        subprocess.run(["ip", "-n", ns, *argv], check=True, capture_output=True)


def _pinger(lab: Lab, node: str, address: str) -> subprocess.Popen[str]:
    """A ping every 50 ms with the time of each answer (ping -D), read by _answered."""
    argv = ["ip", "netns", "exec", lab.netns_name(node), "ping", "-D", "-n", "-i", "0.05",
            "-W", "1", "-w", "60", address]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    proc.answers = []  # type: ignore[attr-defined]
    return proc


def _answered(proc: subprocess.Popen[str], after: float = 0.0) -> float | None:
    """The time of the first answer after `after` (Unix time), reading what ping printed."""
    assert proc.stdout is not None
    answers: list[float] = proc.answers  # type: ignore[attr-defined]
    for line in proc.stdout.readlines():
        if "bytes from" in line and line.startswith("["):
            answers.append(float(line[1 : line.index("]")]))
    return next((t for t in answers if t > after), None)


def _longest_silence(proc: subprocess.Popen[str], around: float) -> float:
    """The longest time between two answers, from the last answer before `around` on."""
    answers: list[float] = sorted(proc.answers)  # type: ignore[attr-defined]
    start = max((i for i, t in enumerate(answers) if t <= around), default=0)
    tail = answers[start:]
    return max((b - a for a, b in itertools.pairwise(tail)), default=0.0)


def test_a_node_whose_uplink_address_changes_keeps_its_sessions(
    lab: tuple[Lab, Path, float],
) -> None:
    """p's uplink changes address during a TCP transfer from n (behind the NAT, relayed): p
    re-registers and SMRs its peers, the RTR node (direct) and n (relayed) reach it at the new
    address, and the transfer completes on the same connection. The outage is printed."""
    netlab_lab, workdir, _ = lab
    run = workdir / "run"
    old, new = ADDRESSES["p"], "10.0.8.22"
    wait_until(lambda: _ping(netlab_lab, "n", eid("p")), 60, "n reaches p")
    wait_until(lambda: _ping(netlab_lab, "rtr", eid("p")), 30, "rtr reaches p")
    port = random.randint(20000, 40000)
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def python(node: str, args: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["ip", "netns", "exec", netlab_lab.netns_name(node), sys.executable,
             str(TOOLS / "tcp_transfer.py"), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip

    def relayed_in() -> int:
        return int(((_status(run, "p") or {}).get("xtr") or {}).get("stats", {}).get(
            "relayed-in", 0))  # fmt: skip

    server = python("p", ["serve", str(port)])
    client = None
    gaps: list[str] = []
    pingers: list[subprocess.Popen[str]] = []
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        # 600 KB at 150 KB/s: the connection is open for about 4 s, the move falls inside.
        client = python("n", ["send", eid("p"), str(port), "600000", "move", "150000"])
        before = relayed_in()
        wait_until(lambda: relayed_in() > before + 20, 20, "the transfer to p is flowing")
        for src, dst in ((old, new), (new, old)):
            pings = {n: _pinger(netlab_lab, n, eid("p")) for n in ("rtr", "n")}
            pingers += pings.values()
            for ping in pings.values():
                wait_until(lambda: _answered(ping), 20, "pings answered")  # noqa: B023
            _readdress(netlab_lab, "p", src, dst)
            moved = time.time()
            outage = {}
            for node, ping in pings.items():
                wait_until(lambda: _answered(ping, after=moved), 30, f"{node} reaches p again")  # noqa: B023
                ping.kill()
                ping.wait(timeout=5)
                outage[node] = _longest_silence(ping, moved)
            gaps.append(
                f"{src} -> {dst}: direct peer {outage['rtr']:.2f} s, "
                f"relayed peer {outage['n']:.2f} s"
            )
            doc = _status(run, "p")
            assert doc is not None and doc["xtr"]["uplink_moves"][-1]["to"] == dst, doc
            if dst == new:
                sent, client_err = client.communicate(timeout=60)
                assert client.returncode == 0, f"{client_err[-300:]}\n{_dump(run)}"
                received, _ = server.communicate(timeout=30)
                assert sent.split() == received.split() and sent.split()[0] == "600000"
                entry = [e for e in (_status(run, "rtr") or {})["xtr"]["map_cache"]
                         if e["prefix"].startswith("10.1.2.0")]  # fmt: skip
                assert entry and [r["address"] for r in entry[0]["rlocs"]] == [new], entry
    finally:
        for proc in (server, client, *pingers):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
        ns = netlab_lab.netns_name("p")
        shown = subprocess.run(["ip", "-n", ns, "-4", "-o", "addr", "show", "dev", "eth1"],
                               capture_output=True, text=True).stdout  # fmt: skip
        if f"{old}/24" not in shown:
            _readdress(netlab_lab, "p", new, old)  # leave the lab as the other tests expect it
    print("\noutage after an address change (longest silence, 50 ms pings): " + "; ".join(gaps))


def test_traffic_recovers_after_the_nat_forgets_its_mappings(
    lab: tuple[Lab, Path, float],
) -> None:
    """conntrack -F on the NAT (a NAT reboot) during pings both ways: n's next keepalive (or
    its traffic) makes a new mapping and the RTR's binding follows. The outage is printed."""
    netlab_lab, workdir, _ = lab
    run = workdir / "run"
    wait_until(lambda: _ping(netlab_lab, "p", eid("n")), 60, "p reaches n")
    pings: list[subprocess.Popen[str]] = []
    try:
        pings = [_pinger(netlab_lab, "p", eid("n")), _pinger(netlab_lab, "n", eid("p"))]
        for ping in pings:
            wait_until(lambda: _answered(ping), 20, "pings answered")  # noqa: B023
        flushed = time.time()
        subprocess.run(["ip", "netns", "exec", netlab_lab.netns_name("nat"), "conntrack", "-F"],
                       check=True, capture_output=True)  # fmt: skip
        for ping in pings:
            wait_until(lambda: _answered(ping, after=flushed + 0.2), 30, "pings again")  # noqa: B023
            ping.kill()
            ping.wait(timeout=5)
        to_n, to_p = (_longest_silence(p, flushed) for p in pings)
    finally:
        for ping in pings:
            if ping.poll() is None:
                ping.kill()
                ping.wait(timeout=5)
    try:
        wait_until(lambda: _ping(netlab_lab, "p", eid("n")), 15, "p still reaches n")
    except Exception as exc:
        raise AssertionError(f"{exc}\n{_dump(run)}") from None
    print(f"\noutage after conntrack -F on the NAT: p -> n {to_n:.2f} s, n -> p {to_p:.2f} s")
