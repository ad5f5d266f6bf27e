"""Replayed data packets are dropped and counted; tampered ones fail decryption.

Real encrypted packets n1 -> n2 are captured on n1's uplink (tools/replay.py, AF_PACKET) while a
ping runs, then sent again from n1's RLOC address to n2:4341, as an on-path attacker would.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.overlay import REPO_ROOT, OverlayLab, XtrSpec, eid4, rloc, wait_until

pytestmark = pytest.mark.root

TOOL = Path(__file__).parent / "tools" / "replay.py"
PINGS = 5  # packets captured (each one accepted by n2 exactly once)
TIMES = 3  # how often each captured packet is replayed
HEADER_AND_IV = 8 + 12  # LISP header, then the AES-GCM IV; the ciphertext follows


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[OverlayLab]:
    with OverlayLab(tmp_path, [XtrSpec(1), XtrSpec(2)], name_prefix="rpl") as built:
        built.wait_registered()
        built.wait_ping("n1", eid4(2))
        yield built


def tool(lab: OverlayLab, node: str, args: list[str]) -> subprocess.Popen[str]:
    assert lab.lab is not None
    return subprocess.Popen(
        ["ip", "netns", "exec", lab.lab.netns_name(node), sys.executable, str(TOOL), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


def run_tool(lab: OverlayLab, node: str, args: list[str]) -> str:
    proc = tool(lab, node, args)
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"replay.py {args}: {out}{err}\n{lab.dump()}"
    return out


def decap_from(lab: OverlayLab, node: str, source_rloc: str) -> int:
    slots = lab.status(node)["xtr"]["keys"]["decap"]
    return sum(s["packets"] for s in slots if s["rloc"] == source_rloc)


def capture_ping_packets(lab: OverlayLab, path: Path) -> list[bytes]:
    """Capture the encrypted packets of PINGS echo requests n1 -> n2, each accepted once."""
    sniffer = tool(
        lab,
        "n1",
        ["capture", "--iface", "eth1", "--dst", rloc(2), "--count", str(PINGS), "--out", str(path)],
    )
    try:
        assert sniffer.stdout is not None
        ready = select.select([sniffer.stdout], [], [], 10)[0]
        assert ready and sniffer.stdout.readline().strip() == "ready", lab.dump()
        accepted_before = decap_from(lab, "n2", rloc(1))
        result = lab.exec("n1", ["ping", "-c", str(PINGS), "-i", "0.2", "-W", "2", eid4(2)])
        assert f"{PINGS} received" in result.stdout, f"{result.stdout}\n{lab.dump()}"
        out, err = sniffer.communicate(timeout=15)
        assert sniffer.returncode == 0, f"{out}{err}"
    finally:
        if sniffer.poll() is None:
            sniffer.kill()
            sniffer.wait()
    # n2 decapsulated exactly these packets from n1 (nothing else flows n1 -> n2 meanwhile).
    assert decap_from(lab, "n2", rloc(1)) == accepted_before + PINGS, lab.dump()
    payloads = [bytes.fromhex(p) for p in json.loads(path.read_text())]
    assert len(payloads) == PINGS and len(set(payloads)) == PINGS
    assert all(p[0] & 0x03 for p in payloads), "captured packets carry no key-id: not encrypted"
    return payloads


def test_replayed_packets_are_dropped_and_counted(lab: OverlayLab, tmp_path: Path) -> None:
    captured = tmp_path / "captured.json"
    capture_ping_packets(lab, captured)
    drops = lab.drops("n2")
    accepted = decap_from(lab, "n2", rloc(1))

    sent = run_tool(
        lab,
        "n1",
        ["send", "--src", rloc(1), "--dst", rloc(2), "--in", str(captured), "--times", str(TIMES)],
    )
    assert sent.strip() == f"sent {PINGS * TIMES}"
    expected = drops.get("replay", 0) + PINGS * TIMES
    wait_until(lambda: lab.drops("n2").get("replay", 0) >= expected, 10, "n2 to count the replays")
    after = lab.drops("n2")
    assert after.get("replay", 0) == expected, f"{after}\n{lab.dump()}"
    assert after.get("decrypt-failure", 0) == drops.get("decrypt-failure", 0), lab.dump()
    assert decap_from(lab, "n2", rloc(1)) == accepted, "a replayed packet was delivered"

    # The replays did not disturb the session: fresh packets are still accepted.
    assert lab.ping("n1", eid4(2), count=3), lab.dump()


def test_tampered_packet_fails_decryption(lab: OverlayLab, tmp_path: Path) -> None:
    captured = tmp_path / "captured.json"
    payloads = capture_ping_packets(lab, captured)
    drops = lab.drops("n2")
    accepted = decap_from(lab, "n2", rloc(1))
    flip = HEADER_AND_IV + 4  # a ciphertext byte
    assert all(len(p) > flip + 16 for p in payloads)

    sent = run_tool(
        lab,
        "n1",
        ["send", "--src", rloc(1), "--dst", rloc(2), "--in", str(captured), "--flip", str(flip)],
    )
    assert sent.strip() == f"sent {PINGS}"
    expected = drops.get("decrypt-failure", 0) + PINGS
    wait_until(
        lambda: lab.drops("n2").get("decrypt-failure", 0) >= expected,
        10,
        "n2 to count the tampered packets",
    )
    after = lab.drops("n2")
    assert after.get("decrypt-failure", 0) == expected, f"{after}\n{lab.dump()}"
    # Authentication comes first: a tampered copy of an accepted packet is not a "replay".
    assert after.get("replay", 0) == drops.get("replay", 0), lab.dump()
    assert decap_from(lab, "n2", rloc(1)) == accepted, "a tampered packet was delivered"
    assert lab.ping("n1", eid4(2), count=3), lab.dump()
