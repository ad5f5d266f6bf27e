"""The encrypted overlay in real namespaces: reachability, confidentiality, refusals, robustness.

One map-server and three xTRs (plus two misconfigured nodes) share one lab for the module; the
failover test builds its own lab because it cuts an uplink.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.overlay import (
    EID_SUPERNET4,
    MS_ADDRESS,
    REPO_ROOT,
    SITE_KEY,
    OverlayLab,
    XtrSpec,
    eid4,
    eid6,
    rloc,
    wait_until,
)

pytestmark = pytest.mark.root

TOOLS = Path(__file__).parent / "tools"
MARKER = "SECRET-MARKER-7f3a9c"
GOOD = [1, 2, 3]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OverlayLab]:
    specs = [XtrSpec(i) for i in GOOD]
    specs.append(XtrSpec(4, site_key="the-wrong-site-key"))
    # n5's EIDs are certified but lie outside the site's allowed 10.1.0.0/16, fd00:1::/32.
    specs.append(XtrSpec(5, eid_prefixes=["10.200.5.0/24"]))
    with OverlayLab(tmp_path_factory.mktemp("overlay"), specs) as built:
        built.wait_registered([f"n{i}" for i in GOOD])
        yield built


def _python(lab: OverlayLab, node: str, args: list[str]) -> subprocess.Popen[str]:
    assert lab.lab is not None
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        ["ip", "netns", "exec", lab.lab.netns_name(node), sys.executable, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def tcp_transfer(lab: OverlayLab, src: str, dst: str, address: str, size: int) -> None:
    """Send `size` bytes over TCP from `src` to `address` (served by `dst`); both ends agree."""
    port = random.randint(20000, 40000)
    server = _python(lab, dst, [str(TOOLS / "tcp_transfer.py"), "serve", str(port)])
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        client = _python(
            lab,
            src,
            [str(TOOLS / "tcp_transfer.py"), "send", address, str(port), str(size), MARKER],
        )
        sent, client_err = client.communicate(timeout=60)
        received, server_err = server.communicate(timeout=30)
    finally:
        for proc in (server,):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
    assert client.returncode == 0, f"client {src}→{address} failed: {client_err}\n{lab.dump()}"
    assert sent.split() == received.split(), (sent, received, server_err)
    assert sent.split()[0] == str(size)


def test_every_pair_pings_over_ipv4_and_ipv6(lab: OverlayLab) -> None:
    for a, b in itertools.permutations(GOOD, 2):
        for address in (eid4(b), eid6(b)):
            lab.wait_ping(f"n{a}", address, timeout=15)
    status = lab.status("n1")
    peers = {p["name"] for p in status["xtr"]["peers"]}
    assert {"n2", "n3"} <= peers
    in_use = {e["prefix"]: e for e in status["xtr"]["map_cache"] if e["in_use"]}
    assert in_use["10.1.2.0/24"]["in_use"] == rloc(2)
    assert in_use["fd00:1:3::/64"]["peer"] == "n3"


def test_every_pair_transfers_tcp_over_ipv4_and_ipv6(lab: OverlayLab) -> None:
    for a, b in itertools.permutations(GOOD, 2):
        lab.wait_ping(f"n{a}", eid4(b))
        tcp_transfer(lab, f"n{a}", f"n{b}", eid4(b), 300_000)
        tcp_transfer(lab, f"n{a}", f"n{b}", eid6(b), 300_000)


def _capture(
    lab: OverlayLab, node: str, interface: str, path: Path, bpf: str
) -> subprocess.Popen[str]:
    assert lab.lab is not None
    proc = subprocess.Popen(
        # -Z root: the file is in a root-only temp dir; a large buffer and immediate mode so
        # that no packet is lost or held back in the kernel ring.
        ["ip", "netns", "exec", lab.lab.netns_name(node), "tcpdump", "-Z", "root",
         "--immediate-mode", "-B", "16384", "-i", interface, "-U", "-s", "0", "-w", str(path),
         bpf],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline()  # "listening on ...": the capture is armed
    assert "listening" in line, line
    return proc


def _stop(proc: subprocess.Popen[str], path: Path) -> None:
    """Stop a capture once it has written everything it saw (its file stopped growing)."""
    sizes: list[int] = []

    def settled() -> bool:
        sizes.append(path.stat().st_size if path.exists() else 0)
        return len(sizes) >= 3 and sizes[-1] == sizes[-2] == sizes[-3]

    wait_until(settled, 10, f"capture {path.name} to settle", interval=0.3)
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def test_underlay_carries_no_plaintext(lab: OverlayLab, tmp_path: Path) -> None:
    lab.wait_ping("n1", eid4(2))
    underlay = tmp_path / "underlay.pcap"
    inside = tmp_path / "inside.pcap"
    wire = _capture(lab, "n1", "eth1", underlay, "udp port 4341")
    tun = _capture(lab, "n2", "lm0", inside, "tcp")
    try:
        tcp_transfer(lab, "n1", "n2", eid4(2), 200_000)
    finally:
        _stop(wire, underlay)
        _stop(tun, inside)
    on_wire = underlay.read_bytes()
    # The marker did cross: it is in the clear on the receiver's TUN...
    assert MARKER.encode() in inside.read_bytes()
    # ...and the underlay carried the transfer: at least its size of LISP data to n2's RLOC
    # (with UDP GSO a captured frame may hold many datagrams, so count bytes, not frames)...
    assert socket.inet_aton(rloc(2)) in on_wire
    assert len(on_wire) > 200_000
    # ...but never in plaintext.
    assert MARKER.encode() not in on_wire


def test_wrong_site_key_is_refused_and_counted(lab: OverlayLab) -> None:
    def refused() -> bool:
        counters = lab.status("ms")["map_server"]["counters"]
        return counters.get("bad-auth", 0) >= 1

    wait_until(refused, 20, "the map-server to refuse n4's Map-Register")
    registered = {r["eid_prefix"] for r in lab.status("ms")["map_server"]["registrations"]}
    assert "10.1.4.0/24" not in registered
    assert "10.1.1.0/24" in registered
    status = lab.status("n4")
    assert not status["xtr"]["map_servers"][0]["registered"]
    assert not lab.ping("n1", eid4(4), count=2, timeout=1)


def test_eid_outside_the_site_allowance_is_refused(lab: OverlayLab) -> None:
    def refused() -> bool:
        counters = lab.status("ms")["map_server"]["counters"]
        return counters.get("prefix-not-allowed", 0) >= 1

    wait_until(refused, 20, "the map-server to refuse n5's EID 10.200.5.0/24")
    registered = {r["eid_prefix"] for r in lab.status("ms")["map_server"]["registrations"]}
    assert "10.200.5.0/24" not in registered


def test_node_status_command_reports_json(lab: OverlayLab) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lispmesh", "node", "status", "--json",
         "--socket", str(lab.run_dir / "n1.sock")],
        capture_output=True, text=True, timeout=30, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["name"] == "n1"
    assert status["encryption"] is True
    assert status["xtr"]["eid_prefixes"] == ["10.1.1.0/24", "fd00:1:1::/64"]
    assert status["xtr"]["uplinks"][0]["address"] == rloc(1)
    missing = subprocess.run(
        [sys.executable, "-m", "lispmesh", "node", "status", "--socket", "/nonexistent.sock"],
        capture_output=True, text=True, timeout=30, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("lispmesh: error: no node is running")
    assert "Traceback" not in missing.stderr


def test_garbage_packets_are_counted_and_the_node_keeps_working(lab: OverlayLab) -> None:
    before = lab.status("n2")["xtr"]["drops"]
    script = (
        "import os, socket, random\n"
        "random.seed(7)\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"for port in (4341, 4342):\n"
        "    for n in range(300):\n"
        "        data = os.urandom(random.randint(0, 300))\n"
        f"        s.sendto(data, ('{rloc(2)}', port))\n"
    )
    result = lab.exec("n3", [sys.executable, "-c", script])
    assert result.returncode == 0, result.stderr

    def counted() -> dict[str, int] | None:
        drops = lab.status("n2")["xtr"]["drops"]
        grew = sum(drops.values()) - sum(before.values())
        return drops if grew >= 300 else None

    drops = wait_until(counted, 15, "n2 to count the garbage")
    reasons = set(drops) - set(before)
    assert reasons & {"malformed", "malformed-control", "no-key", "decrypt-failure",
                      "plaintext-refused", "unexpected-control"}, drops  # fmt: skip
    assert lab.status("n2")["runtime_errors"] == {}, lab.logs("n2")[-4000:]
    lab.wait_ping("n1", eid4(2))
    lab.wait_ping("n2", eid6(1))


@pytest.fixture
def dual_uplink_lab(tmp_path: Path) -> Iterator[OverlayLab]:
    with OverlayLab(tmp_path, [XtrSpec(1, uplinks=2), XtrSpec(2)], name_prefix="fo") as built:
        built.wait_registered()
        yield built


def test_failover_when_an_uplink_is_cut(dual_uplink_lab: OverlayLab) -> None:
    lab = dual_uplink_lab
    lab.wait_ping("n2", eid4(1))
    status = lab.status("n2")
    entry = next(e for e in status["xtr"]["map_cache"] if e["prefix"] == "10.1.1.0/24")
    assert entry["in_use"] == rloc(1, 0)
    assert {r["address"] for r in entry["rlocs"]} == {rloc(1, 0), rloc(1, 1)}
    assert lab.lab is not None
    # Ping every 50 ms for 8 s; cut n1's primary uplink 2 s in.
    ping = subprocess.Popen(
        ["ip", "netns", "exec", lab.lab.netns_name("n2"), "ping", "-D", "-i", "0.05",
         "-w", "8", "-W", "1", eid4(1)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:

        def primary_carries_pings() -> bool:
            decap = lab.status("n1")["xtr"]["keys"]["decap"]
            return sum(d["packets"] for d in decap) >= 20

        wait_until(primary_carries_pings, 6, "pings over the primary uplink")
        cut = lab.exec("n1", ["ip", "link", "set", "eth1", "down"])
        assert cut.returncode == 0, cut.stderr
        cut_at = time.time()
        output, _ = ping.communicate(timeout=20)
    finally:
        if ping.poll() is None:
            ping.kill()
            ping.wait(timeout=5)
    replies = [float(line.split("]")[0][1:]) for line in output.splitlines()
               if line.startswith("[") and "bytes from" in line]  # fmt: skip
    assert replies, output
    before = [t for t in replies if t < cut_at]
    after = [t for t in replies if t >= cut_at]
    assert before and after, f"no replies before/after the cut\n{output[-2000:]}\n{lab.dump()}"
    # The longest silence around the cut is the loss window: it must stay under 3 s.
    outage = after[0] - before[-1]
    assert outage < 3.0, f"loss lasted {outage:.2f} s\n{lab.dump()}"
    # Traffic now flows through the second uplink.
    entry = next(e for e in lab.status("n2")["xtr"]["map_cache"] if e["prefix"] == "10.1.1.0/24")
    assert entry["in_use"] == rloc(1, 1)
    uplinks = {u["address"]: u["up"] for u in lab.status("n1")["xtr"]["uplinks"]}
    assert uplinks == {rloc(1, 0): False, rloc(1, 1): True}


def test_rekeying_is_make_before_break_with_chacha20(tmp_path: Path) -> None:
    security = {"cipher_suite": "chacha20-poly1305", "rekey_after_seconds": 2}
    specs = [XtrSpec(1, security=security), XtrSpec(2, security=security)]
    with OverlayLab(tmp_path, specs, name_prefix="rk") as lab:
        lab.wait_registered()
        lab.wait_ping("n1", eid4(2))
        # 8 s of pings at 10/s spans at least three rekeys of each side.
        result = lab.exec("n1", ["ping", "-q", "-i", "0.1", "-c", "80", "-W", "1", eid4(2)],
                          timeout=40)  # fmt: skip
        summary = next(line for line in result.stdout.splitlines() if "transmitted" in line)
        sent, received = (int(summary.split()[i]) for i in (0, 3))
        status = lab.status("n1")["xtr"]["keys"]
        assert status["cipher_suite"] == 6
        assert status["rekeys"] >= 3, status
        used = {d["key_id"] for d in lab.status("n2")["xtr"]["keys"]["decap"]}
        assert len(used) >= 2, used  # the ETR saw several key-ids: keys really rotated
        assert sent == 80
        assert received == sent, f"{sent - received} pings lost across rekeys\n{lab.dump()}"
        assert lab.drops("n2").get("decrypt-failure", 0) == 0
        assert lab.drops("n2").get("no-key", 0) == 0


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def test_xtrs_register_again_after_a_map_server_restart(tmp_path: Path) -> None:
    with OverlayLab(tmp_path, [XtrSpec(1), XtrSpec(2)], name_prefix="ms") as lab:
        lab.wait_registered()
        restarted = _restart(lab, "ms")
        try:

            def both_registered() -> bool:
                status = lab.try_status("ms")
                if status is None:
                    return False
                prefixes = {r["eid_prefix"] for r in status["map_server"]["registrations"]}
                return {"10.1.1.0/24", "10.1.2.0/24"} <= prefixes

            # The xTRs refresh every 5 s (the lab's register_interval): they come back by then.
            wait_until(both_registered, 15, "both xTRs to register with the new map-server")
            lab.wait_ping("n2", eid6(1))
        finally:
            _kill(restarted)


def test_c_and_python_data_paths_interoperate(tmp_path: Path) -> None:
    """n1 runs the pure-Python reference path, n2 the C path: both directions, both families,
    a ping and a TCP transfer (so TSO super-packets on n2 are cut into standard packets)."""
    specs = [XtrSpec(1, dataplane="python"), XtrSpec(2, dataplane="c")]
    with OverlayLab(tmp_path, specs, name_prefix="dp") as lab:
        lab.wait_registered()
        assert lab.status("n1")["xtr"]["dataplane"] == "python"
        assert lab.status("n2")["xtr"]["dataplane"] == "c"
        for a, b in ((1, 2), (2, 1)):
            lab.wait_ping(f"n{a}", eid4(b))
            lab.wait_ping(f"n{a}", eid6(b))
            tcp_transfer(lab, f"n{a}", f"n{b}", eid4(b), 2_000_000)
            tcp_transfer(lab, f"n{a}", f"n{b}", eid6(b), 500_000)
        for node in ("n1", "n2"):
            drops = lab.drops(node)
            assert not {"decrypt-failure", "replay", "spoofed-source", "malformed"} & set(drops), (
                drops
            )
        # n2's ETR wrote what it opened as coalesced super-packets (receive coalescing), and
        # the transfers above arrived whole through them.
        stats = lab.status("n2")["xtr"]["datapath_stats"]
        assert stats["coalesced-segments"] > stats["coalesced-super-packets"] > 0, stats
        assert "tun-write-errors" not in lab.drops("n2")


def test_tcp_with_a_small_peer_mss_crosses_the_c_path(tmp_path: Path) -> None:
    """Issue 12 finding 7: n2 advertises an MSS of 500, so a 64 KB TSO super-packet on n1 would
    need 131 segments; the C path cuts at most 64. The TUN caps its GSO segments at 64, so the
    kernel never hands over more, and nothing is dropped as malformed."""
    specs = [XtrSpec(1, dataplane="c"), XtrSpec(2, dataplane="c")]
    with OverlayLab(tmp_path, specs, name_prefix="ms") as lab:
        lab.wait_registered()
        shown = lab.exec("n1", ["ip", "-d", "link", "show", "lm0"]).stdout
        assert "gso_max_segs 64" in shown, shown
        route = ["ip", "route", "change", EID_SUPERNET4, "dev", "lm0", "src", eid4(2),
                 "advmss", "500"]  # fmt: skip
        assert lab.exec("n2", route).returncode == 0
        lab.wait_ping("n1", eid4(2))
        tcp_transfer(lab, "n1", "n2", eid4(2), 3_000_000)
        for node in ("n1", "n2"):
            assert "malformed" not in lab.drops(node), lab.drops(node)


def _restart(lab: OverlayLab, node: str) -> subprocess.Popen[bytes]:
    """Stop `node`'s process through its control socket and start a new one (killed by the
    caller); returns the new process."""
    from mesh.control import query

    assert lab.lab is not None
    pid = lab.status(node)["pid"]
    query(lab.run_dir / f"{node}.sock", "stop")
    wait_until(lambda: _gone(pid), 10, f"{node} to exit")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return lab.lab.popen(
        node,
        [sys.executable, "-m", "lispmesh", "node", "run", "--config",
         str(lab.workdir / "configs" / f"{node}.yml")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def test_node_restarted_while_the_map_server_is_down_rejoins_its_peers(tmp_path: Path) -> None:
    """n1 restarts with the map-server gone: from its checkpointed mappings it probes n2 with a
    fresh key (n2 answers directly), and n2, whose key for n1 went stale, is solicited (SMR) to
    run a new exchange. Both directions come back without any map-server."""
    with OverlayLab(tmp_path, [XtrSpec(1), XtrSpec(2)], name_prefix="wr") as lab:
        lab.wait_registered()
        lab.wait_ping("n1", eid4(2))
        lab.wait_ping("n2", eid6(1))
        checkpoint = lab.workdir / "state" / "n1" / "n1.mappings.json"
        wait_until(lambda: checkpoint.exists() and "10.1.2.0/24" in checkpoint.read_text(), 15,
                   "n1 to checkpoint its mappings")  # fmt: skip
        assert oct(checkpoint.stat().st_mode & 0o777) == "0o600"
        from mesh.control import query

        query(lab.run_dir / "ms.sock", "stop")
        wait_until(lambda: lab.try_status("ms") is None, 10, "the map-server to stop")
        restarted = _restart(lab, "n1")
        try:
            lab.wait_ping("n1", eid4(2), timeout=15)
            lab.wait_ping("n2", eid4(1), timeout=15)
            lab.wait_ping("n2", eid6(1), timeout=15)
            assert lab.status("n2")["xtr"]["stats"].get("smr-received", 0) >= 1
            assert lab.status("n1")["xtr"]["stats"].get("smr-sent", 0) >= 1
            assert lab.try_status("ms") is None  # no map-server helped
        finally:
            _kill(restarted)


def test_a_constant_nonce_registration_stays_and_replays_that_change_it_are_refused(
    lab: OverlayLab, tmp_path: Path
) -> None:
    """lispers.net's registrations (issue 16 item 2), from a namespace to the map-server node:
    one nonce in every Map-Register; each refresh is accepted, each same-nonce register that would
    move, stretch or remove the registration is refused and counted."""
    refreshes = 6
    prefix = "10.1.99.0/24"
    before = lab.status("ms")["map_server"]["counters"]
    key_file = tmp_path / "site.key"
    key_file.write_text(SITE_KEY)
    key_file.chmod(0o600)
    tool = str(TOOLS / "constant_nonce_registrar.py")
    result = lab.exec("n3", [sys.executable, tool, MS_ADDRESS, rloc(3), prefix,
                             str(key_file), str(refreshes)])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"notifies": refreshes, "echoed_refresh": refreshes}

    def counted() -> dict[str, int] | None:
        counters = lab.status("ms")["map_server"]["counters"]
        grew = counters.get("replayed-nonce", 0) - before.get("replayed-nonce", 0)
        return counters if grew >= 3 * refreshes else None

    after = wait_until(counted, 15, "the map-server to refuse every same-nonce replay")

    def delta(name: str) -> int:
        return after.get(name, 0) - before.get(name, 0)

    assert delta("replayed-nonce") == 3 * refreshes
    assert delta("nonce-refresh") == refreshes - 1
    registration = next(
        r for r in lab.status("ms")["map_server"]["registrations"] if r["eid_prefix"] == prefix
    )
    assert [r["address"] for r in registration["rlocs"]] == [rloc(3)]
