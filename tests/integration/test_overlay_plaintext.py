"""Plain RFC 9300 data in real namespaces (issue 16 item 1): with `security.encryption: false`
n1 (Python data path) and n2 (C data path) carry plaintext both ways; n3 keeps encryption on and
refuses (and counts) the plaintext n1 sends it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.overlay import OverlayLab, XtrSpec, eid4, eid6, wait_until
from tests.integration.test_overlay import tcp_transfer

pytestmark = pytest.mark.root

OFF = {"encryption": False}


def test_plaintext_mesh_with_both_data_paths(tmp_path: Path) -> None:
    specs = [
        XtrSpec(1, dataplane="python", security=OFF),
        XtrSpec(2, dataplane="c", security=OFF),
        XtrSpec(3, dataplane="c"),
    ]
    with OverlayLab(tmp_path, specs, name_prefix="pt") as lab:
        lab.wait_registered()
        assert lab.status("n1")["xtr"]["dataplane"] == "python"
        assert lab.status("n2")["xtr"]["dataplane"] == "c"
        for a, b in ((1, 2), (2, 1)):
            lab.wait_ping(f"n{a}", eid4(b))
            lab.wait_ping(f"n{a}", eid6(b))
            tcp_transfer(lab, f"n{a}", f"n{b}", eid4(b), 1_000_000)
        assert lab.status("n2")["encryption"] is False
        # n3 encrypts: n1's plaintext never reaches its TUN, and each packet is counted.
        assert not lab.ping("n1", eid4(3), count=2)
        wait_until(
            lambda: lab.drops("n3").get("plaintext-refused", 0) >= 1,
            10,
            "n3 to count the plaintext it refused",
        )
        for node in ("n1", "n2"):
            assert "plaintext-refused" not in lab.drops(node), lab.drops(node)
