"""Network policies end to end (issue 7): a controller, three nodes in instance-id 0 and two in
instance-id 7 whose EID prefixes are the same as two of the first three
(tests/integration/controller_policy.clab.yml).

One lab for the module, tests in order: segmentation (before any policy), then a policy applied
with `lispmesh policy apply`: allowed and denied pairs, ports and protocols, return traffic, the
map-server's policy-denied answer, a policy changed at run time (the time it takes is printed),
a malformed file and a failing embedded test refused with a clear line.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from controller_api.offline import create_token
from lispmesh.mesh_lab import CONTROLLER, REPO_ROOT, MeshLab, wait_for

pytestmark = pytest.mark.root

TOPOLOGY = Path(__file__).with_name("controller_policy.clab.yml")
ENV = {"PYTHONPATH": str(REPO_ROOT)}

POLICY = """\
version: 1
groups:
  web: {nodes: [n1]}
  db: {nodes: [n3]}
rules:
  - {name: web-to-db, from: web, to: db, proto: tcp, ports: [5432]}
  - {name: web-ping-db, from: web, to: db, proto: icmp}
  - {name: no-ssh, from: any, to: db, proto: tcp, ports: [22], action: deny}
tests:
  - {from: n1, to: n3, proto: tcp, port: 5432, expect: allow}
  - {from: n1, to: n3, proto: tcp, port: 22, expect: deny}
  - {from: n2, to: n3, proto: tcp, port: 5432, expect: deny}
"""
N2_PING = "  - {name: n2-ping-db, from: n2, to: db, proto: icmp}\n"
# What each test that needs an open mesh starts from, whichever test ran before it.
ALLOW_ALL = """\
version: 1
rules:
  - {name: open, from: any, to: any, proto: any}
"""

SERVER = """
import socket, sys
s = socket.create_server(("0.0.0.0", int(sys.argv[1])))
s.settimeout(float(sys.argv[2]))
print("ready", flush=True)
try:
    c, _ = s.accept()
except OSError:
    print("nothing"); sys.exit(0)
c.settimeout(3)
print("got", c.recv(100).decode(), flush=True)
c.sendall(b"pong")
c.close()
"""
CLIENT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    c.settimeout(3)
    c.sendall(b"ping")
    print(c.recv(100).decode())
except OSError as exc:
    print("failed", exc); sys.exit(1)
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshLab]:
    workdir = tmp_path_factory.mktemp("pol")
    iid7, _ = create_token(workdir.absolute() / "state" / CONTROLLER, 3600, 2, ("iid:7",))
    import secrets

    built = MeshLab(
        workdir, f"po{secrets.token_hex(3)}", topology=TOPOLOGY, token_uses=3,
        node_flags="--backoff-cap 2", extra_env={"IID7_TOKEN": str(iid7)},
    )  # fmt: skip
    built.deploy()
    try:
        for node in built.nodes:
            wait_for(partial(built.enrollment, node), 30, f"{node} to join")
        yield built
    finally:
        built.destroy()


def _policy(lab: MeshLab, *args: str) -> Any:
    argv = [sys.executable, "-m", "lispmesh", "policy", *args,
            "--state-dir", str(lab.state / CONTROLLER)]  # fmt: skip
    return lab.lab.exec(CONTROLLER, argv, timeout=30, env=ENV)


def _write(lab: MeshLab, name: str, text: str) -> str:
    path = lab.workdir / name
    path.write_text(text)
    return str(path)


def _tun_rx(lab: MeshLab, node: str) -> int:
    out = lab.lab.exec(node, ["ip", "-j", "-s", "link", "show", "dev", "lm0"], timeout=10)
    return int(json.loads(out.stdout)[0]["stats64"]["rx"]["packets"])


def _tcp(lab: MeshLab, src: str, dst: str, port: int, wait: float = 2.0) -> bool:
    """Connect from `src` to `dst`'s EID:port, send and get an answer (return traffic)."""
    result: dict[str, Any] = {}

    def serve() -> None:
        cmd = [sys.executable, "-c", SERVER, str(port), str(wait + 2)]
        result["server"] = lab.lab.exec(dst, cmd, timeout=wait + 10)

    thread = threading.Thread(target=serve)
    thread.start()
    wait_for(partial(_listening, lab, dst, port), 10, f"{dst} to listen on {port}", 0.05)
    client = lab.lab.exec(src, [sys.executable, "-c", CLIENT, lab.eid(dst), str(port), str(wait)],
                          timeout=wait + 10)  # fmt: skip
    thread.join(wait + 12)
    ok = client.returncode == 0 and "pong" in client.stdout
    if ok:
        assert "got ping" in result["server"].stdout
    return ok


