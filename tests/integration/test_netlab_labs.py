"""Real labs: deploy, inspect and destroy them, asserting the kernel state (root needed)."""

from __future__ import annotations

import ipaddress
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netlab import Lab, NetemUnavailable, NetlabError, inspect, netns, procs, state, tools
from netlab.testing import (
    lab_up,
    leftovers,
    link_pings,
    pids_with_cmdline,
    unique_name,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(120),
]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def ip_netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def interfaces(ns: str | None) -> dict[str, dict]:
    from netlab import links

    with netns.ipr(ns) as ipr:
        return {i["ifname"]: i for i in links.info(ipr)}


def assert_ping(lab: Lab, node: str, addr: str) -> None:
    res = lab.exec(node, ["ping", "-c", "1", "-W", "2", addr], timeout=10)
    assert res.returncode == 0, f"{node} cannot ping {addr}: {res.stdout}{res.stderr}"


def assert_clean(lab: Lab) -> None:
    assert leftovers(lab.topo) == []
    prefix = f"clab-{lab.name}-"
    assert not [n for n in ip_netns_list() if n.startswith(prefix)]


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_two_node_lab_kernel_state_ping_processes(tmp_path: Path) -> None:
    with lab_up(EXAMPLES / "two-node.clab.yml", tmp_path, fake_lispmesh=True) as lab:
        topo = lab.topo
        assert set(topo.namespaces()) <= ip_netns_list()
        n1 = interfaces(lab.netns_name("n1"))
        assert {"lo", "eth0", "eth1"} <= set(n1)
        assert "10.0.12.1/24" in n1["eth1"]["addresses"]
        assert "fd00:12::1/64" in n1["eth1"]["addresses"]
        assert n1["eth0"]["addresses"][0] == topo.nodes["n1"].mgmt_ipv4
        mgmt = interfaces(topo.mgmt_ns)
        assert mgmt[topo.mgmt.bridge]["addresses"][0] == "172.20.20.1/24"
        assert {mgmt[p]["master"] for p in ("n1", "n2")} == {topo.mgmt.bridge}

        # n1 and n2 share the underlay bridge with the controller: across it, IPv4 and IPv6.
        for node, addr in (("n1", "10.0.12.2"), ("n2", "10.0.12.1"),
                           ("n1", "fd00:12::2"), ("n2", "fd00:12::1")):  # fmt: skip
            assert_ping(lab, node, addr)
        assert_ping(lab, "n1", topo.nodes["n2"].mgmt_ipv4.split("/")[0])  # over the mgmt bridge

        st = state.LabState.load(lab.labdir)
        assert st is not None and st.status == "deployed"
        recs = st.processes
        assert sorted(r.node for r in recs) == ["ctrl", "n1", "n2"]
        for r in recs:
            assert procs.is_alive(r)
            ns_ino = netns.inode(lab.netns_name(r.node))
            assert os.stat(f"/proc/{r.pid}/ns/net").st_ino == ns_ino
            # Each node is its own host, named after its lab node (as a containerlab container).
            uts = os.stat(netns.uts_path(lab.netns_name(r.node))).st_ino
            assert os.stat(f"/proc/{r.pid}/ns/uts").st_ino == uts
        for node in ("n1", "n2"):
            assert lab.exec(node, ["hostname"]).stdout.strip() == node
        uts_files = [netns.uts_path(lab.netns_name(n)) for n in ("n1", "n2", "ctrl")]
        rows = inspect.rows(topo)
        assert [r["state"] for r in rows] == ["running"] * 4  # n1, n2, ctrl, underlay bridge
        for f in ("topology-data.json", "ansible-inventory.yml", "hosts"):
            assert (lab.labdir / f).is_file()

        inodes = {n: netns.inode(n) for n in topo.namespaces()}
        assert lab.deploy() == "unchanged"
        assert {n: netns.inode(n) for n in topo.namespaces()} == inodes
    assert_clean(lab)
    for r in recs:
        assert not procs.is_alive(r)
    assert not [f for f in uts_files if os.path.exists(f)]


