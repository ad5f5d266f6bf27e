"""Enrollment: good, expired, used-up and revoked tokens; idempotent retries; onboarding
certificates; desired-state versioning."""

from __future__ import annotations

import datetime as dt
import time
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certs.format import certificate_claims
from controller_api import desired
from controller_api.enrollment import Enroller, EnrollmentError
from controller_api.gen.lispmesh.v1 import enrollment_pb2
from controller_api.pki import ControllerPki, fingerprint, make_csr
from controller_api.settings import ControllerSettings, Pools
from controller_api.store import SqliteStore as Store
from controller_api.tokens import JoinToken, ca_pin, new_token, parse_token

POOLS = Pools(IPv4Network("10.250.0.0/16"), 24, IPv6Network("fd00:1::/48"), 64)


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def env(tmp_path: Path) -> tuple[Enroller, Store, Clock, ControllerPki]:
    store = Store(tmp_path / "c.db")
    pki = ControllerPki.load_or_create(tmp_path, ["127.0.0.1"])
    clock = Clock()
    enroller = Enroller(store, pki, ControllerSettings(state_dir=tmp_path), POOLS, [], clock)
    return enroller, store, clock, pki


def _token(store: Store, clock: Clock, uses: int = 1, ttl: float = 3600) -> JoinToken:
    token = new_token("0" * 64)
    store.add_token(token.token_id, token.secret_hash, clock.now, clock.now + ttl, uses,
                    ("edge",), "")  # fmt: skip
    return token


def _request(
    token: JoinToken, key: ec.EllipticCurvePrivateKey | None = None
) -> enrollment_pb2.EnrollRequest:
    key = key or ec.generate_private_key(ec.SECP256R1())
    return enrollment_pb2.EnrollRequest(
        join_token=str(token), csr_der=make_csr(key, "x"), requested_name="edge"
    )


def test_token_enrolls_a_node_with_its_eids_in_the_certificate(env) -> None:  # type: ignore[no-untyped-def]
    enroller, store, clock, pki = env
    reply = enroller.enroll(_request(_token(store, clock)))
    assert reply.node_name == "edge" and list(reply.tags) == ["edge"]
    assert [p.prefix for p in reply.eid_prefixes] == ["10.250.0.0/24", "fd00:1::/64"]
    cert = x509.load_pem_x509_certificate(reply.certificate_pem)
    cert.verify_directly_issued_by(pki.ca.certificate)
    claims = certificate_claims(cert)
    assert claims.name == "edge" and {str(p) for _, p in claims.eids} == {
        "10.250.0.0/24", "fd00:1::/64"}  # fmt: skip


def test_expired_token_is_refused_with_its_expiry_and_no_secret(env) -> None:  # type: ignore[no-untyped-def]
    enroller, store, clock, _ = env
    token = _token(store, clock, ttl=60)
    clock.now += 61
    with pytest.raises(EnrollmentError) as err:
        enroller.enroll(_request(token))
    assert err.value.code == "denied"
    expiry = dt.datetime.fromtimestamp(clock.now - 1, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert str(err.value) == f"token lmj1.{token.token_id}… expired at {expiry}"
    assert token.secret not in str(err.value)


def test_used_up_and_revoked_and_wrong_secret(env) -> None:  # type: ignore[no-untyped-def]
    enroller, store, clock, _ = env
    token = _token(store, clock)
    enroller.enroll(_request(token))
    with pytest.raises(EnrollmentError, match=r"is used up \(1 of 1 uses\)"):
        enroller.enroll(_request(token))
    other = _token(store, clock, uses=5)
    store.revoke_token(other.token_id, clock.now)
    with pytest.raises(EnrollmentError, match="was revoked at"):
        enroller.enroll(_request(other))
    forged = JoinToken(other.token_id, "A" * 22)
    with pytest.raises(EnrollmentError, match="is not valid here") as err:
        enroller.enroll(_request(forged))
    assert err.value.code == "unauthenticated"
    assert len(store.list_nodes()) == 1


def test_a_lost_answer_can_be_fetched_again_with_the_same_key(env) -> None:  # type: ignore[no-untyped-def]
    enroller, store, clock, _ = env
    token = _token(store, clock)
    key = ec.generate_private_key(ec.SECP256R1())
    first = enroller.enroll(_request(token, key))
    again = enroller.enroll(_request(token, key))
    assert again.node_id == first.node_id and again.certificate_pem == first.certificate_pem
    assert store.get_token(token.token_id).uses == 1  # type: ignore[union-attr]


def test_bad_csr_is_refused(env) -> None:  # type: ignore[no-untyped-def]
    enroller, store, clock, _ = env
    request = _request(_token(store, clock))
    request.csr_der = request.csr_der[:-8] + b"\x00" * 8
    with pytest.raises(EnrollmentError) as err:
        enroller.enroll(request)
    assert err.value.code == "invalid"


def _device_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "factory CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=9))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert, key


def _device(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, serial: str):  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial)]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(7)
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=9))
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    return cert, key


