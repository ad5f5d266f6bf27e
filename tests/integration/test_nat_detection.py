"""NAT detection on real nodes: an xTR behind each netlab NAT profile (and one with none) asks two
map-servers, at two addresses, how it is seen, and `netcheck` / `status` report the verdict.

    ms1 (10.0.9.2) ──┐           ┌── n0 (10.0.8.2, public)
    ms2 (10.0.7.2) ──┼── wan ────┼── nat-I (10.0.I.2 | 192.168.I.1) ── nI (192.168.I.2), I = 1..4
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
import yaml

from lisp import auth
from lisp.auth import AuthAlg
from lisp.info import InfoMessage
from lispmesh.waiting import wait_until
from mesh.control import ControlError, query
from netlab import netns
from netlab.lab import Lab
from netlab.testing import lab_up
from tests.lab_identities import provision_lab_identities

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

REPO = Path(__file__).resolve().parents[2]
KEY = "nat-lab-site-key"
MS = {"ms1": "10.0.9.2", "ms2": "10.0.7.2"}
MS1_SECOND = "10.0.9.3"  # ms1 listens here too
PROFILES = {1: "full-cone", 2: "address-restricted", 3: "port-restricted", 4: "symmetric"}
XTRS = {"n0": "10.0.8.2", **{f"n{i}": f"192.168.{i}.2" for i in PROFILES}}


def _xtr_config(name: str, workdir: Path, ident: Path, index: int) -> dict[str, Any]:
    return {
        "name": name,
        "run_dir": str(workdir / "run"),
        "state_dir": str(workdir / "state" / name),
        "identity": {
            "key": str(ident / "node.key"),
            "cert": str(ident / "node.crt"),
            "ca": str(ident / "ca.crt"),
        },
        "xtr": {
            "tun": "lm0",
            "eid_prefixes": [f"10.1.{index}.0/24"],
            "eid_addresses": [f"10.1.{index}.1"],
            "overlay_routes": ["10.1.0.0/16"],
            "rlocs": [{"address": XTRS[name], "interface": "eth1"}],
            "map_servers": [{"address": a, "key": KEY} for a in MS.values()],
        },
    }


def _topology(workdir: Path) -> Path:
    idents = provision_lab_identities(
        workdir / "pki", "nat-ca", {n: [(0, f"10.1.{i}.0/24")] for i, n in enumerate(XTRS)}
    )
    run = f"{sys.executable} -m lispmesh node run --config"
    env = {"PYTHONPATH": str(REPO)}
    nodes: dict[str, Any] = {"wan": {"kind": "router", "addresses": {}}}
    links = []
    wan_if = iter(range(1, 20))

    def uplink(node: str, address: str, prefix: str) -> None:
        port = f"eth{next(wan_if)}"
        nodes["wan"]["addresses"][port] = [f"{prefix}.1/24"]
        nodes[node]["addresses"]["eth1"] = [f"{address}/24"]
        nodes[node]["routes"] = [f"default via {prefix}.1"]
        links.append({"endpoints": [f"wan:{port}", f"{node}:eth1"]})

    def config(name: str, data: dict[str, Any]) -> str:
        path = workdir / f"{name}.yml"
        path.write_text(yaml.safe_dump(data))
        return f"{run} {path}"

    for name, address in MS.items():
        ms = {
            "name": name,
            "run_dir": str(workdir / "run"),
            "state_dir": str(workdir / "state" / name),
            "map_server": {
                "listen": [address] + ([MS1_SECOND] if name == "ms1" else []),
                "sites": [{"name": "lab", "keys": {0: KEY}, "allowed": ["10.1.0.0/16"]}],
            },
        }
        nodes[name] = {"kind": "lispmesh-node", "cmd": config(name, ms), "env": env,
                       "addresses": {}}  # fmt: skip
        uplink(name, address, address.rsplit(".", 1)[0])
        if name == "ms1":
            nodes[name]["addresses"]["eth1"].append(f"{MS1_SECOND}/24")
    for index, name in enumerate(XTRS):
        cmd = config(name, _xtr_config(name, workdir, idents[name], index))
        nodes[name] = {"kind": "lispmesh-node", "cmd": cmd, "env": env, "addresses": {}}
        if index == 0:
            uplink(name, XTRS[name], "10.0.8")
            continue
        nat = f"nat-{index}"
        nodes[nat] = {
            "kind": "nat",
            "nat": {"outside": "eth1", "profile": PROFILES[index]},
            "addresses": {"eth2": [f"192.168.{index}.1/24"]},
        }
        uplink(nat, f"10.0.{index}.2", f"10.0.{index}")
        nodes[name]["addresses"]["eth1"] = [f"{XTRS[name]}/24"]
        nodes[name]["routes"] = [f"default via 192.168.{index}.1"]
        links.append({"endpoints": [f"{nat}:eth2", f"{name}:eth1"]})
    topo = {
        "name": "natdet",
        "topology": {"defaults": {"network-mode": "none"}, "nodes": nodes, "links": links},
    }
    path = workdir / "natdet.clab.yml"
    path.write_text(yaml.safe_dump(topo, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Path]]:
    workdir = tmp_path_factory.mktemp("natdet")
    with lab_up(_topology(workdir), workdir) as lab:
        yield lab, workdir / "run"


def _netcheck(run: Path, node: str) -> dict[str, Any] | None:
    try:
        doc = query(run / f"{node}.sock", "netcheck", timeout=15, wait=3)
    except ControlError:
        return None  # not up yet
    states = [u["state"] for u in doc["uplinks"]]
    return doc if "checking" not in states else None


@pytest.mark.parametrize("node", sorted(XTRS))
def test_netcheck_and_status_report_the_nat_of_each_profile(
    lab: tuple[Lab, Path], node: str
) -> None:
    _, run = lab
    doc = wait_until(lambda: _netcheck(run, node), 30, f"{node} netcheck with a NAT verdict")
    [uplink] = doc["uplinks"]
    index = int(node[1:])
    seen = {ms: v.rsplit(":", 1) for ms, v in uplink["seen_by"].items()}
    assert set(seen) == {f"{a}:4342" for a in MS.values()}, doc  # both map-servers answered
    if index == 0:
        assert (uplink["state"], uplink["mapping"], doc["nat"]["detected"]) == ("none", None, False)
        assert uplink["translated"] == f"{XTRS[node]}:4342" and uplink["direct"] == "yes"
    else:
        profile = PROFILES[index]
        mapping = "endpoint-dependent" if profile == "symmetric" else "endpoint-independent"
        assert (uplink["state"], uplink["mapping"], doc["nat"]["detected"]) == (
            "nat",
            mapping,
            True,
        ), (profile, doc)
        assert {a for a, _ in seen.values()} == {f"10.0.{index}.2"}  # the NAT's outside address
        assert uplink["direct"] == ("no" if profile == "symmetric" else "hole-punching")
        ports = {p for _, p in seen.values()}
        assert len(ports) == (2 if profile == "symmetric" else 1), (profile, doc)
    assert doc["ok"], doc["problems"]
    status = query(run / f"{node}.sock", "status")
    assert status["xtr"]["uplinks"][0]["nat"]["state"] == uplink["state"]
    assert status["xtr"]["stats"]["info-replies"] >= 2
    if index == 4:  # what a person reads
        text = subprocess.run(
            [sys.executable, "-m", "lispmesh", "netcheck", "--socket", str(run / f"{node}.sock")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert "behind NAT as 10.0.4.2:" in text.stdout and "direct: no" in text.stdout, (
            text.stdout + text.stderr
        )


def test_a_map_server_on_two_addresses_answers_from_the_one_asked(lab: tuple[Lab, Path]) -> None:
    """An answer from another address of the map-server would be dropped by the NAT (no mapping
    for it) and refused by NAT detection (wrong source): it must leave from the address asked."""
    netlab_lab, _ = lab
    unsigned = InfoMessage(
        0x5EED, False, 0, AuthAlg.HMAC_SHA_256_128, b"", 0, IPv4Address("10.1.0.0"), 24
    ).encode()

    def ask() -> tuple[bytes, tuple[str, int]] | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((XTRS["n0"], 0))
            s.settimeout(1)
            s.sendto(auth.sign(unsigned, KEY.encode()), (MS1_SECOND, 4342))
            try:
                return s.recvfrom(4096)
            except TimeoutError:
                return None  # the map-server is not up yet, or it answered from elsewhere

    answer = wait_until(lambda: netns.run_in(netlab_lab.netns_name("n0"), ask), 20, "an answer")
    data, source = answer
    assert source == (MS1_SECOND, 4342)
    assert InfoMessage.decode(data).nonce == 0x5EED and auth.verify(data, KEY.encode())
