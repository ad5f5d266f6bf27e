"""Network policy enforced on the data path, end to end, with both data planes.

One lab for the module: the C pair n1 → n2 and the Python pair n3 → n4 (client → server), every
node starting with a `policy:` section in its config. The client may open TCP to the server on
port 5001 (its egress also lets 5002 and ICMP out, so that the server's ingress is what stops
them); the server's ingress allows TCP from the client on 5001 only; neither has a reverse rule.
Each test installs the policies it needs by rewriting the configs and sending `reload`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.overlay import REPO_ROOT, OverlayLab, XtrSpec, eid4, eid6, wait_until

pytestmark = pytest.mark.root

PAIRS = {"c": (1, 2), "python": (3, 4)}  # data plane -> (client, server)
ALLOWED, DENIED_AT_SERVER, DENIED_AT_CLIENT = 5001, 5002, 5003

SERVER = """
import socket, sys
port, timeout = int(sys.argv[1]), float(sys.argv[2])
s = socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True)
s.settimeout(timeout)
print("ready", flush=True)
try:
    conn, _ = s.accept()
except TimeoutError:
    sys.exit(1)
conn.settimeout(10)
total = 0
while chunk := conn.recv(65536):
    total += len(chunk)
conn.sendall(b"ok %d" % total)
conn.close()
print(total, flush=True)
"""

CLIENT = """
import socket, sys, time
host, port, timeout, chunks, pause = sys.argv[1:3] + [float(sys.argv[3])] + sys.argv[4:6]
try:
    conn = socket.create_connection((host, int(port)), timeout=timeout)
except OSError as exc:
    print("no connection:", exc, flush=True)
    sys.exit(1)
conn.settimeout(10)
for _ in range(int(chunks)):
    conn.sendall(b"x" * 10000)
    time.sleep(float(pause))
conn.shutdown(socket.SHUT_WR)
print(conn.recv(100).decode(), flush=True)
"""


def client_policy(version: int, server: int, icmp: bool = True) -> dict[str, Any]:
    egress: list[dict[str, Any]] = [
        {
            "id": 1,
            "name": "to-server",
            "action": "allow",
            "protocol": "tcp",
            "dst": [f"{eid4(server)}/32", f"{eid6(server)}/128"],
            "ports": [ALLOWED, DENIED_AT_SERVER],
        },
    ]
    if icmp:
        egress.append({"id": 2, "name": "ping-out", "action": "allow", "protocol": "icmp"})
        egress.append({"id": 3, "name": "ping6-out", "action": "allow", "protocol": "icmpv6"})
    return {"version": version, "egress": egress, "ingress": []}


def server_policy(version: int, client: int, icmp: bool = False) -> dict[str, Any]:
    ingress: list[dict[str, Any]] = [
        {
            "id": 10,
            "name": "from-client",
            "action": "allow",
            "protocol": "tcp",
            "src": [f"10.1.{client}.0/24", f"fd00:1:{client}::/64"],
            "ports": [ALLOWED],
        },
    ]
    if icmp:
        ingress.append({"id": 11, "name": "ping-in", "action": "allow", "protocol": "icmp"})
    return {"version": version, "egress": [], "ingress": ingress}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OverlayLab]:
    specs = []
    for plane, (client, server) in PAIRS.items():
        specs.append(XtrSpec(client, dataplane=plane, policy=client_policy(1, server)))
        specs.append(XtrSpec(server, dataplane=plane, policy=server_policy(1, client)))
    with OverlayLab(tmp_path_factory.mktemp("policy"), specs, name_prefix="pol") as built:
        built.wait_registered()
        yield built


@pytest.fixture(params=list(PAIRS))
def pair(request: pytest.FixtureRequest, lab: OverlayLab) -> tuple[str, str, int, int]:
    """(client node, server node, client index, server index) with the default policies."""
    plane: str = request.param
    client, server = PAIRS[plane]
    lab.set_policy(f"n{client}", client_policy(1, server))
    lab.set_policy(f"n{server}", server_policy(1, client))
    for index in (client, server):
        assert lab.status(f"n{index}")["xtr"]["dataplane"] == plane
    return f"n{client}", f"n{server}", client, server


def _popen(lab: OverlayLab, node: str, argv: list[str]) -> subprocess.Popen[str]:
    assert lab.lab is not None
    return subprocess.Popen(
        ["ip", "netns", "exec", lab.lab.netns_name(node), sys.executable, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


def connect(
    lab: OverlayLab,
    client: str,
    server: str,
    address: str,
    port: int,
    timeout: float = 1.0,
    chunks: int = 10,
    pause: float = 0.0,
    during: Any = None,
) -> bool:
    """Can `client` open TCP to `address`:`port` (served by `server`) and send chunks of 10 kB?
    Both ends must agree on the byte count."""
    listener = _popen(lab, server, ["-c", SERVER, str(port), str(timeout + chunks * pause + 5)])
    try:
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "ready"
        sender = _popen(
            lab, client, ["-c", CLIENT, address, str(port), str(timeout), str(chunks), str(pause)]
        )
        if during is not None:
            during()
        out, _ = sender.communicate(timeout=timeout + chunks * pause + 20)
        if sender.returncode != 0:
            return False
        assert out.strip() == f"ok {chunks * 10000}", out
        return True
    finally:
        if listener.poll() is None:
            listener.kill()
        listener.wait(timeout=5)


def pings(lab: OverlayLab, node: str, address: str) -> bool:
    return lab.ping(node, address, count=1, timeout=1)


def tun_rx(lab: OverlayLab, node: str) -> int:
    """Packets the node's data plane wrote into its TUN (the kernel counts them as received)."""
    out = lab.exec(node, ["ip", "-s", "-j", "link", "show", "lm0"]).stdout
    return int(json.loads(out)[0]["stats64"]["rx"]["packets"])


