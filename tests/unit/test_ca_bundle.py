"""Trust as a bundle of CAs (certs.verify.CaBundleVerifier, certs.files.read_ca_bundle) and the
rotation material (controller_api.ca_rotation): a new CA cross-signed by the old one."""

from __future__ import annotations

import datetime as dt
from ipaddress import ip_network
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.files import read_ca_bundle
from certs.format import IdentityError
from certs.verify import CaBundleVerifier
from common import ca_trust
from common.ca_trust import TrustError
from controller_api import ca_rotation
from controller_api.ca import CertificateAuthority
from controller_api.gen.lispmesh.v1 import config_pb2
from mesh.identity import NodeIdentity
from node import trust
from node.state import StateDir

NOW = dt.datetime.now(dt.UTC)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def node_cert(
    tmp_path: Path, ca: ca_rotation.CaEntry | CertificateAuthority, name: str
) -> x509.Certificate:
    if isinstance(ca, ca_rotation.CaEntry):
        ca = CertificateAuthority(ca.certificate, ca.key)
    identity = NodeIdentity.load_or_create(tmp_path / name, name)
    # Issued at NOW, the time the tests verify at: the suite may reach this test minutes after
    # NOW was taken, later than the certificate's clock-skew back-dating covers.
    return ca.issue(name, identity.public_key, [(0, ip_network("10.9.0.0/24"))], now=NOW)


@pytest.fixture
def rotation(tmp_path: Path) -> tuple[ca_rotation.CaEntry, ca_rotation.CaEntry]:
    old = CertificateAuthority.create(tmp_path / "ca", "lispmesh controller CA")
    old_entry = ca_rotation.parse(ca_rotation.CaMaterial(
        (tmp_path / "ca" / "ca.crt").read_bytes(), (tmp_path / "ca" / "ca.key").read_bytes()
    ))  # fmt: skip
    assert old_entry.certificate == old.certificate
    return old_entry, ca_rotation.new_ca(old_entry, NOW)


def test_old_and_new_accepted_during_switch_old_refused_after(tmp_path: Path, rotation) -> None:
    old, new = rotation
    from_old = node_cert(tmp_path, old, "a")
    from_new = node_cert(tmp_path, new, "b")
    during = CaBundleVerifier([old.certificate, new.certificate])
    assert during.verify(der(from_old), NOW).claims.name == "a"
    assert during.verify(der(from_new), NOW).claims.name == "b"
    # seen before (cached): still the same answer, in either order of the bundle
    reversed_bundle = CaBundleVerifier([new.certificate, old.certificate])
    assert reversed_bundle.verify(der(from_old), NOW).claims.name == "a"
    after = CaBundleVerifier([new.certificate])
    assert after.verify(der(from_new), NOW).claims.name == "b"
    with pytest.raises(IdentityError, match="not issued by the mesh CA"):
        after.verify(der(from_old), NOW)


def test_unrelated_ca_refused_even_with_the_same_name(tmp_path: Path, rotation) -> None:
    old, new = rotation
    rogue = CertificateAuthority.create(tmp_path / "rogue", "lispmesh controller CA 2")
    forged = node_cert(tmp_path, rogue, "c")
    with pytest.raises(IdentityError, match="not issued by the mesh CA"):
        CaBundleVerifier([old.certificate, new.certificate]).verify(der(forged), NOW)


def test_expired_certificate_keeps_its_reason_in_a_bundle(tmp_path: Path, rotation) -> None:
    old, new = rotation
    cert = node_cert(tmp_path, old, "a")
    later = NOW + dt.timedelta(days=400)
    with pytest.raises(IdentityError, match="expired"):
        CaBundleVerifier([old.certificate, new.certificate]).verify(der(cert), later)


