"""Workloads on the encrypted mesh: two lispmesh nodes (an overlay lab), a busybox container on
each under runc with its own EID out of its node's prefix, each reaching the other's EID through
the overlay (ping and a TCP echo from inside the workload's own network namespace)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest

from lispmesh.waiting import wait_until
from node.workloads.oci_image import load_image
from node.workloads.oci_store import BlobStore
from node.workloads.package import workload_spec
from node.workloads.runc import RuncRuntime
from node.workloads.runtime import Attachment, Workload
from tests.integration.overlay import OverlayLab, XtrSpec, eid4, eid6
from tests.oci_build import BUSYBOX, busybox_layer, write_layout

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and runc"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc not installed (bootstrap.sh)"),
    pytest.mark.skipif(not BUSYBOX.exists(), reason="busybox-static not installed"),
    pytest.mark.skipif(not Path("/dev/net/tun").exists(), reason="needs /dev/net/tun"),
]
ECHO = {"Cmd": ["/bin/nc", "-ll", "-p", "7", "-e", "/bin/cat"], "User": "app"}


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[OverlayLab]:
    with OverlayLab(tmp_path / "lab", [XtrSpec(1), XtrSpec(2)], name_prefix="wm") as lab:
        yield lab


def test_workloads_on_two_nodes_reach_each_other_over_the_mesh(
    lab: OverlayLab, tmp_path: Path
) -> None:
    assert lab.lab is not None
    write_layout(tmp_path / "echo", [busybox_layer()], config=ECHO)
    store = BlobStore(tmp_path / "store")
    image = load_image(store, store.import_layout(tmp_path / "echo"))
    tag = secrets.token_hex(2)
    runtimes: dict[str, RuncRuntime] = {}
    try:
        for index in (1, 2):
            node = f"n{index}"
            netns = lab.lab.netns_name(node)
            for sysctl in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
                lab.exec(node, ["sysctl", "-qw", sysctl])
            runtime = RuncRuntime(tmp_path / node, tmp_path / f"runc-{node}", f"wm{tag}{index}-",
                                  node_netns=netns)  # fmt: skip
            runtimes[node] = runtime
            attachment = Attachment(f"wm{tag}{index}echo", ip_address(eid4(index, 7)),
                                    ip_address(eid6(index, 7)))  # fmt: skip
            workload = Workload("echo", image, workload_spec(image), attachment)
            runtime.prepare(store, workload)
            runtime.define(workload)
            runtime.start("echo")
        lab.wait_registered()

        def inside(node: str, script: str) -> subprocess.CompletedProcess[str]:
            netns = runtimes[node].prefix + "echo"  # the workload's own network namespace
            return subprocess.run(["ip", "netns", "exec", netns, "busybox", "sh", "-c", script],
                                  capture_output=True, text=True, timeout=20)  # fmt: skip

        for here, index in (("n1", 2), ("n2", 1)):  # the other node's workload
            for address in (eid4(index, 7), eid6(index, 7)):
                wait_until(lambda a=address, h=here: inside(h, f"ping -c1 -W1 {a}").returncode
                           == 0, 20, f"{here}'s workload to reach {address}")  # fmt: skip
                echo = inside(here, f"echo from-{here} | nc -w 3 {address} 7")
                assert echo.stdout == f"from-{here}\n", (echo, lab.dump())
        # It went through the encrypted overlay: the nodes counted packets to each other.
        peers = {p["name"]: p for p in lab.status("n1")["xtr"]["peers"]}
        assert peers["n2"]["packets_sent"] > 0 and peers["n2"]["packets_received"] > 0
    finally:
        for runtime in runtimes.values():
            for name in runtime.names():
                runtime.destroy(name)
                runtime.delete(name)