def _listening(lab: MeshLab, node: str, port: int) -> bool:
    out = lab.lab.exec(node, ["ss", "-Hltn", f"sport = :{port}"], timeout=10)
    return bool(out.stdout.strip())


def _ping(lab: MeshLab, src: str, address: str) -> bool:
    return lab.ping(src, address, count=1, wait=0.5)


def _map_cache(lab: MeshLab, node: str) -> list[dict[str, Any]]:
    status = lab.status(node) or {}
    return list((status.get("xtr") or {}).get("map_cache", []))


# ------------------------------------------------------------------------------- segmentation


def _apply(lab: MeshLab, name: str, text: str) -> None:
    applied = _policy(lab, "apply", _write(lab, name, text))
    assert applied.returncode == 0, applied


def _applied_version(lab: MeshLab) -> int:
    """The version of the policy the controller holds (0: none yet)."""
    shown = _policy(lab, "show", "--json")
    assert shown.returncode == 0, shown
    return int(json.loads(shown.stdout).get("version") or 0)


def test_instance_ids_with_the_same_prefixes_do_not_reach_each_other(lab: MeshLab) -> None:
    _apply(lab, "open.yml", ALLOW_ALL)
    nodes = {n["name"]: n for n in lab.admin("node", "list")["nodes"]}
    assert nodes["v1"]["instance_id"] == 7 and nodes["n1"]["instance_id"] == 0
    # The instance-id 7 nodes got the same EID prefixes as two instance-id 0 nodes.
    twin = {p: name for name, n in nodes.items() if n["instance_id"] == 0
            for p in n["eid_prefixes"]}  # fmt: skip
    v2_twin = twin[nodes["v2"]["eid_prefixes"][0]]
    assert twin[nodes["v1"]["eid_prefixes"][0]] != v2_twin
    address = lab.eid("v2")
    assert address == lab.eid(v2_twin)
    wait_for(lambda: _ping(lab, "v1", address), 30, "v1 -> v2 inside instance-id 7", 0.1)
    before = _tun_rx(lab, v2_twin)
    assert lab.ping("v1", address, count=5)
    assert _tun_rx(lab, v2_twin) == before, f"{v2_twin} (instance-id 0) saw v1's traffic"
    # The same address from instance-id 0 is the instance-id 0 node; never v2.
    other = next(n for n in ("n1", "n2", "n3") if n != v2_twin)
    wait_for(lambda: _ping(lab, other, address), 30, f"{other} -> {v2_twin}", 0.1)
    v2_before = _tun_rx(lab, "v2")
    assert lab.ping(other, address, count=3)
    assert _tun_rx(lab, "v2") == v2_before
    # An instance-id 0 EID with no twin in instance-id 7 is unreachable from there.
    lone = next(n for n in ("n1", "n2", "n3") if n != v2_twin and lab.eid(n) != lab.eid("v1"))
    assert not lab.ping("v1", lab.eid(lone), count=2)


# ------------------------------------------------------------------------------- a policy


def test_apply_enforces_ports_protocols_and_return_traffic(lab: MeshLab) -> None:
    _apply(lab, "open.yml", ALLOW_ALL)
    wait_for(lambda: _ping(lab, "n2", lab.eid("n3")), 30, "n2 -> n3 before the policy", 0.1)
    path = _write(lab, "policy.yml", POLICY)
    check = _policy(lab, "check", path)
    assert check.returncode == 0 and "3 embedded test(s) passed" in check.stdout, check
    version = _applied_version(lab) + 1
    applied = _policy(lab, "apply", path)
    assert applied.returncode == 0 and f"policy v{version} applied" in applied.stdout, applied
    wait_for(lambda: not _ping(lab, "n2", lab.eid("n3")), 5, "n2 -> n3 to be cut off", 0.05)
    # Allowed: tcp/5432 from n1 (with the answer: return traffic), ping n1 -> n3.
    assert wait_for(lambda: _tcp(lab, "n1", "n3", 5432), 15, "n1 -> n3 tcp/5432", 0.1)
    assert _ping(lab, "n1", lab.eid("n3"))
    # Denied: another port, the other direction, another node.
    assert not _tcp(lab, "n1", "n3", 22)
    assert not _tcp(lab, "n3", "n1", 5432)
    assert not _ping(lab, "n3", lab.eid("n1"))
    before = _tun_rx(lab, "n3")
    assert not _tcp(lab, "n2", "n3", 5432)
    assert not lab.ping("n2", lab.eid("n3"), count=3, wait=0.5)
    assert _tun_rx(lab, "n3") == before, "n2's packets reached n3's TUN"
    # The map-server told n2 "policy denied" and never n3's locators (n2 never asked for n3's
    # IPv6 EID before: its IPv4 mapping it learnt before the policy, and keeps until its TTL).
    assert not lab.ping("n2", lab.eid("n3", 6), count=2, wait=0.5)
    prefix = next(p for p in lab.enrollment("n3").eid_prefixes if ":" in p)
    entry = wait_for(lambda: next((e for e in _map_cache(lab, "n2") if e["prefix"] == prefix),
                                  None), 5, "n2's map-cache entry for n3")  # fmt: skip
    assert entry["action"] == "DROP_POLICY_DENIED", entry
    assert not entry.get("rlocs"), entry
    # Counters and the flow log reach the controller (node describe).
    detail = wait_for(partial(_described_flows, lab, "n3"), 25, "n3's policy status")
    assert "web-to-db" in detail


