"""A renewed node's old certificate and key, used after the renewal, are refused by its peers
(issue 12: peers kept accepting the old certificate until it expired, a year later).

The attack, against real xTRs in memory: n1 renews (a new key, a new certificate); its old key and
certificate are still on an old disk, and whoever holds them runs an xTR as "n1" from another
address. First shown to work while the peers know nothing of the renewal; then the controller's
desired state lists the old certificate's fingerprint, and the peer refuses the attacker's key
exchange (`kx-retired-certificate`), drops the keys agreed under it, and keeps talking to the
renewed n1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs.files import read_certificate
from certs.format import certificate_claims
from controller_api.ca import CertificateAuthority
from mesh.identity import NodeIdentity
from mesh.kx import KxAuthority
from mesh.xtr import Xtr
from tests.unit import test_xtr_memory as memory
from tests.unit.test_xtr_memory import MakeNode, Node, Wire, ipv4_packet, node_config

mesh = memory.mesh
pki = memory.pki
ATTACKER_RLOC = "10.77.0.99"


def _renewed(pki: dict[str, Path], name: str) -> KxAuthority:
    """What a renewal gives the node: a new key and a new certificate from the same CA."""
    ca = CertificateAuthority.load(pki[name].parent / "ca")
    old = read_certificate(pki[name] / "node.crt")
    key = ec.generate_private_key(ec.SECP256R1())
    eids = list(certificate_claims(old).eids)
    identity = NodeIdentity(name, key, ca.issue(name, key.public_key(), eids))
    return KxAuthority(identity, ca.certificate, time.time)


def _fingerprint(path: Path) -> str:
    der = read_certificate(path).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def _send(wire: Wire, node: Node, payload: bytes) -> bytes:
    packet = ipv4_packet("10.1.1.1", "10.1.2.1", payload)
    node.xtr.now = wire.now
    node.xtr.inside_packet(packet)
    wire.pump()
    return packet


def test_an_old_certificate_and_key_used_after_renewal_are_refused(
    pki: dict[str, Path], mesh: tuple[Wire, MakeNode]
) -> None:
    wire, make = mesh
    n1, n2 = make(1), make(2)
    wire.tick()
    old_cert = _fingerprint(pki["n1"] / "node.crt")
    # n1 renews: from now on it signs with its new key and certificate.
    n1.xtr.ctx.kx = _renewed(pki, "n1")
    # The attacker: n1's old key and certificate (the lab files), an xTR of its own elsewhere.
    attacker = Node("n1-old", wire)
    config = node_config(pki, 1, rloc_of=lambda _i, _u: ATTACKER_RLOC)
    attacker.xtr = Xtr(config, attacker, memory.authority(pki, "n1"), wire.now)
    wire.add(attacker)
    wire.tick()

    # Before the peers hear of the renewal, the old certificate is as good as the new one.
    forged = _send(wire, attacker, b"from the old key")
    assert n2.inside == [forged]
    assert n2.xtr.ctx.keys.decap[(ATTACKER_RLOC, 1)].certificate == old_cert

    # The controller's desired state now lists the replaced certificate.
    security = dataclasses.replace(n2.xtr.config.security, retired_certificates={old_cert})
    n2.xtr.reconfigure(dataclasses.replace(n2.xtr.config, security=security), n2.xtr.kx)
    assert (ATTACKER_RLOC, 1) not in n2.xtr.ctx.keys.decap  # the keys agreed under it are gone
    n2.inside.clear()
    _send(wire, attacker, b"again")  # the old key is refused: a fresh exchange fails
    wire.run(1.0)
    assert n2.inside == []
    assert n2.xtr.ctx.drops["kx-retired-certificate"] >= 1
    assert "offered a certificate it renewed" in n2.xtr.ctx.errors[-1]
    assert all(s.certificate != old_cert for s in n2.xtr.ctx.keys.decap.values())

    # The renewed n1 is not affected: its exchanges carry the new certificate.
    genuine = _send(wire, n1, b"from the renewed node")
    assert n2.inside == [genuine]