def denied(lab: OverlayLab, node: str) -> int:
    return lab.drops(node).get("policy-denied", 0)


def test_allowed_pair_connects_and_return_traffic_needs_no_reverse_rule(
    lab: OverlayLab, pair: tuple[str, str, int, int]
) -> None:
    client, server, client_index, server_index = pair
    # The first connection also resolves both map-caches (the SYN waits for the Map-Reply).
    assert connect(lab, client, server, eid4(server_index), ALLOWED, timeout=8), lab.dump()
    assert connect(lab, client, server, eid6(server_index), ALLOWED, timeout=8), lab.dump()
    # The server's replies passed although neither node has a rule for them; the server still
    # cannot open anything towards the client, nor ping it.
    assert not connect(lab, server, client, eid4(client_index), ALLOWED)
    assert not pings(lab, server, eid4(client_index))
    status = lab.status(server)["xtr"]["policy"]
    rule = status["rules"]["ingress"][0]
    assert (rule["name"], rule["flows"] >= 2, rule["packets"] >= 10) == ("from-client", True, True)
    assert status["default_deny"]["egress"]["packets"] >= 1  # its own attempts


def test_ports_and_protocols_are_enforced_at_both_ends(
    lab: OverlayLab, pair: tuple[str, str, int, int]
) -> None:
    client, server, _, server_index = pair
    assert connect(lab, client, server, eid4(server_index), ALLOWED, timeout=8), lab.dump()
    rx, server_denied, client_denied = tun_rx(lab, server), denied(lab, server), denied(lab, client)
    # 5002 leaves the client (its egress allows it) and is stopped by the server's ingress:
    # nothing reaches the server's TUN. Same for ICMP.
    assert not connect(lab, client, server, eid4(server_index), DENIED_AT_SERVER)
    assert not pings(lab, client, eid4(server_index))
    assert tun_rx(lab, server) == rx
    assert denied(lab, server) >= server_denied + 2
    # 5003 does not even leave the client.
    assert not connect(lab, client, server, eid4(server_index), DENIED_AT_CLIENT)
    assert denied(lab, client) > client_denied
    assert tun_rx(lab, server) == rx
    log = lab.status(server)["xtr"]["policy"]["flow_log"]
    assert any(
        e["dport"] == DENIED_AT_SERVER
        and e["verdict"] == "deny"
        and e["rule"] == "default-deny"
        and e["direction"] == "ingress"
        for e in log
    )
    assert any(
        e["dport"] == ALLOWED and e["verdict"] == "allow" and e["rule"] == "from-client"
        for e in log
    )


def test_a_policy_change_flips_reachability_and_keeps_allowed_flows(
    lab: OverlayLab, pair: tuple[str, str, int, int]
) -> None:
    client, server, client_index, server_index = pair
    assert connect(lab, client, server, eid4(server_index), ALLOWED, timeout=8), lab.dump()
    assert not pings(lab, client, eid4(server_index))

    start = time.monotonic()
    lab.set_policy(server, server_policy(2, client_index, icmp=True))
    wait_until(lambda: pings(lab, client, eid4(server_index)), 10, "ping to be allowed")
    print(f"\npolicy change to effect: {time.monotonic() - start:.2f} s (target 2 s)")
    assert lab.status(server)["xtr"]["policy"]["version"] == 2

    # A 3 s stream; once it is under way, a new policy that still allows it (and no longer ICMP)
    # arrives on both ends: the stream carries on, ICMP stops at once.
    def update() -> None:
        under_way = tun_rx(lab, server) + 20
        wait_until(lambda: tun_rx(lab, server) >= under_way, 5, "the stream to be under way", 0.05)
        lab.set_policy(server, server_policy(3, client_index, icmp=False))
        lab.set_policy(client, client_policy(3, server_index, icmp=False))

    assert connect(
        lab,
        client,
        server,
        eid4(server_index),
        ALLOWED,
        timeout=8,
        chunks=30,
        pause=0.1,
        during=update,
    ), lab.dump()
    assert not pings(lab, client, eid4(server_index))
    status = lab.status(client)["xtr"]["policy"]
    assert (status["version"], status["enforced_by"]) == (3, lab.status(client)["xtr"]["dataplane"])


def test_node_status_json_shows_the_policy(
    lab: OverlayLab, pair: tuple[str, str, int, int]
) -> None:
    client, server, _, server_index = pair
    assert connect(lab, client, server, eid4(server_index), ALLOWED, timeout=8), lab.dump()
    assert not pings(lab, client, eid4(server_index))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lispmesh",
            "node",
            "status",
            "--json",
            "--socket",
            str(lab.run_dir / f"{server}.sock"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 0, result.stderr
    xtr = json.loads(result.stdout)["xtr"]
    policy = xtr["policy"]
    assert policy["installed"] and policy["version"] == 1 and policy["default"] == "deny"
    assert policy["enforced_by"] == xtr["dataplane"]
    assert policy["flows"] >= 1
    assert policy["rules"]["ingress"][0]["packets"] > 0
    assert policy["flow_log"][-1]["protocol"] == 1  # the denied ping, newest last
    assert xtr["drops"]["policy-denied"] >= 1


def test_a_bad_policy_file_is_refused_and_the_old_one_stays(lab: OverlayLab) -> None:
    from mesh.control import ControlError

    lab.set_policy("n1", client_policy(1, 2))
    bad = client_policy(9, 2)
    bad["egress"][0]["ports"] = [70000]
    with pytest.raises(ControlError, match=r"policy: egress\[0\]: rule 1 \('to-server'\): ports"):
        lab.set_policy("n1", bad)
    assert lab.status("n1")["xtr"]["policy"]["version"] == 1
