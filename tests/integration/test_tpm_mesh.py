"""A controller and three TPM-backed nodes in namespaces (tests/integration/tpm_mesh.clab.yml),
each node with its own swtpm: the mesh forms with TPM-resident identities, and a node whose
measurements change is quarantined end to end and recovers once the operator allows the change.

The quarantine: PCR 9 (quoted, pinned by a golden value, outside the boot event log) is extended
on one node's swtpm while it runs. Its periodic attestation (every second here) fails, the other
nodes refuse its keys, and a restart of its agent cannot open its sealed checkpoint (one line
naming PCR 9) but does not crash-loop. `controller attestation policy set` with the new value
releases it: it attests, rejoins the mesh, and its checkpoint is sealed to the new PCRs.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from lispmesh.mesh_lab import REPO_ROOT, MeshLab, wait_for
from tests.swtpm import ManufacturerCA

pytestmark = pytest.mark.root

TOPOLOGY = Path(__file__).with_name("tpm_mesh.clab.yml")
APP_PCR = 9
ZERO = bytes(32)
UPDATE = hashlib.sha256(b"agent update 2.1").digest()
AFTER_UPDATE = hashlib.sha256(ZERO + UPDATE).digest()


def _policy(*golden: bytes) -> str:
    return json.dumps(
        {
            "pcrs": [*range(8), APP_PCR],
            "log_pcrs": list(range(8)),
            "golden": {str(APP_PCR): [g.hex() for g in golden]},
        }
    )


def _stop_swtpm(pid_file: Path) -> None:
    """Stop one lab swtpm by the pid it wrote (only if that pid is still a swtpm)."""
    try:
        pid = int(pid_file.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return
    if comm != "swtpm":
        return
    os.kill(pid, signal.SIGTERM)
    try:
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, f"swtpm {pid} to stop", 0.05)
    except TimeoutError:
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[MeshLab]:
    ca = ManufacturerCA.create(tmp_path / "tpm-ca")
    built = MeshLab(
        tmp_path / "lab",
        f"tp{secrets.token_hex(3)}",
        topology=TOPOLOGY,
        token_uses=3,
        controller_flags="--rekey-after 3 --attestation-interval 1",
        node_flags="--backoff-cap 2",
        extra_env={"PYTHON": sys.executable},
    )
    for node in built.nodes:  # three distinct TPMs: one EK binds to one node
        ca.manufacture(built.state / "tpm" / node)
    (built.state / "tpm-ca.pem").write_bytes(ca.pem())
    (built.state / "policy.json").write_text(_policy(ZERO))
    try:
        built.deploy()
        yield built
    finally:
        built.destroy()
        for node in built.nodes:
            _stop_swtpm(built.state / "tpm" / node / "swtpm.pid")


def _nodes(lab: MeshLab) -> dict[str, dict[str, Any]]:
    try:
        reply = lab.admin("node", "list")
    except RuntimeError:
        return {}
    return {n["name"]: n for n in reply.get("nodes", [])}


def _state(lab: MeshLab, node: str) -> str:
    return str(_nodes(lab).get(lab.enrollment(node).name, {}).get("state", ""))


def _extend(lab: MeshLab, node: str, pcr: int, digest: bytes) -> None:
    """What a changed component measures: PCR[pcr] extended on the node's own swtpm."""
    code = (
        "from node.tpm import Tpm\n"
        "with Tpm.open('swtpm:port=2321') as tpm:\n"
        f"    tpm.pcr_extend({pcr}, bytes.fromhex('{digest.hex()}'))\n"
    )
    result = lab.lab.exec(
        node, [sys.executable, "-c", code], env={"PYTHONPATH": str(REPO_ROOT)}, timeout=30
    )
    assert result.returncode == 0, result.stderr


def _agent(lab: MeshLab, node: str) -> dict[str, Any]:
    return dict((lab.status(node) or {}).get("agent") or {})


