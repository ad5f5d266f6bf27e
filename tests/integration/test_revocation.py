"""A revoked node is cut off by its peers' xTRs, even when it keeps the keys it already has.

n1 plays the hostile revoked node: it keeps running with the keys it exchanged with n2. n2
learns `security.revoked_peers: [n1]` by a reload and must drop n1's keys and refuse any new
key exchange from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.control import query
from tests.integration.overlay import OverlayLab, XtrSpec, eid4, wait_until

pytestmark = pytest.mark.root


def _revoke_at(lab: OverlayLab, node: str, revoked: list[str]) -> dict[str, Any]:
    """Rewrite `node`'s config with `security.revoked_peers` and reload it (as set_policy)."""
    path = lab.workdir / "configs" / f"{node}.yml"
    config = yaml.safe_load(path.read_text())
    config.setdefault("security", {})["revoked_peers"] = revoked
    path.write_text(yaml.safe_dump(config))
    return query(lab.run_dir / f"{node}.sock", "reload")


def _peers(status: dict[str, Any], kind: str) -> set[str]:
    return {row["peer"] for row in status["xtr"]["keys"][kind]}


@pytest.mark.parametrize("dataplane", ["auto", "python"])
def test_revoked_peer_keys_are_dropped_and_refused(tmp_path: Path, dataplane: str) -> None:
    specs = [XtrSpec(1, dataplane=dataplane), XtrSpec(2, dataplane=dataplane)]
    with OverlayLab(tmp_path, specs, name_prefix="rv") as lab:
        lab.wait_registered()
        lab.wait_ping("n1", eid4(2))
        before = lab.status("n2")
        if dataplane == "python":
            assert before["xtr"]["dataplane"] == "python"
        assert "n1" in _peers(before, "decap"), lab.dump()

        _revoke_at(lab, "n2", ["n1"])
        after = lab.status("n2")
        assert after["xtr"]["revoked_peers"] == ["n1"], lab.dump()
        assert "n1" not in _peers(after, "decap"), lab.dump()
        assert "n1" not in _peers(after, "encap"), lab.dump()

        # n1 still holds its old key for n2: its packets must die at n2 now.
        drops0 = lab.drops("n2")
        refused0 = drops0.get("no-key", 0) + drops0.get("kx-revoked-peer", 0)
        assert not lab.ping("n1", eid4(2), count=3, timeout=1), lab.dump()

        def refused() -> bool:
            drops = lab.drops("n2")
            return drops.get("no-key", 0) + drops.get("kx-revoked-peer", 0) > refused0

        wait_until(refused, 10, "n2 to count n1's packets as no-key / kx-revoked-peer")
        # n1 re-offers a key when solicited: the exchange is refused, no slot comes back.
        assert not lab.ping("n1", eid4(2), count=2, timeout=1), lab.dump()
        final = lab.status("n2")
        assert "n1" not in _peers(final, "decap"), lab.dump()
        assert "n1" not in _peers(final, "encap"), lab.dump()
        assert not lab.ping("n2", eid4(1), count=2, timeout=1), lab.dump()
