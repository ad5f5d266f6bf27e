"""A mesh with no controller, its identities made with `lispmesh pki` (issue 16, item 7): a CA,
node certificates for names and EIDs, then `node run --config` nodes that reach each other over
the encrypted, authenticated overlay; a node certified by another CA is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lispmesh.waiting import wait_until
from tests.integration.overlay import REPO_ROOT, OverlayLab, XtrSpec, eid4, eid6
from tests.unit.test_metrics import samples

pytestmark = pytest.mark.root


def pki(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "lispmesh", "pki", *args],
        capture_output=True, text=True, timeout=30, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_mesh_from_lispmesh_pki_certificates(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    pki("ca", "create", "--out", str(keys / "ca"), "--name", "pki test CA")
    pki("ca", "create", "--out", str(keys / "other-ca"), "--name", "someone else's CA")
    identities = {}
    for index, ca in ((1, "ca"), (2, "ca"), (3, "other-ca")):
        name = f"n{index}"
        pki("cert", "issue", "--ca", str(keys / ca), "--name", name,
            "--eid", f"10.1.{index}.0/24", "--eid", f"[0]fd00:1:{index}::/64",
            "--out", str(keys / name))  # fmt: skip
        identities[name] = keys / name
        assert (keys / name / "node.key").stat().st_mode & 0o777 == 0o600
    # Every node trusts the first CA (n3 only holds a certificate from the other one).
    (keys / "n3" / "ca.crt").write_bytes((keys / "ca" / "ca.crt").read_bytes())
    assert "valid node certificate of n1" in pki(
        "cert", "verify", str(keys / "n1" / "node.crt"), "--ca", str(keys / "ca" / "ca.crt")
    )

    specs = [XtrSpec(1, metrics="127.0.0.1:9464"), XtrSpec(2), XtrSpec(3)]
    with OverlayLab(tmp_path / "lab", specs, name_prefix="pk", identities=identities) as lab:
        lab.wait_registered(["n1", "n2"])
        lab.wait_ping("n1", eid4(2))
        lab.wait_ping("n2", eid6(1))
        peers = {p["name"]: p for p in lab.status("n1")["xtr"]["peers"]}
        assert "n2" in peers, lab.dump()  # authenticated: the peer is known by its certified name
        # n3's key exchange carries a certificate n1 cannot chain to its CA: refused, counted.
        refused0 = lab.drops("n1").get("kx-auth-failed", 0)
        assert not lab.ping("n3", eid4(1), count=2, timeout=1)
        wait_until(lambda: lab.drops("n1").get("kx-auth-failed", 0) > refused0, 15,
                   "n1 to refuse n3's key exchange", 0.2)  # fmt: skip
        assert "n3" not in {p["name"] for p in lab.status("n1")["xtr"]["peers"]}

        # n1's Prometheus metrics, scraped in its namespace, say the same as its status.
        got = scrape(lab, "n1", "http://127.0.0.1:9464/metrics")
        refused = lab.drops("n1").get("kx-auth-failed", 0)
        assert got[("lispmesh_drops_total", (("reason", "kx-auth-failed"),))] >= refused0 + 1
        assert got[("lispmesh_drops_total", (("reason", "kx-auth-failed"),))] <= refused
        assert got[("lispmesh_peer_received_packets_total", (("peer", "n2"),))] > 0
        assert got[("lispmesh_registered", (("map_server", "10.77.0.1"),))] == 1
        assert any(name == "lispmesh_node_info" and dict(labels)["node"] == "n1"
                   for name, labels in got)  # fmt: skip


def scrape(
    lab: OverlayLab, node: str, url: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    result = lab.exec(node, [sys.executable, "-c", f"import urllib.request as u; "
                             f"print(u.urlopen({url!r}, timeout=5).read().decode())"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    return samples(result.stdout)
