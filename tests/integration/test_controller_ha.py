"""Controller high availability under faults (issue 18): three real etcd members, three
controller replicas and three nodes, each in its own namespace (tests/integration/ha.clab.yml),
every process started here and stopped by pid.

- kill -9 the leader: another replica leads within the lease TTL plus a margin, the nodes it
  served reconnect elsewhere, nothing in the store is lost or doubled;
- block one replica from etcd with nftables (in its namespace): it stops serving writes (one
  clear line) and config streams, and its nodes move to another replica;
- kill 2 of 3 etcd members: writes fail with one clear line, and the mesh keeps forwarding: a
  node agent restarted meanwhile registers with the replicas' map-servers and is reached again;
- after each: a history check over etcd's record of the run (one fenced writer per term, no
  token used beyond its uses, no EID twice).

One lab for the module; each test waits (bounded) for the healthy state it starts from and
puts back what it broke.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lispmesh.waiting import wait_until
from mesh.control import ControlError, query
from netlab import Lab
from node.state import StateDir, StateError

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = Path(__file__).with_name("ha.clab.yml")
TTL = 2
ETCD = {"e1": "10.78.0.21", "e2": "10.78.0.22", "e3": "10.78.0.23"}
REPLICAS = {"c1": "10.78.0.1", "c2": "10.78.0.2", "c3": "10.78.0.3"}
NODES = ("n1", "n2", "n3")
ENDPOINTS = ",".join(f"{a}:2379" for a in ETCD.values())
PREFIX = "/ha/"
ENV = {"PYTHONPATH": str(REPO)}


@dataclass
class Proc:
    name: str
    ns_node: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self, lab: Lab) -> None:
        with open(self.log, "ab") as out:
            self.popen = lab.popen(
                self.ns_node, self.argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                env={**os.environ, **ENV, **self.env}, start_new_session=True,
            )  # fmt: skip

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
            self.popen = None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class HaLab:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.state = workdir / "state"
        self.lab = Lab.from_file(TOPOLOGY, name=f"ha{secrets.token_hex(3)}", workdir=workdir)
        self.procs: dict[str, Proc] = {}
        peers = ",".join(f"{n}=http://{a}:2380" for n, a in ETCD.items())
        for name, address in ETCD.items():
            self.procs[name] = Proc(name, "etcd", [
                "etcd", "--name", name, "--data-dir", str(self.state / name),
                "--listen-client-urls", f"http://{address}:2379",
                "--advertise-client-urls", f"http://{address}:2379",
                "--listen-peer-urls", f"http://{address}:2380",
                "--initial-advertise-peer-urls", f"http://{address}:2380",
                "--initial-cluster", peers, "--initial-cluster-token", self.lab.topo.name,
                "--initial-cluster-state", "new",
                "--heartbeat-interval", "50", "--election-timeout", "500",
            ], {}, workdir / f"{name}.log")  # fmt: skip
        for name, address in REPLICAS.items():
            self.procs[name] = Proc(name, name, [
                sys.executable, "-m", "lispmesh", "controller", "serve",
                "--state-dir", str(self.state / name), "--listen", f"{address}:7443",
                "--store", "etcd", "--etcd-endpoints", ENDPOINTS, "--etcd-prefix", PREFIX,
                "--leader-ttl", str(TTL), "--replica-name", name,
            ], {}, workdir / f"{name}.log")  # fmt: skip

    # ------------------------------------------------------------------ lifecycle

    def deploy(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        self.lab.deploy()
        for name in ETCD:
            self.procs[name].start(self.lab)
        for name in REPLICAS:
            self.procs[name].start(self.lab)
        for name in REPLICAS:
            wait_until(lambda name=name: self.answers(name), 60, f"replica {name}")
        token = self.cli("c1", "token", "create", "--uses", "3", "--ttl", "1h")["token_secret"]
        for node in NODES:
            self.procs[node] = Proc(node, node, [
                sys.executable, "-m", "lispmesh", "node", "run",
                "--controller", f"{REPLICAS['c1']}:7443", "--state-dir", str(self.state / node),
                "--run-dir", str(self.state / "run"), "--backoff-cap", "2",
            ], {"LISPMESH_TOKEN": token}, self.workdir / f"{node}.log")  # fmt: skip
            self.procs[node].start(self.lab)

    def destroy(self) -> None:
        for proc in self.procs.values():
            if proc.popen is not None:
                proc.kill(signal.SIGCONT)
                proc.kill(signal.SIGKILL)
        self.lab.destroy()

    # ------------------------------------------------------------------ observing

    def cli(self, replica: str, *args: str, check: bool = True) -> Any:
        """`lispmesh controller ARGS --json` against `replica`, run in its namespace."""
        argv = [sys.executable, "-m", "lispmesh", "controller", *args,
                "--state-dir", str(self.state / replica), "--json"]  # fmt: skip
        result = self.lab.exec(replica, argv, timeout=40, env=ENV)
        if check and result.returncode != 0:
            raise RuntimeError(f"{replica}: controller {' '.join(args)}: {result.stderr.strip()}")
        return json.loads(result.stdout) if result.returncode == 0 else result

    def answers(self, replica: str) -> bool:
        if not self.procs[replica].alive:
            raise RuntimeError(f"replica {replica} exited: {self.procs[replica].text()[-2000:]}")
        return not isinstance(self.cli(replica, "status", check=False), subprocess.CompletedProcess)

    def etcd(self, code: str) -> Any:
        """Run Python against etcd from its own namespace (`etcd` is an EtcdClient there);
        the JSON the code prints."""
        program = (
            "import json, sys\n"
            "from controller_api.store.etcd_client import EtcdClient\n"
            f"etcd = EtcdClient({list(a + ':2379' for a in ETCD.values())!r}, timeout=3)\n" + code
        )
        result = self.lab.exec("etcd", [sys.executable, "-c", program], timeout=30, env=ENV)
        if result.returncode != 0:
            raise RuntimeError(f"etcd probe: {result.stderr.strip()[-800:]}")
        return json.loads(result.stdout)

    def leader(self) -> tuple[str, int] | None:
        kvs = self.etcd(
            f"kvs = etcd.range({(PREFIX + 'internal/leader').encode()!r}).kvs\n"
            "print(json.dumps([json.loads(kvs[0].value)['replica'], kvs[0].create_revision]"
            " if kvs else None))"
        )
        return (str(kvs[0]), int(kvs[1])) if kvs else None

    def enrollment(self, node: str) -> Any:
        try:
            return StateDir(self.state / node).load_enrollment()
        except StateError:
            return None

    def agent(self, node: str) -> dict[str, Any]:
        enrollment = self.enrollment(node)
        if enrollment is None:
            return {}
        try:
            status = query(self.state / "run" / f"{enrollment.name}.sock", "status", timeout=2)
        except ControlError:
            return {}
        return dict(status.get("agent") or {})

    def replica_of(self, node: str) -> str | None:
        """The replica the node's agent is connected to now."""
        agent = self.agent(node)
        if agent.get("controller_state") != "connected":
            return None
        host = str(agent.get("controller_address", "")).rpartition(":")[0]
        return next((r for r, a in REPLICAS.items() if a == host), None)

    def eid(self, node: str) -> str:
        enrollment = self.enrollment(node)
        assert enrollment is not None
        prefix = next(p for p in enrollment.eid_prefixes if "." in p)
        return prefix.split("/")[0].rsplit(".", 1)[0] + ".1"

    def ping(self, node: str, address: str, count: int = 1) -> bool:
        argv = ["ping", "-c", str(count), "-i", "0.2", "-W", "1", address]
        return self.lab.exec(node, argv, timeout=count + 10).returncode == 0

    def all_pairs_reach(self) -> bool:
        return all(self.ping(a, self.eid(b)) for a in NODES for b in NODES if a != b)

    def dump(self) -> str:
        return "\n".join(f"--- {n}:\n{p.text()[-1500:]}" for n, p in self.procs.items())

    def healthy(self) -> None:
        """The state every test starts from: every process up, every node connected, the
        full mesh."""
        for name in (*ETCD, *REPLICAS):
            if not self.procs[name].alive:
                self.procs[name].start(self.lab)
        for name in REPLICAS:
            wait_until(lambda name=name: self.answers(name), 60, f"replica {name}")
        wait_until(self.leader, 30, "a leader")
        for node in NODES:
            wait_until(lambda node=node: self.replica_of(node), 60, f"{node} connected")
        try:
            wait_until(self.all_pairs_reach, 60, "the full mesh", 0.1)
        except TimeoutError:
            pytest.fail(f"no full mesh\n{self.dump()}")

    def history_check(self) -> None:
        """Over etcd's whole record of the run: every leader round (a fenced write) of one term
        came from one replica, no token counts more uses than it has (nor more nodes), and no
        two nodes share an EID prefix."""
        history = self.etcd(
            f"key = {(PREFIX + 'objects/controller/leader').encode()!r}\n"
            "kvs = etcd.range(key).kvs\n"
            "last, rounds = (kvs[0].mod_revision if kvs else 0), []\n"
            "stream = etcd.watch(key, 1)\n"
            "for batch in (stream if last else ()):\n"
            "    rounds += [json.loads(e.kv.value) for e in batch.events if e.type == 0]\n"
            "    if batch.revision >= last: break\n"
            "stream.cancel()\n"
            f"tokens = etcd.range({(PREFIX + 'tokens/').encode()!r}, prefix=True).kvs\n"
            f"nodes = etcd.range({(PREFIX + 'nodes/').encode()!r}, prefix=True).kvs\n"
            "tokens = [json.loads(kv.value) for kv in tokens]\n"
            "nodes = [json.loads(kv.value) for kv in nodes]\n"
            "print(json.dumps({'rounds': rounds, 'tokens': tokens, 'nodes': nodes}))"
        )
        writers: dict[int, set[str]] = {}
        for record in history["rounds"]:
            writers.setdefault(int(record["term"]), set()).add(str(record["replica"]))
        assert writers and all(len(w) == 1 for w in writers.values()), writers
        for token in history["tokens"]:
            enrolled = [n for n in history["nodes"] if n["token_id"] == token["id"]]
            assert token["uses"] <= token["max_uses"] and len(enrolled) <= token["uses"]
        prefixes = [n["eid4"] for n in history["nodes"]] + [n["eid6"] for n in history["nodes"]]
        assert len(prefixes) == len(set(prefixes))


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaLab]:
    lab = HaLab(tmp_path_factory.mktemp("ha"))
    try:
        lab.deploy()
        lab.healthy()
        yield lab
    finally:
        lab.destroy()