def _onboarding_request(cert, device_key, node_key=None):  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives import serialization

    node_key = node_key or ec.generate_private_key(ec.SECP256R1())
    csr = make_csr(node_key, "x")
    request = enrollment_pb2.EnrollRequest(csr_der=csr)
    request.onboarding.certificate_der = cert.public_bytes(serialization.Encoding.DER)
    request.onboarding.csr_signature = device_key.sign(csr, ec.ECDSA(hashes.SHA256()))
    return request


def test_onboarding_certificate_enrolls_without_a_token(env) -> None:  # type: ignore[no-untyped-def]
    enroller, store, clock, _ = env
    ca, ca_key = _device_ca()
    enroller.onboarding_cas = [ca]
    cert, key = _device(ca, ca_key, "SN-0042")
    first = enroller.enroll(_onboarding_request(cert, key))
    assert first.node_name == "SN-0042" and list(first.tags) == ["onboarded"]
    # The device wiped and enrolled again: same node and EIDs, a certificate for its new key.
    again = enroller.enroll(_onboarding_request(cert, key))
    assert again.node_id == first.node_id and again.eid_prefixes == first.eid_prefixes
    assert again.certificate_pem != first.certificate_pem
    # The old certificate (its key may survive elsewhere) is refused by every peer at once.
    old = x509.load_pem_x509_certificate(first.certificate_pem)
    assert enroller.retired.refused(clock.now) == [fingerprint(old)]
    # Signature by another key than the certificate's: refused.
    _, stranger = _device(ca, ca_key, "SN-0043")
    with pytest.raises(EnrollmentError, match="does not verify"):
        enroller.enroll(_onboarding_request(cert, stranger))
    # A certificate from another CA: refused.
    rogue_ca, rogue_key = _device_ca()
    rogue, rogue_device = _device(rogue_ca, rogue_key, "SN-0044")
    with pytest.raises(EnrollmentError, match="not from a trusted onboarding CA"):
        enroller.enroll(_onboarding_request(rogue, rogue_device))
    # Revoked: the onboarding certificate cannot bring the node back.
    store.revoke_node(first.node_id, clock.now)
    with pytest.raises(EnrollmentError, match="was revoked"):
        enroller.enroll(_onboarding_request(cert, key))


def test_no_onboarding_ca_no_onboarding(env) -> None:  # type: ignore[no-untyped-def]
    enroller, *_ = env
    ca, ca_key = _device_ca()
    cert, key = _device(ca, ca_key, "SN-1")
    with pytest.raises(EnrollmentError, match="accepts no onboarding"):
        enroller.enroll(_onboarding_request(cert, key))


def test_desired_state_version_moves_only_when_the_document_changes(env) -> None:  # type: ignore[no-untyped-def]
    enroller, store, clock, _ = env
    reply = enroller.enroll(_request(_token(store, clock)))
    settings = ControllerSettings()

    def current():  # type: ignore[no-untyped-def]
        node = store.get_node(reply.node_id)
        return desired.versioned(store, desired.build(node, settings, POOLS, "10.0.0.1"))

    first = current()
    assert first.version == 1 and current().version == 1
    assert list(first.eid_addresses) == ["10.250.0.1", "fd00:1::1"]
    assert list(first.overlay_routes) == ["10.250.0.0/16", "fd00:1::/48"]
    assert first.map_servers[0].site_key and first.map_servers[0].address == "10.0.0.1"
    moved = desired.versioned(store, desired.build(store.get_node(reply.node_id), settings,
                                                   POOLS, "10.0.0.2"))  # fmt: skip
    assert moved.version == 2
    node = store.get_node(reply.node_id)
    assert node is not None
    revocations = desired.build(node, settings, POOLS, "10.0.0.2", None, ["b", "a", "b"])
    listing = desired.versioned(store, revocations)
    assert listing.version == 3 and list(listing.revoked_nodes) == ["a", "b"]
    store.revoke_node(reply.node_id, clock.now)
    revoked = current()
    assert revoked.version == 4 and revoked.revoked and not revoked.map_servers


def test_token_text_format() -> None:
    token = new_token("ab" * 32)
    parsed = parse_token(str(token))
    assert parsed == token and str(token).startswith("lmj1.") and str(token).count(".") == 3
    assert token.secret not in repr(token)
    with pytest.raises(ValueError, match="not a join token"):
        parse_token("hello")
    with pytest.raises(ValueError, match="CA pin"):
        parse_token(f"lmj1.{token.token_id}.{token.secret}.xyz")


def test_ca_pin_is_sha256_of_der(env) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    from cryptography.hazmat.primitives import serialization

    *_, pki = env
    der = pki.ca.certificate.public_bytes(serialization.Encoding.DER)
    assert ca_pin(pki.ca.certificate) == hashlib.sha256(der).hexdigest()
    assert time.time() > 0