def test_tpm_nodes_mesh_and_a_changed_node_is_quarantined_until_the_policy_allows_it(
    lab: MeshLab, tmp_path: Path
) -> None:
    a, b, victim = lab.nodes
    for node in lab.nodes:
        wait_for(partial(lab.enrollment, node), 45, f"{node} to join with its TPM")
    try:
        wait_for(lab.all_pairs_reach, 45, "every pair to reach every other", 0.05)
    except TimeoutError:
        pytest.fail(f"no full mesh\n{lab.dump()}")
    nodes = _nodes(lab)
    assert len(nodes) == 3
    for record in nodes.values():
        assert (record["identity"], record["attestation"]) == ("tpm", "ok"), record
        assert "model swtpm" in record["ek_certificate_subject"]
    for node in lab.nodes:
        agent = _agent(lab, node)
        assert agent["identity"] == "tpm" and agent["identity_where"] == "swtpm:port=2321"
        assert agent["attestation"].startswith("ok at") and "swtpm" in agent["ek_subject"]
        # The checkpoint (it holds the site key) exists only sealed.
        state = lab.state / node
        assert (state / "checkpoint.sealed").exists() and not (state / "checkpoint.json").exists()
        assert not (state / "node.key").exists()  # the key is in the TPM

    # The victim's measurements change while it runs: its next periodic round quarantines it,
    # and the others stop accepting its keys.
    changed = time.monotonic()
    _extend(lab, victim, APP_PCR, UPDATE)
    try:
        wait_for(lambda: _state(lab, victim) == "quarantined", 20, f"{victim} quarantined")
    except TimeoutError:
        pytest.fail(f"not quarantined\n{lab.dump()}")
    reason = _nodes(lab)[lab.enrollment(victim).name]["attestation"]
    assert f"PCR 9 is {AFTER_UPDATE.hex()}, not a golden value" in reason
    wait_for(
        lambda: not lab.ping(a, lab.eid(victim)) and not lab.ping(b, lab.eid(victim)),
        20,
        f"{a} and {b} to refuse {victim}",
        0.1,
    )
    print(f"\n{victim} cut off {time.monotonic() - changed:.1f} s after its PCR changed")
    assert lab.ping(a, lab.eid(b))  # the healthy pair is untouched

    # Restarted, it cannot open its checkpoint (sealed to the old PCR 9), says so once, and
    # keeps running (quarantined) instead of crash-looping.
    lab.stop_process(victim)
    wait_for(lambda: not lab.process_alive(victim), 5, f"{victim} to die")
    lab.start_process(victim)
    wait_for(
        lambda: "checkpoint not opened" in lab.log(victim), 20, f"{victim}'s checkpoint refusal"
    )
    refusal = [line for line in lab.log(victim).splitlines() if "checkpoint not opened" in line]
    assert len(refusal) == 1 and "PCR 9 changed since it was sealed" in refusal[0], refusal
    wait_for(
        lambda: _agent(lab, victim).get("controller_state") == "quarantined",
        20,
        f"{victim} running, quarantined",
    )
    assert lab.process_alive(victim)

    # The operator allows the new measurement: the victim attests, rejoins, and re-seals.
    policy = lab.workdir / "policy-2.json"
    policy.write_text(_policy(ZERO, AFTER_UPDATE))
    reply = lab.admin("attestation", "policy", "set", str(policy))
    assert reply["source"] == "set" and AFTER_UPDATE.hex() in reply["policy"]["golden"]["9"]
    allowed = time.monotonic()
    try:
        wait_for(lambda: _state(lab, victim) == "online", 30, f"{victim} out of quarantine")
        for other in (a, b):
            wait_for(
                lambda o=other: lab.ping(o, lab.eid(victim)) and lab.ping(victim, lab.eid(o)),
                30,
                f"{other} <-> {victim} again",
                0.1,
            )
    except TimeoutError:
        pytest.fail(f"no recovery\n{lab.dump()}")
    print(f"{victim} back in the mesh {time.monotonic() - allowed:.1f} s after the policy")
    wait_for(
        lambda: "checkpoint sealed to PCRs 0,1,2,3,4,5,6,7,9" in lab.log(victim),
        10,
        f"{victim}'s checkpoint sealed to the new PCRs",
    )
    assert (lab.state / victim / "checkpoint.sealed").exists()