def test_kill_9_the_leader(ha: HaLab) -> None:
    ha.healthy()
    before = ha.etcd(
        f"kvs = etcd.range({PREFIX.encode()!r}, prefix=True).kvs\n"
        "print(json.dumps(sorted(kv.key.decode() for kv in kvs if b'/nodes/' in kv.key"
        " or b'/tokens/' in kv.key or b'/index/' in kv.key)))"
    )
    old, old_term = wait_until(ha.leader, 10, "a leader")
    served = [n for n in NODES if ha.replica_of(n) == old]
    killed_at = time.monotonic()
    ha.procs[old].kill(signal.SIGKILL)
    new, new_term = wait_until(
        lambda: (now := ha.leader()) and now[0] != old and now, TTL + 10, "a new leader"
    )
    print(f"\nnew leader {new} (term {new_term}) {time.monotonic() - killed_at:.1f} s after"
          f" kill -9 of {old} (term {old_term}); lease TTL {TTL} s")  # fmt: skip
    assert new_term > old_term
    for node in served:  # the nodes the dead replica served connect to another
        wait_until(lambda node=node: ha.replica_of(node) not in (None, old), 30, f"{node} moved")
    wait_until(ha.all_pairs_reach, 30, "the full mesh after the leader's death", 0.1)
    after = ha.etcd(
        f"kvs = etcd.range({PREFIX.encode()!r}, prefix=True).kvs\n"
        "print(json.dumps(sorted(kv.key.decode() for kv in kvs if b'/nodes/' in kv.key"
        " or b'/tokens/' in kv.key or b'/index/' in kv.key)))"
    )
    assert after == before  # no node, token or allocation lost or doubled
    view = ha.cli(new, "status")
    assert view["leader"] == new and {r["name"] for r in view["replicas"]} == set(REPLICAS) - {old}
    ha.procs[old].start(ha.lab)  # put it back
    wait_until(lambda: ha.answers(old), 60, f"{old} back")
    ha.history_check()


