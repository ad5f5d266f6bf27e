"""An on-path attacker rewrites the key in Map-Replies: no traffic flows, and the node says why.

n1 has no direct link to the underlay: node `mitm` sits between n1's eth1 and the bridge `ul` and
runs tools/mitm_bridge.py, a userspace Ethernet bridge (no kernel forwarding). It starts in
passthrough mode, which proves the bridge carries the overlay; armed, it replaces the X25519 key of
every Map-Reply heading to n1 with its own, as an attacker wanting to read n1's traffic would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.overlay import OverlayLab, XtrSpec, eid4, rloc, via_ifnames, wait_until

pytestmark = pytest.mark.root

BRIDGE = Path(__file__).parent / "tools" / "mitm_bridge.py"
ATTACK_SECONDS = 6.0  # longer than the 5 s hold after a refused exchange: n1 retries in this time


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[OverlayLab]:
    inside, outside = via_ifnames("n1")
    stats = tmp_path / "mitm.json"
    mitm = {
        "kind": "linux",
        "cmd": f"{sys.executable} {BRIDGE} --inside {inside} --outside {outside} "
        f"--stats {stats} --passthrough",
        # The attacker's own stack stays quiet: no addresses, no IPv6 chatter, no forwarding.
        "sysctls": {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv4.ip_forward": "0"},
    }
    specs = [XtrSpec(1, via="mitm"), XtrSpec(2), XtrSpec(3)]
    with OverlayLab(tmp_path, specs, name_prefix="mitm", extra_nodes={"mitm": mitm}) as built:
        built.wait_registered()
        yield built


def bridge_stats(lab: OverlayLab) -> dict[str, Any]:
    path = lab.workdir / "mitm.json"
    return json.loads(path.read_text()) if path.exists() else {}


def lm0_rx_packets(lab: OverlayLab, node: str) -> int:
    """Packets the node process wrote into its TUN device (the kernel's receive side)."""
    result = lab.exec(node, ["cat", "/sys/class/net/lm0/statistics/rx_packets"])
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def decap_packets_from(lab: OverlayLab, node: str, source_rloc: str) -> int:
    slots = lab.status(node)["xtr"]["keys"]["decap"]
    return sum(s["packets"] for s in slots if s["rloc"] == source_rloc)


def test_rewritten_map_reply_key_blocks_traffic_and_is_reported(lab: OverlayLab) -> None:
    # 1. Passthrough: the bridge is sound. n1 registered through it, and reaches n2.
    lab.wait_ping("n1", eid4(2))
    assert lab.ping("n1", eid4(2), count=3), lab.dump()

    def forwarded_both_ways() -> dict[str, Any] | None:
        stats = bridge_stats(lab)
        both = stats.get("frames-to-inside", 0) > 0 and stats.get("frames-to-outside", 0) > 0
        return stats if both else None

    before = wait_until(forwarded_both_ways, 5, "the bridge to count forwarded frames")
    assert before["mode"] == "passthrough", before
    assert before.get("keys-rewritten", 0) == 0, before
    assert lab.drops("n1").get("kx-auth-failed", 0) == 0, lab.dump()

    # 2. Arm the attacker and wait until it says so.
    os.kill(before["pid"], signal.SIGUSR1)
    wait_until(lambda: bridge_stats(lab).get("mode") == "rewrite", 5, "the bridge to arm")
    n3_rx = lm0_rx_packets(lab, "n3")

    # 3. n1 -> n3 needs a new key exchange, whose Map-Reply the attacker rewrites: nothing gets
    # through for the whole attack, across at least one retry of the exchange.
    count = int(ATTACK_SECONDS / 0.2)
    result = lab.exec(
        "n1",
        ["ping", "-c", str(count), "-i", "0.2", "-W", "1", eid4(3)],
        timeout=ATTACK_SECONDS + 15,
    )
    received = re.search(r"(\d+) received", result.stdout)
    assert received is not None, result.stdout + result.stderr
    assert int(received.group(1)) == 0, f"{result.stdout}\n{lab.dump()}"

    # 4. The attacker really rewrote keys (the test cannot pass by the bridge dropping them),
    # and n1 refused every rewritten Map-Reply, and says why.
    def all_refused() -> tuple[int, int] | None:
        rewritten = bridge_stats(lab).get("map-replies-rewritten", 0)
        refused = lab.drops("n1").get("kx-auth-failed", 0)
        return (rewritten, refused) if rewritten >= 1 and refused == rewritten else None

    wait_until(all_refused, 5, "n1 to refuse every rewritten Map-Reply (rewritten, refused)")
    after = bridge_stats(lab)
    assert after.get("keys-rewritten", 0) >= after["map-replies-rewritten"], after
    xtr = lab.status("n1")["xtr"]
    reasons = [line for line in xtr["errors"] if "signature does not match" in line]
    assert any("10.1.3.0/24" in line and rloc(3) in line for line in reasons), (
        f"{reasons}\n{lab.dump()}"
    )
    # n1 never installed a path to n3: no encap key for n3, no in-use RLOC for its prefix.
    assert all(e["peer"] != "n3" for e in xtr["keys"]["encap"]), lab.dump()
    assert not any(e["prefix"] == "10.1.3.0/24" and e["in_use"] for e in xtr["map_cache"]), (
        lab.dump()
    )

    # 5. n3 got nothing from n1: no packet decapsulated from n1's RLOC, nothing on its TUN.
    # (n3's ETR did accept n1's Map-Request, so it may hold a decap slot for n1, unused.)
    assert decap_packets_from(lab, "n3", rloc(1)) == 0, lab.dump()
    assert lm0_rx_packets(lab, "n3") == n3_rx, lab.dump()

    # 6. The attack is on the key exchange only: the bridge still forwards, and the key n1
    # exchanged with n2 before the attack (through the same bridge) still works.
    assert lab.ping("n1", eid4(2), count=2), lab.dump()
    forwarded = after.get("frames-to-inside", 0)
    wait_until(
        lambda: bridge_stats(lab).get("frames-to-inside", 0) > forwarded,
        5,
        "the armed bridge to forward frames",
    )


def test_overlay_lab_refuses_an_unknown_via_node(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not in extra_nodes"):
        OverlayLab(tmp_path, [XtrSpec(1, via="nowhere")])
