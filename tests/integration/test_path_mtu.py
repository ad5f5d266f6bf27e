"""Path MTU in real namespaces (issue 16 item 6, RFC 9300 §7.2): an underlay MTU of 1280
between n1 and n2, with the bottleneck on n1's own link, or on a router `r` in the middle (whose
route to each side is `mtu lock 1280`) that sends ICMP "fragmentation needed" or has it dropped
by nftables. In each case a 1300-byte DF ping gets a frag-needed with the path's inner MTU and
TCP moves data both ways. The labs mix the C and Python data paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.overlay import OverlayLab, XtrSpec, eid4, rloc, via_ifnames, wait_until
from tests.integration.test_overlay import tcp_transfer

pytestmark = pytest.mark.root

UNDERLAY_MTU = 1280
AEAD_OUTER = 20 + 8 + 8 + 12 + 16  # outer IPv4, UDP, LISP header, IV, tag
EXACT = UNDERLAY_MTU - AEAD_OUTER  # what the route or an ICMP says
# What padded probes find: within mesh.pmtu's granularity below, and up to 4 bytes above: a veth
# takes frames of its MTU plus a VLAN tag, so a link set to 1280 really carries 1284-byte packets.
PROBED = range(EXACT - 16, EXACT + 5)


def frag_needed_mtu(lab: OverlayLab, node: str, address: str) -> int | None:
    """The MTU a 1300-byte DF ping from `node` is told (ICMP from the ITR, or the kernel's
    "message too long" once it has learnt it); None while it is not told."""
    result = lab.exec(node, ["ping", "-M", "do", "-s", "1272", "-c", "1", "-W", "1", address])
    found = re.search(r"mtu ?= ?(\d+)", result.stdout + result.stderr)
    return int(found.group(1)) if found else None


def check_both_ways(
    lab: OverlayLab, there: range, back: range, c_node: str, resegmented: bool
) -> None:
    """TCP both ways first, n1 (the C node) sending first: its TSO super-packets meet the path
    MTU before anything taught its kernel a smaller one (an ICMP error about a large ping reply,
    or the smaller MSS a peer advertises once it learnt the path); then the DF pings. Where the
    path MTU is known before the first segment (`resegmented`), the C engine cuts the super-
    packets itself; otherwise a first over-size packet's ICMP may lower the sender's MSS first."""
    for a, b in ((1, 2), (2, 1)):
        lab.wait_ping(f"n{a}", eid4(b))
        tcp_transfer(lab, f"n{a}", f"n{b}", eid4(b), 1_000_000)
    for (a, b), expected in (((1, 2), there), ((2, 1), back)):
        told = wait_until(
            lambda a=a, b=b: frag_needed_mtu(lab, f"n{a}", eid4(b)), 30, f"n{a}'s frag-needed"
        )
        assert told in expected, (a, b, told, lab.status(f"n{a}")["xtr"]["path_mtu"])
    for node in ("n1", "n2"):
        stats = lab.status(node)["xtr"]["stats"]
        assert stats.get("mtu-icmp-sent", 0) >= 1, stats
    engine = lab.status(c_node)["xtr"]["datapath_stats"]
    assert engine.get("mtu-slow", 0) >= 1, engine  # the DF ping, handed to Python
    if resegmented:
        assert engine.get("mtu-resegmented", 0) >= 1, engine


def router(tmp_path: Path, drop_icmp: bool) -> dict[str, object]:
    inside, outside = via_ifnames("n1")
    commands = [
        "sysctl -qw net.ipv4.conf.all.proxy_arp=1",
        f"ip addr add 10.77.0.99/32 dev {outside}",
        f"ip route add {rloc(1)}/32 dev {inside} mtu lock {UNDERLAY_MTU}",
        f"ip route add 10.77.0.0/24 dev {outside} mtu lock {UNDERLAY_MTU}",
    ]
    if drop_icmp:
        rules = tmp_path / "drop-icmp.nft"
        rules.write_text(
            "table inet mtu {\n  chain out {\n    type filter hook output priority 0;\n"
            "    icmp type destination-unreachable drop\n  }\n}\n"
        )
        commands.append(f"nft -f {rules}")
    return {"kind": "router", "exec": commands}


def test_bottleneck_on_the_nodes_own_link(tmp_path: Path) -> None:
    # n1 also clamps the MSS of its SYNs: n2 then never sends it segments its link would drop.
    specs = [XtrSpec(1, dataplane="c", xtr={"mss_clamp": True}), XtrSpec(2, dataplane="python")]
    with OverlayLab(tmp_path, specs, name_prefix="mtl") as lab:
        assert (
            lab.exec("n1", ["ip", "link", "set", "eth1", "mtu", str(UNDERLAY_MTU)]).returncode == 0
        )
        lab.wait_registered()
        # n1 reads its route's MTU; n2 sees a 1500 link and frames n1's link drops silently.
        check_both_ways(
            lab, there=range(EXACT, EXACT + 1), back=PROBED, c_node="n1", resegmented=True
        )
        assert lab.status("n2")["xtr"]["stats"].get("mtu-black-holes", 0) >= 1
        n1 = lab.status("n1")["xtr"]
        clamped = n1["stats"].get("mtu-mss-clamped", 0) + n1["datapath_stats"].get("mss-clamped", 0)
        assert clamped >= 1, n1["datapath_stats"]


@pytest.mark.parametrize("drop_icmp", [False, True], ids=["icmp", "icmp-dropped"])
def test_bottleneck_on_a_router_in_the_middle(tmp_path: Path, drop_icmp: bool) -> None:
    specs = [XtrSpec(1, dataplane="c", via="r"), XtrSpec(2, dataplane="python")]
    extra = {"r": router(tmp_path, drop_icmp)}
    with OverlayLab(tmp_path, specs, name_prefix="mtr", extra_nodes=extra) as lab:
        lab.wait_registered()
        expected = PROBED if drop_icmp else range(EXACT, EXACT + 1)
        check_both_ways(lab, there=expected, back=expected, c_node="n1", resegmented=not drop_icmp)
        for node in ("n1", "n2"):
            stats = lab.status(node)["xtr"]["stats"]
            learnt = "mtu-black-holes" if drop_icmp else "mtu-icmp"
            assert stats.get(learnt, 0) >= 1, (node, stats)