def _described_flows(lab: MeshLab, node: str) -> str | None:
    detail = lab.admin("node", "describe", node)
    status = json.loads(detail["status_json"] or "{}")
    policy = json.loads(status.get("policy_json") or "{}")
    rules = (policy.get("rules") or {}).get("ingress", [])
    counted = any(r["name"] == "web-to-db" and r["flows"] > 0 for r in rules)
    return json.dumps(policy) if counted and policy.get("flow_log") else None


def test_a_policy_changed_at_run_time_flips_reachability(lab: MeshLab) -> None:
    target = lab.eid("n3")
    _apply(lab, "policy.yml", POLICY)
    # The positive path first: n3 is up and n1 may ping it; n2 may not.
    wait_for(lambda: _ping(lab, "n1", target), 30, "n1 -> n3 under the policy", 0.1)
    wait_for(lambda: not _ping(lab, "n2", target), 10, "n2 -> n3 denied", 0.05)
    path = _write(lab, "policy-2.yml", POLICY.replace("tests:\n", N2_PING + "tests:\n"))
    start = time.monotonic()
    applied = _policy(lab, "apply", path)
    assert applied.returncode == 0, applied
    wait_for(lambda: lab.ping("n2", target, count=1, wait=0.2), 10, "n2 -> n3 allowed", 0.0)
    opened = time.monotonic() - start
    # Back: n2 is cut off again; n1's established tcp-less ping flow still allowed.
    path = _write(lab, "policy-3.yml", POLICY)
    start = time.monotonic()
    assert _policy(lab, "apply", path).returncode == 0
    wait_for(lambda: not lab.ping("n2", target, count=1, wait=0.2), 10, "n2 -> n3 denied", 0.0)
    closed = time.monotonic() - start
    assert _ping(lab, "n1", target)
    print(f"\npolicy change to effect (incl. the CLI, ~0.5 s): allow {opened:.2f} s, "
          f"deny {closed:.2f} s (target 2 s)")  # fmt: skip


def test_malformed_policy_and_failing_embedded_test_are_refused(lab: MeshLab) -> None:
    _apply(lab, "policy.yml", POLICY)
    version = _applied_version(lab)
    bad = _write(lab, "bad.yml", POLICY.replace("proto: tcp, ports: [5432]", "proto: tcpp"))
    result = _policy(lab, "apply", bad)
    assert result.returncode == 1, result
    line = result.stderr.strip()
    assert line == (
        "lispmesh: error: policy refused: bad.yml:6: rules[0].proto: unknown protocol 'tcpp' "
        "(known: tcp, udp, icmp, icmpv6, any)"
    ), line
    failing = _write(lab, "failing.yml", POLICY.replace("port: 22, expect: deny", "port: 22, "
                                                        "expect: allow"))  # fmt: skip
    result = _policy(lab, "apply", failing)
    assert result.returncode == 1
    assert "test 2 (n1 -> n3 tcp/22): expected allow, got deny by rule 'no-ssh'" in result.stderr
    shown = _policy(lab, "show", "--json")
    assert json.loads(shown.stdout)["version"] == str(version)  # nothing changed
    explained = _policy(lab, "explain", "n2", "n3", "tcp", "5432", "--json")
    reply = json.loads(explained.stdout)
    assert reply["verdict"] == "deny" and reply["reason"] == "default deny: no rule matched"
