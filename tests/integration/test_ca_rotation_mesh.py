"""A CA rotation under a live mesh (issue 12 item 4): the controller and three nodes of
examples/demo.clab.yml, keys renegotiated every 3 s so every pair runs key exchanges under the
new certificates while it happens; `ca rotate` -> every node renews onto the new CA ->
`ca rotate --finish`, with a ping across the mesh all along that never stops answering."""

from __future__ import annotations

import re
import secrets
import threading
from functools import partial
from pathlib import Path

import pytest
from cryptography import x509

from common.ca_trust import ca_fingerprint
from lispmesh.mesh_lab import MeshLab, wait_for

pytestmark = pytest.mark.root


def _bundle(lab: MeshLab, node: str) -> list[str]:
    path = lab.state / node / "ca.crt"
    return [ca_fingerprint(c) for c in x509.load_pem_x509_certificates(path.read_bytes())]


def _connected(lab: MeshLab, node: str) -> bool:
    agent = (lab.status(node) or {}).get("agent") or {}
    return agent.get("controller_state") == "connected"


class Pinger(threading.Thread):
    """One ping every 0.2 s from `a` to `b`'s EID until stopped: how many went unanswered."""

    def __init__(self, lab: MeshLab, a: str, b: str) -> None:
        super().__init__(daemon=True)
        self.lab, self.a, self.target = lab, a, lab.eid(b)
        self.stop = threading.Event()
        self.sent = self.received = 0

    def run(self) -> None:
        while not self.stop.is_set():  # bounded by the test's own waits, then stop
            result = self.lab.lab.exec(
                self.a, ["ping", "-c", "25", "-i", "0.2", "-W", "1", self.target], timeout=30
            )
            counts = re.search(r"(\d+) packets transmitted, (\d+) received", result.stdout)
            if counts:
                self.sent += int(counts[1])
                self.received += int(counts[2])


def test_rotation_never_drops_the_mesh(tmp_path: Path) -> None:
    lab = MeshLab(
        tmp_path / "ctl", f"ca{secrets.token_hex(3)}", token_uses=3,
        controller_flags="--rekey-after 3", node_flags="--backoff-cap 2",
    )  # fmt: skip
    lab.deploy()
    try:
        for node in lab.nodes:
            wait_for(partial(lab.enrollment, node), 30, f"{node} to join")
        try:
            wait_for(lab.all_pairs_reach, 30, "the full mesh", 0.05)
        except TimeoutError:
            pytest.fail(f"no full mesh\n{lab.dump()}")
        for node in lab.nodes:
            wait_for(partial(_connected, lab, node), 30, f"{node}'s agent connected")
        (old,) = {fp for node in lab.nodes for fp in _bundle(lab, node)}
        pinger = Pinger(lab, lab.nodes[0], lab.nodes[1])
        pinger.start()
        try:
            started = lab.admin("ca", "rotate")
            new = next(c["fingerprint"] for c in started["cas"] if c["fingerprint"] != old)
            # Every node takes the bundle, then the new CA issues and every node renews.
            wait_for(lambda: lab.admin("ca", "status")["phase"] == "switching", 30, "the switch")
            for node in lab.nodes:
                wait_for(lambda n=node: set(_bundle(lab, n)) == {old, new}, 30, f"{node}'s bundle")
            wait_for(
                lambda: lab.admin("ca", "status").get("nodes_on_old_ca", 0) == 0, 60,
                "every node renewed onto the new CA",
            )  # fmt: skip
            wait_for(lab.all_pairs_reach, 30, "the mesh on new-CA certificates", 0.1)
            finished = lab.admin("ca", "rotate", "--finish")
            assert [c["fingerprint"] for c in finished["cas"]] == [new]
            for node in lab.nodes:
                wait_for(lambda n=node: _bundle(lab, n) == [new], 30, f"{node} drops the old CA")
            # Keys agreed from now on are between new-CA certificates only, on every pair.
            seen = pinger.sent
            wait_for(lambda: pinger.sent >= seen + 25, 30, "pings after the finish")
            wait_for(lab.all_pairs_reach, 30, "the mesh after the finish", 0.1)
        finally:
            pinger.stop.set()
            pinger.join(40)
        print(f"\nping during the rotation: {pinger.received}/{pinger.sent} answered")
        assert pinger.sent >= 50
        # Never dropped: a refused key exchange would lose every ping until the next one.
        assert pinger.sent - pinger.received <= 2, lab.dump()
        for node in lab.nodes:
            assert _connected(lab, node), f"{node} lost the controller\n{lab.dump()}"
    finally:
        lab.destroy()