def test_hub_spoke_nat_rewrites_source(tmp_path: Path) -> None:
    with lab_up(EXAMPLES / "hub-spoke-nat.clab.yml", tmp_path, fake_lispmesh=True) as lab:
        for node, addr in link_pings(lab.topo):
            assert_ping(lab, node, addr)
        # Capture on the hub what arrives from spoke2, which sits behind nat1.
        dump = lab.popen(
            "hub",
            ["tcpdump", "-n", "-l", "-i", "eth1", "-c", "1", "icmp[icmptype] == icmp-echo"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            ready = ""
            deadline = time.monotonic() + 10
            fd = dump.stderr.fileno()  # raw reads: a buffered readline could hide a line
            while "listening on" not in ready and time.monotonic() < deadline:
                r, _, _ = select.select([fd], [], [], 0.5)
                if r:
                    chunk = os.read(fd, 4096).decode(errors="replace")
                    if not chunk:
                        break
                    ready += chunk
            assert "listening on" in ready, ready
            assert_ping(lab, "spoke2", "10.0.1.2")
            out, _ = dump.communicate(timeout=10)
        finally:
            if dump.poll() is None:
                dump.kill()
                dump.wait()
        m = re.search(r"IP (\S+) > 10\.0\.1\.2: ICMP echo request", out)
        assert m, out
        assert m.group(1) == "10.0.3.2"  # nat1's outside address, not 192.168.1.2
        rules = lab.exec("nat1", ["nft", "list", "table", "inet", "netlab_nat"], check=True)
        packets = re.search(r"masquerade", rules.stdout) and re.search(
            r"counter packets (\d+) bytes \d+ masquerade", rules.stdout
        )
        assert packets and int(packets.group(1)) >= 1
        # spoke1 is not behind a NAT: its own address arrives unchanged
        assert_ping(lab, "spoke1", "10.0.1.2")
    assert_clean(lab)


def test_edge_dual_uplink_failover_and_shaping(tmp_path: Path) -> None:
    with lab_up(EXAMPLES / "edge-dual-uplink.clab.yml", tmp_path, fake_lispmesh=True) as lab:
        topo = lab.topo
        for node, addr in link_pings(topo):
            assert_ping(lab, node, addr)
        core = interfaces(lab.netns_name("core"))
        long_ep = tools.find_endpoint(topo, "core:to-wifi-access-point")[0]
        assert long_ep.ifname in core and len(long_ep.ifname) <= 15
        lte_ep = tools.find_endpoint(topo, "core:to-lte-packet-gateway")[0]
        assert core[lte_ep.ifname]["mtu"] == 1400

        def via() -> str:
            res = lab.exec("edge", ["ip", "route", "get", "10.0.0.2"], check=True)
            return res.stdout.split(" dev ")[1].split()[0]

        assert via() == "wifi"
        assert_ping(lab, "edge", "10.0.0.2")
        wifi = tools.target(topo, "edge", "wifi")
        tools.set_link(wifi, state="down")
        assert interfaces(lab.netns_name("edge"))["wifi"]["up"] is False
        assert via() == "lte"  # the wifi route left with the link; lte carries on
        assert_ping(lab, "edge", "10.0.0.2")
        tools.set_link(wifi, state="up")

        lte = tools.target(topo, "edge", "lte")
        tools.set_link(lte, rate="10mbit")
        q = tools.qdisc(lte)
        assert q["qdisc"] == "tbf" and q["rate"] == "10Mbit"
        try:
            tools.set_link(lte, delay="20ms", loss="1%")
        except NetemUnavailable as exc:
            assert "sch_netem" in str(exc)
            assert tools.qdisc(lte)["qdisc"] == "tbf"  # nothing changed
        else:
            assert tools.qdisc(lte)["qdisc"] == "netem"
        rows = {r["endpoint"]: r for r in tools.show_links(topo)}
        assert rows["edge:lte"]["qdisc"] in ("tbf", "netem")
    assert_clean(lab)


BRIDGE_LAB = """
name: {name}
topology:
  defaults: {{kind: linux}}
  nodes:
    sw: {{kind: bridge}}
    a: {{addresses: {{eth1: [10.5.0.1/24]}}}}
    b: {{addresses: {{eth1: [10.5.0.2/24]}}}}
    c: {{addresses: {{eth1: [10.5.0.3/24]}}, exec: ["ip link set eth1 mtu 1400"]}}
  links:
    - endpoints: ["a:eth1", "sw:p-a"]
    - endpoints: ["b:eth1", "sw:p-b"]
    - endpoints: ["c:eth1", "sw:p-c"]
    - endpoints: ["a:eth2", "host:{host_if}"]
"""


def test_bridge_host_link_and_exec(tmp_path: Path) -> None:
    name = unique_name("br")
    host_if = f"nlt{name[-6:]}"
    lab = Lab.from_text(BRIDGE_LAB.format(name=name, host_if=host_if), tmp_path / "b.clab.yml")
    try:
        assert lab.deploy() == "deployed"
        sw = interfaces(lab.netns_name("sw"))
        assert {sw[p]["master"] for p in ("p-a", "p-b", "p-c")} == {"sw"}
        for src in "abc":
            for dst in (1, 2, 3):
                assert_ping(lab, src, f"10.5.0.{dst}")
        assert interfaces(lab.netns_name("c"))["eth1"]["mtu"] == 1400  # exec ran
        host = interfaces(None)
        assert host_if in host
        # no address on the host end unless the topology gives one (IPv6 link-local aside)
        assert all(ipaddress.ip_interface(a).is_link_local for a in host[host_if]["addresses"])
    finally:
        lab.destroy()
    assert host_if not in interfaces(None)
    assert_clean(lab)


FAILING_LAB = """
name: {name}
topology:
  defaults: {{kind: linux, cmd: "sleep {marker}"}}
  nodes:
    n1: {{}}
    n2: {{}}
    n3: {{exec: ["true", "sh -c 'echo boom >&2; exit 3'"]}}
    n4: {{}}
    n5: {{}}
  links:
    - endpoints: ["n1:eth1", "n2:eth1"]
    - endpoints: ["n2:eth2", "n3:eth1"]
    - endpoints: ["n3:eth2", "n4:eth1"]
    - endpoints: ["n4:eth2", "host:{host_if}"]
"""


@pytest.mark.parametrize("workers", [1, 4])
def test_failure_mid_deploy_leaves_nothing(tmp_path: Path, workers: int) -> None:
    name = unique_name("fail")
    marker = f"{time.time_ns() % 10**6 + 7000}.5"  # a unique sleep argument to find the pids
    host_if = f"nlf{name[-6:]}"
    lab = Lab.from_text(
        FAILING_LAB.format(name=name, marker=marker, host_if=host_if), tmp_path / "f.clab.yml"
    )
    try:
        with pytest.raises(NetlabError) as info:
            lab.deploy(max_workers=workers)
        msg = str(info.value)
        assert "node n3: exec 'sh -c 'echo boom >&2; exit 3'' failed with exit code 3: boom" in msg
        assert "cleaned up" in msg
        assert_clean(lab)
        assert pids_with_cmdline(f"sleep {marker}") == []
        assert host_if not in interfaces(None)
    finally:
        lab.destroy()


def test_crashed_deploy_is_cleaned_by_destroy(tmp_path: Path) -> None:
    """A deploy killed with SIGKILL half-way leaves a state file that destroy cleans up from."""
    name = unique_name("crash")
    text = (
        f"name: {name}\ntopology:\n  defaults: {{kind: linux}}\n  nodes:\n"
        "    a: {cmd: sleep 3600}\n    b: {exec: [sleep 60]}\n"
        "  links: [{endpoints: [a:eth1, b:eth1]}]\n"
    )
    path = tmp_path / "c.clab.yml"
    path.write_text(text)
    code = "import sys; from netlab import Lab; Lab.from_file(sys.argv[1]).deploy(max_workers=1)"
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lab = Lab.from_file(path)
    try:
        # b's exec sleeps for a minute: wait until the deploy is stuck there, then kill it.
        wait_for(
            lambda: any(
                "sleep 60" in " ".join(_cmdline(p)) for p in netns.pids_in(lab.netns_name("b"))
            ),
            20,
            "exec to start",
        )
        child.kill()
        child.wait(timeout=10)
        st = state.LabState.load(lab.labdir)
        assert st is not None and st.status == "deploying"
        assert len(st.processes) == 1  # a's sleep 3600, started before b's exec (one worker)
        survivors = st.processes
        assert all(procs.is_alive(r) for r in survivors)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert lab.destroy() is True
    assert_clean(lab)
    assert not any(procs.is_alive(r) for r in survivors)


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def test_two_labs_coexist_and_reconfigure(tmp_path: Path) -> None:
    path = EXAMPLES / "two-node.clab.yml"
    with (
        lab_up(path, tmp_path, fake_lispmesh=True) as one,
        lab_up(path, tmp_path, fake_lispmesh=True) as two,
    ):
        assert one.netns_name("n1") != two.netns_name("n1")
        for lab in (one, two):
            assert_ping(lab, "n1", "10.0.12.2")
        changed = Lab.from_file(
            path,
            name=two.name,
            workdir=tmp_path,
            overrides={"n1": {"cmd": "sleep 3601"}, "n2": {"cmd": "sleep 3601"}},
        )
        with pytest.raises(NetlabError, match=r"different version.*--reconfigure"):
            changed.deploy()
        # A mark inside the old namespace (its inode number alone is no proof: the kernel may
        # give a namespace made right after the old one was freed the same number).
        ns = two.netns_name("n1")
        mark = ["ip", "addr", "add", "127.0.0.99/32", "dev", "lo"]
        assert subprocess.run(["ip", "netns", "exec", ns, *mark], check=False).returncode == 0
        assert changed.deploy(reconfigure=True) == "deployed"
        shown = subprocess.run(
            ["ip", "netns", "exec", ns, "ip", "-br", "addr", "show", "dev", "lo"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert shown.returncode == 0 and "127.0.0.1" in shown.stdout, shown
        assert "127.0.0.99" not in shown.stdout, "reconfigure kept the old namespace"
        assert_ping(one, "n1", "10.0.12.2")  # the other lab was not touched
    assert_clean(one)
    assert_clean(two)