def test_bundle_file_round_trip_and_one_line_errors(tmp_path: Path, rotation) -> None:
    old, new = rotation
    path = tmp_path / "ca.crt"
    path.write_bytes(pem(old.certificate, new.certificate))
    assert read_ca_bundle(path) == [old.certificate, new.certificate]
    cases = {
        b"": "is not PEM X.509 certificates",
        b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n": "is not PEM",
        pem(node_cert(tmp_path, old, "x")): "is not a CA certificate",
    }
    for data, reason in cases.items():
        path.write_bytes(data)
        with pytest.raises(IdentityError) as info:
            read_ca_bundle(path)
        assert reason in info.value.reason and str(path) in info.value.reason
        assert "\n" not in info.value.reason
    with pytest.raises(IdentityError, match=f"CA bundle {tmp_path / 'missing'} cannot be read"):
        read_ca_bundle(tmp_path / "missing")
    with pytest.raises(IdentityError, match="empty"):
        CaBundleVerifier([])


def test_cross_certificate_extends_trust_only_from_a_trusted_ca(tmp_path: Path, rotation) -> None:
    old, new = rotation
    assert new.cross is not None
    assert ca_trust.cross_signed_by(new.cross, new.certificate, old.certificate)
    assert not ca_trust.cross_signed_by(new.cross, old.certificate, old.certificate)
    offered = [old.certificate, new.certificate]
    assert ca_trust.extend_trust([old.certificate], offered, [new.cross]) == offered
    # after the finish: the node that trusts both keeps only what is offered
    after = ca_trust.extend_trust(offered, [new.certificate], [])
    assert after == [new.certificate]
    # the attack: a CA slipped into the bundle, without (or with a self-made) cross-certificate
    rogue_entry = ca_rotation.new_ca(new, NOW)
    rogue = ca_rotation.new_ca(rogue_entry, NOW)  # vouched for by the rogue only
    with pytest.raises(TrustError, match="not cross-signed by a CA this node trusts"):
        ca_trust.extend_trust([old.certificate], [*offered, rogue.certificate], [new.cross])
    assert rogue.cross is not None
    with pytest.raises(TrustError, match="not cross-signed"):
        ca_trust.extend_trust([old.certificate], [rogue.certificate], [rogue.cross])


def test_material_round_trip(rotation) -> None:
    _, new = rotation
    again = ca_rotation.parse(ca_rotation.material(new))
    assert again.certificate == new.certificate and again.cross == new.cross
    assert again.key.private_numbers() == new.key.private_numbers()


def test_a_node_refuses_a_desired_state_naming_an_unvouched_ca(tmp_path: Path, rotation) -> None:
    """The attack: a desired state (a compromised or confused stream) adds a CA that no CA the
    node trusts cross-signed. The node keeps its bundle, so certificates from that CA stay
    refused by its key exchange; a proper rotation's bundle is taken."""
    old, new = rotation
    state = StateDir(tmp_path / "node")
    state.path.mkdir()
    state.ca.write_bytes(pem(old.certificate))
    rogue = ca_rotation.new_ca(ca_rotation.new_ca(old, NOW), NOW)  # vouched for by a stranger
    assert rogue.cross is not None
    forged = config_pb2.DesiredState(
        ca_bundle_pem=pem(old.certificate, rogue.certificate), ca_cross_pem=pem(rogue.cross)
    )
    with pytest.raises(TrustError, match="not cross-signed by a CA this node trusts"):
        trust.update_bundle(state, forged)
    assert read_ca_bundle(state.ca) == [old.certificate]
    assert new.cross is not None
    proper = config_pb2.DesiredState(
        ca_bundle_pem=pem(old.certificate, new.certificate), ca_cross_pem=pem(new.cross)
    )
    assert trust.update_bundle(state, proper)
    assert read_ca_bundle(state.ca) == [old.certificate, new.certificate]
    assert not trust.update_bundle(state, proper)  # nothing new: no rewrite, no reload
    # the finish: dropping a CA needs no proof
    assert trust.update_bundle(state, config_pb2.DesiredState(ca_bundle_pem=pem(new.certificate)))
    assert read_ca_bundle(state.ca) == [new.certificate]