def test_a_replica_cut_off_from_etcd_stops_serving_and_its_nodes_move(ha: HaLab) -> None:
    ha.healthy()
    victim = ha.replica_of("n1")
    assert victim is not None
    table = f"lmha{secrets.token_hex(2)}"
    rules = f"""table inet {table} {{
        chain out {{
            type filter hook output priority 0; policy accept;
            ip daddr {{ {", ".join(ETCD.values())} }} tcp dport 2379 drop
        }}
    }}
    """
    blocked = subprocess.run(
        ["ip", "netns", "exec", ha.lab.netns_name(victim), "nft", "-f", "-"],
        input=rules, capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert blocked.returncode == 0, blocked.stderr
    try:
        wait_until(lambda: ha.replica_of("n1") not in (None, victim), 60, "n1 to move")
        for node in NODES:
            wait_until(lambda node=node: ha.replica_of(node) not in (None, victim), 60,
                       f"{node} on a replica that reaches etcd")  # fmt: skip
        refused = ha.cli(victim, "token", "create", check=False)
        assert isinstance(refused, subprocess.CompletedProcess) and refused.returncode != 0
        line = refused.stderr.strip()
        assert len(line.splitlines()) == 1, line
        assert f"controller replica {victim}" in line and "etcd at" in line
        wait_until(ha.all_pairs_reach, 30, "the full mesh", 0.1)
    finally:
        subprocess.run(["ip", "netns", "exec", ha.lab.netns_name(victim), "nft", "delete",
                        "table", "inet", table], timeout=10)  # fmt: skip
    wait_until(lambda: ha.answers(victim) and ha.cli(victim, "status")["store_health"]
               .startswith("ok"), 60, f"{victim} back on etcd")  # fmt: skip
    ha.history_check()


def test_without_etcd_quorum_writes_fail_and_the_mesh_keeps_forwarding(ha: HaLab) -> None:
    ha.healthy()
    for member in ("e2", "e3"):
        ha.procs[member].kill(signal.SIGKILL)
    try:
        refused = ha.cli("c1", "token", "create", check=False)
        assert isinstance(refused, subprocess.CompletedProcess) and refused.returncode != 0
        line = refused.stderr.strip()
        assert len(line.splitlines()) == 1 and "controller replica c1" in line, line
        assert "etcd at" in line and "no quorum, or out of reach" in line
        assert ha.ping("n2", ha.eid("n3"), count=3) and ha.ping("n3", ha.eid("n2"), count=3)
        # A node agent restarted without consensus comes back from its checkpoint, registers
        # with the replicas' map-servers (they need no etcd) and is reached again.
        ha.procs["n1"].kill(signal.SIGKILL)
        ha.procs["n1"].start(ha.lab)
        wait_until(lambda: ha.agent("n1").get("config_source") == "checkpoint", 30,
                   "n1 from its checkpoint")  # fmt: skip
        wait_until(lambda: ha.ping("n2", ha.eid("n1")) and ha.ping("n1", ha.eid("n3")), 30,
                   "n1 in the mesh again without etcd quorum", 0.1)  # fmt: skip
        assert not ha.procs["e2"].alive and not ha.procs["e3"].alive
    finally:
        for member in ("e2", "e3"):
            if not ha.procs[member].alive:
                ha.procs[member].start(ha.lab)
    ha.healthy()
    ha.history_check()
