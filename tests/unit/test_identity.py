"""The identity code (certs/, controller_api.ca, mesh.identity: CA, node certificates, the signed
key exchange) and lisp.kx_lcaf."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import stat
from ipaddress import IPv4Address, ip_address, ip_network
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given, settings
from hypothesis import strategies as st

from certs import files as cert_files
from certs import format as cert_format
from certs import verify as cert_verify
from certs.format import IdentityError, certificate_claims
from controller_api.ca import CertificateAuthority
from lisp.address import NO_ADDRESS
from lisp.crypto import CS_AES128_GCM, CryptoError, EcdhKeyPair, derive_data_key
from lisp.kx_lcaf import (
    build_reply_rloc_address,
    build_request_itr_rloc,
    extract_security,
    find_itr_security,
    public_key_of,
)
from lisp.lcaf import AfiList, JsonLcaf, SecurityKey
from lisp.map_reply import MapReply
from lisp.map_request import MapRequest, RequestRecord
from lisp.messages import decode_control
from lisp.records import EidRecord, RlocRecord
from mesh.identity import KxTranscript, NodeIdentity, make_proof, parse_proof, verify_proof
from tests.lab_identities import provision_lab_identities

EIDS_A = [(0, ip_network("10.1.0.0/24")), (7, ip_network("fd00:1::/64"))]
EIDS_B = [(0, ip_network("10.2.0.0/24"))]


def wall_now() -> dt.datetime:
    """The moment a verifier is told (verify_proof reads no clock itself)."""
    return dt.datetime.now(dt.UTC)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path / "ca", "test mesh CA")


def node(tmp_path: Path, ca: CertificateAuthority, name: str, eids, **kw) -> NodeIdentity:
    identity = NodeIdentity.load_or_create(tmp_path / name, name)
    identity.install_certificate(ca.issue(name, identity.public_key, eids, **kw))
    return identity


def transcript(**changes) -> KxTranscript:
    base = KxTranscript(
        role="reply",
        nonce=0x1122334455667788,
        cipher_suite=CS_AES128_GCM,
        key_id=2,
        ecdh_public=bytes(range(32)),
        eids=((0, ip_network("10.2.0.0/24")),),
        rlocs=(ip_address("192.0.2.2"),),
    )
    return dataclasses.replace(base, **changes)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- files and certificates -------------------------------------------------------------------


def test_key_files_are_0600_and_certs_0644(tmp_path: Path, ca: CertificateAuthority) -> None:
    old = os.umask(0)  # even a permissive umask must not widen the key files
    try:
        node(tmp_path, ca, "b", EIDS_B)
    finally:
        os.umask(old)
    assert mode(tmp_path / "ca" / "ca.key") == 0o600
    assert mode(tmp_path / "ca" / "ca.crt") == 0o644
    assert mode(tmp_path / "b" / "node.key") == 0o600
    assert mode(tmp_path / "b" / "node.crt") == 0o644
    assert b"PRIVATE KEY" in (tmp_path / "b" / "node.key").read_bytes()
    assert not list(tmp_path.rglob("*.tmp"))


def test_load_round_trip_and_refusals(tmp_path: Path, ca: CertificateAuthority) -> None:
    b = node(tmp_path, ca, "b", EIDS_B)
    again = NodeIdentity.load_or_create(tmp_path / "b", "b")
    assert again.public_key == b.public_key and again.certificate == b.certificate
    loaded = CertificateAuthority.load(tmp_path / "ca")
    assert loaded.certificate == ca.certificate
    with pytest.raises(IdentityError, match="refusing to overwrite"):
        CertificateAuthority.create(tmp_path / "ca", "again")
    os.chmod(tmp_path / "b" / "node.key", 0o644)
    with pytest.raises(IdentityError, match="readable by group or others"):
        NodeIdentity.load_or_create(tmp_path / "b", "b")
    other = NodeIdentity.load_or_create(tmp_path / "c", "c")
    with pytest.raises(IdentityError, match="not for this node's key"):
        other.install_certificate(b.certificate)  # type: ignore[arg-type]
    with pytest.raises(IdentityError, match="invalid node name"):
        NodeIdentity.load_or_create(tmp_path / "x", "../etc")


def test_actionable_file_errors(tmp_path: Path, ca: CertificateAuthority) -> None:
    with pytest.raises(IdentityError, match="cannot be read"):
        cert_files.read_private_key(tmp_path / "missing.key")
    with pytest.raises(IdentityError, match="cannot be read"):
        cert_files.read_certificate(tmp_path / "missing.crt")
    (tmp_path / "junk.crt").write_text("not a certificate")
    with pytest.raises(IdentityError, match=r"not a PEM X\.509 certificate"):
        cert_files.read_certificate(tmp_path / "junk.crt")
    node(tmp_path, ca, "b", EIDS_B)
    (tmp_path / "b" / "node.key").unlink()
    NodeIdentity.load_or_create(tmp_path / "c", "c")
    os.replace(tmp_path / "c" / "node.key", tmp_path / "b" / "node.key")
    with pytest.raises(IdentityError, match="is not the certificate of"):
        NodeIdentity.load_or_create(tmp_path / "b", "b")


def test_transcript_out_of_range_is_identity_error() -> None:
    with pytest.raises(IdentityError, match="cannot be encoded"):
        transcript(nonce=2**64).encode()
    with pytest.raises(IdentityError, match="cannot be encoded"):
        transcript(eids=((-1, ip_network("10.0.0.0/8")),)).encode()
    with pytest.raises(IdentityError, match="role"):
        transcript(role="other").encode()


def test_node_certificate_contents(tmp_path: Path, ca: CertificateAuthority) -> None:
    a = node(tmp_path, ca, "node-a", EIDS_A, rlocs=[ip_network("192.0.2.0/24")])
    cert = a.certificate
    assert cert is not None
    cert.verify_directly_issued_by(ca.certificate)
    claims = certificate_claims(cert)
    assert claims.name == "node-a"
    assert sorted(claims.eids) == sorted(EIDS_A)
    assert claims.rlocs == (ip_network("192.0.2.0/24"),)
    ext = cert.extensions
    assert not ext.get_extension_for_oid(cert_format.EID_EXTENSION_OID).critical
    assert ext.get_extension_for_class(x509.KeyUsage).value.digital_signature
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["lispmesh://node/node-a"]
    assert not ext.get_extension_for_class(x509.BasicConstraints).value.ca
    with pytest.raises(IdentityError):
        certificate_claims(ca.certificate)  # the CA is not a node


def test_provision_lab_identities(tmp_path: Path) -> None:
    nodes = {"a": [(0, "10.1.0.0/24")], "b": [(0, "10.2.0.0/24"), (5, "fd00::/48")]}
    dirs = provision_lab_identities(tmp_path / "lab", "lab CA", nodes)
    assert set(dirs) == {"a", "b"}
    for name, d in dirs.items():
        assert {p.name for p in d.iterdir()} == {"node.key", "node.crt", "ca.crt"}
        assert mode(d / "node.key") == 0o600
        assert certificate_claims(cert_files.read_certificate(d / "node.crt")).name == name
    key_before = (dirs["a"] / "node.key").read_bytes()
    ca_before = (tmp_path / "lab" / "ca" / "ca.crt").read_bytes()
    provision_lab_identities(tmp_path / "lab", "lab CA", nodes)  # idempotent: keys and CA kept
    assert (dirs["a"] / "node.key").read_bytes() == key_before
    assert (tmp_path / "lab" / "ca" / "ca.crt").read_bytes() == ca_before


# -- proofs -----------------------------------------------------------------------------------


def test_proof_verifies(tmp_path: Path, ca: CertificateAuthority) -> None:
    b = node(tmp_path, ca, "b", EIDS_B)
    t = transcript()
    proof = make_proof(b, t)
    doc = json.loads(proof.text)
    assert set(doc) == {"v", "kid", "t", "cert", "sig"} and doc["kid"] == 2
    assert " " not in proof.text and len(proof.text) < 1200
    peer = verify_proof(ca.certificate, proof, t, now=wall_now())
    assert peer.name == "b" and peer.eids == tuple(EIDS_B)
    assert peer.covers(0, ip_network("10.2.0.128/25"))
    assert not peer.covers(1, ip_network("10.2.0.128/25"))
    # a sub-prefix of the certificate's prefix, and the order of sets, do not matter
    sub = transcript(eids=((0, ip_network("10.2.0.0/25")), (0, ip_network("10.2.0.128/25"))))
    assert verify_proof(ca.certificate, make_proof(b, sub), sub, now=wall_now()).name == "b"
    swapped = dataclasses.replace(sub, eids=sub.eids[::-1])
    assert swapped.encode() == sub.encode()
    assert verify_proof(ca.certificate, make_proof(b, sub), swapped, now=wall_now()).name == "b"


@pytest.mark.parametrize(
    "change",
    [
        {"ecdh_public": bytes(31) + b"\x01"},
        {"nonce": 0x1122334455667789},
        {"eids": ((0, ip_network("10.2.0.0/25")),)},
        {"rlocs": (ip_address("198.51.100.9"),)},
        {"rlocs": ()},
        {"role": "request"},
        {"cipher_suite": 6},
    ],
)
def test_rewritten_transcript_fails(tmp_path: Path, ca: CertificateAuthority, change) -> None:
    b = node(tmp_path, ca, "b", EIDS_B)
    proof = make_proof(b, transcript())
    with pytest.raises(IdentityError, match="signature does not match"):
        verify_proof(ca.certificate, proof, transcript(**change), now=wall_now())


def test_key_id_mismatch(tmp_path: Path, ca: CertificateAuthority) -> None:
    b = node(tmp_path, ca, "b", EIDS_B)
    proof = make_proof(b, transcript())
    with pytest.raises(IdentityError, match="key-id 2 does not match key-id 3"):
        verify_proof(ca.certificate, proof, transcript(key_id=3), now=wall_now())


def test_certificate_from_another_ca(tmp_path: Path, ca: CertificateAuthority) -> None:
    rogue = CertificateAuthority.create(tmp_path / "rogue", "test mesh CA")  # same name!
    b = node(tmp_path, rogue, "b", EIDS_B)
    with pytest.raises(IdentityError, match="not issued by the mesh CA"):
        verify_proof(ca.certificate, make_proof(b, transcript()), transcript(), now=wall_now())


def test_eid_outside_certificate(tmp_path: Path, ca: CertificateAuthority) -> None:
    b = node(tmp_path, ca, "b", EIDS_B)
    for eids, shown in [
        (((0, ip_network("10.2.0.0/23")),), "EID 10.2.0.0/23 iid 0"),
        (((1, ip_network("10.2.0.0/24")),), "EID 10.2.0.0/24 iid 1"),
        (((0, ip_network("10.1.0.0/24")),), "EID 10.1.0.0/24 iid 0"),
    ]:
        t = transcript(eids=eids)
        with pytest.raises(IdentityError, match=f"{shown} not in certificate of node b"):
            verify_proof(ca.certificate, make_proof(b, t), t, now=wall_now())


def test_pinned_rlocs(tmp_path: Path, ca: CertificateAuthority) -> None:
    b = node(tmp_path, ca, "b", EIDS_B, rlocs=[ip_network("192.0.2.0/24")])
    good = transcript()
    assert verify_proof(ca.certificate, make_proof(b, good), good, now=wall_now()).rlocs is not None
    bad = transcript(rlocs=(ip_address("198.51.100.1"),))
    with pytest.raises(IdentityError, match=r"RLOC 198\.51\.100\.1 not in certificate of node b"):
        verify_proof(ca.certificate, make_proof(b, bad), bad, now=wall_now())


def test_expired_and_not_yet_valid(tmp_path: Path, ca: CertificateAuthority) -> None:
    b = node(tmp_path, ca, "b", EIDS_B, valid_days=1)
    t = transcript()
    proof = make_proof(b, t)
    now = dt.datetime.now(dt.UTC)
    assert verify_proof(ca.certificate, proof, t, now=now + dt.timedelta(hours=23)).name == "b"
    with pytest.raises(IdentityError, match="certificate of node b expired"):
        verify_proof(ca.certificate, proof, t, now=now + dt.timedelta(days=2))
    with pytest.raises(IdentityError, match="not valid before"):
        verify_proof(ca.certificate, proof, t, now=(now - dt.timedelta(days=1)).timestamp())


def test_verified_certificates_are_cached(tmp_path: Path, ca: CertificateAuthority) -> None:
    cert_verify._cert_cache.clear()
    b = node(tmp_path, ca, "b", EIDS_B)
    for nonce in range(3):
        t = transcript(nonce=nonce)
        verify_proof(ca.certificate, make_proof(b, t), t, now=wall_now())
    assert len(cert_verify._cert_cache) == 1
    rogue = CertificateAuthority.create(tmp_path / "rogue", "rogue")
    c = node(tmp_path, rogue, "c", EIDS_B)
    with pytest.raises(IdentityError):
        verify_proof(ca.certificate, make_proof(c, transcript()), transcript(), now=wall_now())
    assert len(cert_verify._cert_cache) == 1  # only certificates that chained are cached


GARBAGE = [
    "",
    "null",
    "[]",
    "{",
    '{"v":1}',
    '{"v":true,"kid":1,"cert":"","sig":""}',
    '{"v":1,"kid":4,"cert":"","sig":""}',
    '{"v":1,"kid":1,"cert":"!!!","sig":""}',
    '{"v":1,"kid":1,"cert":"AAAA","sig":"AAAA"}',
    '{"v":1,"kid":1,"cert":5,"sig":null}',
    "[" * 100_000,
    '{"v":1,"kid":1,"cert":"' + "A" * 7000 + '","sig":"AA=="}',
    "\udcff\udcfe",
]


@pytest.mark.parametrize("text", GARBAGE)
def test_garbage_proof_is_identity_error(text: str, ca: CertificateAuthority) -> None:
    with pytest.raises(IdentityError):
        verify_proof(
            ca.certificate, JsonLcaf(text, NO_ADDRESS), transcript(key_id=1), now=wall_now()
        )


def test_binary_json_lcaf_rejected() -> None:
    with pytest.raises(IdentityError, match="binary"):
        parse_proof(JsonLcaf("{}", NO_ADDRESS, binary=True))


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.hex())))
def test_parse_proof_never_raises_other_exceptions(text: str) -> None:
    with contextlib.suppress(IdentityError):
        parse_proof(JsonLcaf(text, NO_ADDRESS))


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["v", "kid", "cert", "sig", "x"]),
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=40)),
    )
)
def test_parse_proof_fuzzed_objects(doc: dict) -> None:
    with contextlib.suppress(IdentityError):
        parse_proof(JsonLcaf(json.dumps(doc), NO_ADDRESS))


# -- the exchange on the wire (lisp.kx_lcaf) --------------------------------------------------


def test_signed_exchange_through_map_request_and_reply(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    a = node(tmp_path, ca, "a", EIDS_A)
    b = node(tmp_path, ca, "b", EIDS_B)
    itr_rloc, etr_rloc = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")
    nonce = 0xDEADBEEF01020304

    # ITR a: Map-Request with its key and proof as ITR-RLOC 1
    itr_key = EcdhKeyPair.generate()
    t_req = KxTranscript("request", nonce, CS_AES128_GCM, 2, itr_key.public, (EIDS_A[0],),
                         (itr_rloc,))  # fmt: skip
    itr_addr = build_request_itr_rloc(CS_AES128_GCM, itr_key.public, itr_rloc, make_proof(a, t_req))
    request = MapRequest(
        nonce, (itr_addr, itr_rloc), (RequestRecord(IPv4Address("10.2.0.5"), 32),),
        source_eid=IPv4Address("10.1.0.1"),
    )  # fmt: skip
    received = decode_control(request.encode())
    assert isinstance(received, MapRequest)

    # ETR b: verify, derive, reply with its own key and proof
    key, proof, rloc = find_itr_security(received.itr_rlocs)
    assert key is not None and proof is not None and rloc == itr_rloc
    kid = parse_proof(proof).key_id
    rebuilt = KxTranscript("request", received.nonce, key.cipher_suite, kid, public_key_of(key),
                           (EIDS_A[0],), (rloc,))  # fmt: skip
    assert verify_proof(ca.certificate, proof, rebuilt, now=wall_now()).name == "a"
    etr_key = EcdhKeyPair.generate()
    t_rep = KxTranscript("reply", nonce, CS_AES128_GCM, kid, etr_key.public, tuple(EIDS_B),
                         (etr_rloc,))  # fmt: skip
    address = build_reply_rloc_address(
        etr_rloc, CS_AES128_GCM, etr_key.public, make_proof(b, t_rep)
    )
    reply = MapReply(nonce, (EidRecord(IPv4Address("10.2.0.0"), 24, (RlocRecord(address),)),))
    got = decode_control(reply.encode())
    assert isinstance(got, MapReply)

    # ITR a: verify the reply and derive the same key
    key2, proof2, rloc2 = extract_security(got.records[0].rlocs[0].address)
    assert key2 is not None and proof2 is not None and rloc2 == etr_rloc
    record = got.records[0]
    rebuilt2 = KxTranscript("reply", got.nonce, key2.cipher_suite, parse_proof(proof2).key_id,
                            public_key_of(key2), ((0, record.prefix),), (rloc2,))  # fmt: skip
    assert verify_proof(ca.certificate, proof2, rebuilt2, now=wall_now()).name == "b"
    assert derive_data_key(itr_key, key2.keys[0], CS_AES128_GCM) == derive_data_key(
        etr_key, key.keys[0], CS_AES128_GCM
    )

    # A man in the middle swapping the reply's key (and keeping the proof) is detected.
    mitm = EcdhKeyPair.generate()
    forged = build_reply_rloc_address(etr_rloc, CS_AES128_GCM, mitm.public, proof2)
    k3, p3, _r3 = extract_security(forged)
    assert k3 is not None and p3 is not None
    t3 = dataclasses.replace(rebuilt2, ecdh_public=public_key_of(k3))
    with pytest.raises(IdentityError, match="signature does not match"):
        verify_proof(ca.certificate, p3, t3, now=wall_now())


def test_lispers_net_reply_vector_d() -> None:
    """lisp-wire.md vector D: RLOC-record = AFI-List{10.77.1.2, LCAF-11 (CS 2)}."""
    raw = bytes.fromhex(
        "200000016cbf3be9af3c0b9a000005a001181000000000010a6303000164ff000005400300000100003a"
        "00010a4d0102400300000b00002c010002000020c381142a3d8a08aade0068297daba8efc9ab66759ee8"
        "93eec6d25da6aa0c6b7700010a4d0102"
    )
    reply = decode_control(raw)
    assert isinstance(reply, MapReply)
    key, proof, rloc = extract_security(reply.records[0].rlocs[0].address)
    assert key is not None and proof is None and rloc == IPv4Address("10.77.1.2")
    assert key.cipher_suite == 2 and len(key.keys[0]) == 32
    with pytest.raises(CryptoError, match="unsupported cipher suite 2"):
        public_key_of(key)


def test_plain_rfc8061_itr_rloc_and_lenient_walk() -> None:
    pub = bytes(range(32))
    plain = build_request_itr_rloc(CS_AES128_GCM, pub, IPv4Address("192.0.2.1"), None)
    assert isinstance(plain, SecurityKey)
    key, proof, rloc = find_itr_security([IPv4Address("192.0.2.9"), plain])
    assert key == plain and proof is None and rloc == IPv4Address("192.0.2.1")
    assert public_key_of(plain) == pub
    nested = AfiList((AfiList((IPv4Address("192.0.2.3"), plain)),))
    assert extract_security(nested) == (plain, None, IPv4Address("192.0.2.3"))
    assert extract_security(IPv4Address("192.0.2.4")) == (None, None, IPv4Address("192.0.2.4"))
    assert find_itr_security([IPv4Address("192.0.2.4")]) == (None, None, None)
    without_proof = build_reply_rloc_address(IPv4Address("192.0.2.2"), CS_AES128_GCM, pub, None)
    assert without_proof == AfiList(
        (IPv4Address("192.0.2.2"), SecurityKey(5, (pub,), IPv4Address("192.0.2.2")))
    )


@pytest.mark.parametrize(
    "key",
    [
        SecurityKey(5, (), NO_ADDRESS),
        SecurityKey(5, (bytes(32), bytes(32)), NO_ADDRESS),
        SecurityKey(5, (bytes(16),), NO_ADDRESS),
        SecurityKey(5, (bytes(32),), NO_ADDRESS, revoke=True),
    ],
)
def test_public_key_of_rejects(key: SecurityKey) -> None:
    with pytest.raises(CryptoError):
        public_key_of(key)
