"""Enrollment bound to the TPM, node (swtpm) against verifier (software only): the EK certificate
chain, the AK's attributes, credential activation, and the AK certifying the mesh key."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tpm2_pytss import (
    TPM2_ALG,
    TPM2_RH,
    TPM2_ST,
    TPMS_ATTEST,
    TPMT_PUBLIC,
    TPMT_SIG_SCHEME,
    TPMT_TK_HASHCHECK,
)

from controller_api.attestation import (
    AttestationRefused,
    Endorsement,
    ManufacturerCAs,
    Quote,
    activation_proof,
    check_attestation_key,
    start_activation,
    verify_certification,
    verify_ek_certificate,
    verify_endorsement,
    verify_quote,
)
from node.tpm import AttestationKey, EndorsementKey, MeshKey, Tpm, TpmError
from node.tpm.templates import AK_HANDLE
from tests.swtpm import ManufacturerCA, Swtpm


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    ("ek_type", "ek_key"),
    [("EK-RSA2048", rsa.RSAPublicKey), ("EK-HIGH-ECC384", ec.EllipticCurvePublicKey)],
)
def test_full_enrollment_flow(tpm: Tpm, ca: ManufacturerCA, ek_type: str, ek_key: type) -> None:
    """Both EKs swtpm certifies: RSA 2048 (credential seed by RSA-OAEP) and ECC P-384 (by ECDH)."""
    # Node: what it sends.
    ek = EndorsementKey.read(tpm, [ek_type])
    assert ek.ek_type == ek_type
    endorsement = ek.evidence(tpm)
    ak = AttestationKey(tpm)
    mesh = MeshKey(tpm)
    assert endorsement.certificate is not None

    # Controller: the EK chains to the manufacturer, the AK is a proper attestation key.
    cert = verify_endorsement(endorsement, ca.trusted(), now())
    assert cert is not None and cert.issuer.rfc4514_string() == "CN=swtpm-localca"
    assert isinstance(cert.public_key(), ek_key)
    ak_public = check_attestation_key(ak.public())
    pending = start_activation(endorsement.public, ak_public)

    # Node: only this TPM opens the credential.
    secret = ak.activate(ek, pending.challenge)
    pending.check(activation_proof(secret, ak.name()))

    # The AK certifies the mesh key for a fresh nonce; its signatures then verify in software.
    nonce = os.urandom(16)
    certification = ak.certify(mesh.handle, nonce)
    mesh_public = verify_certification(certification, ak_public, mesh.public_area(), nonce)
    assert _spki(mesh_public) == _spki(mesh.private_key().public_key())
    signature = mesh.private_key().sign(b"hello controller", ec.ECDSA(hashes.SHA256()))
    mesh_public.verify(signature, b"hello controller", ec.ECDSA(hashes.SHA256()))


def test_an_uncertified_ek_enrolls_only_when_the_operator_allowed_it(tpm: Tpm) -> None:
    """A low-range ECC P-256 EK (swtpm certifies none): allowed by its name, then activated."""
    ek = EndorsementKey.read(tpm, ["EK-ECC256"])
    endorsement = ek.evidence(tpm)
    assert endorsement.certificate is None
    with pytest.raises(AttestationRefused, match="no EK certificate, and this EK is not allowed"):
        verify_endorsement(endorsement, _no_cas(), now())
    ek_name = _public(endorsement.public).get_name()
    assert verify_endorsement(endorsement, _no_cas(), now(), {bytes(ek_name)}) is None
    ak = AttestationKey(tpm)
    pending = start_activation(endorsement.public, check_attestation_key(ak.public()))
    pending.check(activation_proof(ak.activate(ek, pending.challenge), ak.name()))


def test_credential_activation_on_a_second_tpm_is_refused(
    tpm: Tpm, tmp_path: Path, ca: ManufacturerCA
) -> None:
    """A clone presents TPM A's (copied) EK certificate with its own AK: it cannot open the
    credential, and a guessed proof is refused."""
    endorsement = EndorsementKey.read(tpm).evidence(tpm)
    with Swtpm.start(tmp_path / "second", ca) as other, Tpm.open(other.tcti) as clone:
        clone_ak = AttestationKey(clone)
        pending = start_activation(endorsement.public, check_attestation_key(clone_ak.public()))
        with pytest.raises(TpmError, match="credential activation refused"):
            clone_ak.activate(EndorsementKey.read(clone), pending.challenge)
        with pytest.raises(AttestationRefused, match="wrong proof") as refused:
            pending.check(activation_proof(os.urandom(32), clone_ak.name()))
        assert refused.value.check == "activation"


def test_a_credential_for_another_ak_does_not_open_for_this_one(tpm: Tpm) -> None:
    ek = EndorsementKey.read(tpm)
    endorsement = ek.evidence(tpm)
    ak = AttestationKey(tpm)
    # Bound to the mesh key's name instead of the AK's: the TPM refuses it for the AK.
    pending = start_activation(endorsement.public, _public(MeshKey(tpm).public_area()))
    with pytest.raises(TpmError, match="credential activation refused"):
        ak.activate(ek, pending.challenge)


def _public(data: bytes) -> TPMT_PUBLIC:
    public, _ = TPMT_PUBLIC.unmarshal(data)
    return public


def test_an_ak_without_the_restricted_attribute_is_refused(tpm: Tpm) -> None:
    """The attack: an unrestricted key signs a forged quote that the signature check alone accepts;
    the attribute check is what stops it."""
    ak = AttestationKey(tpm)
    nonce = os.urandom(16)
    genuine = ak.quote([0, 1, 2], nonce)
    attest, _ = TPMS_ATTEST.unmarshal(genuine.attest)
    forged_values = {i: hashlib.sha256(b"golden").digest() for i in (0, 1, 2)}
    attest.attested.quote.pcrDigest = hashlib.sha256(
        b"".join(forged_values[i] for i in sorted(forged_values))
    ).digest()
    forged_attest = attest.marshal()

    fake_ak = MeshKey(tpm)
    scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.ECDSA)
    scheme.details.any.hashAlg = TPM2_ALG.SHA256
    signature = tpm.esapi.sign(
        fake_ak.handle,
        hashlib.sha256(forged_attest).digest(),
        scheme,
        TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL),
    )
    forged = Quote(attest=forged_attest, signature=signature.marshal(), pcrs=forged_values)
    # Without the attribute check the forgery passes every quote check...
    verify_quote(forged, _public(fake_ak.public_area()), nonce, [0, 1, 2], None)
    # ...so the verifier refuses such a key as an AK.
    with pytest.raises(AttestationRefused, match="attribute restricted not set") as refused:
        check_attestation_key(fake_ak.public_area())
    assert refused.value.check == "key-attributes"


def test_an_ek_certificate_from_another_ca_is_refused(tmp_path: Path, ca: ManufacturerCA) -> None:
    other_ca = ManufacturerCA.create(tmp_path / "other-ca")
    with Swtpm.start(tmp_path / "foreign", other_ca) as foreign, Tpm.open(foreign.tcti) as tpm:
        endorsement = EndorsementKey.read(tpm).evidence(tpm)
        # It verifies against its own CA, so the refusal below is about trust, not a broken cert.
        verify_ek_certificate(endorsement, other_ca.trusted(), now())
        with pytest.raises(AttestationRefused, match="does not chain to a trusted TPM"):
            verify_ek_certificate(endorsement, ca.trusted(), now())


def test_an_ek_certificate_for_another_key_is_refused(
    tpm: Tpm, tmp_path: Path, ca: ManufacturerCA
) -> None:
    genuine = EndorsementKey.read(tpm).evidence(tpm)
    with Swtpm.start(tmp_path / "second", ca) as other, Tpm.open(other.tcti) as second:
        other_ek = EndorsementKey.read(second).evidence(second)
    spliced = Endorsement(public=other_ek.public, certificate=genuine.certificate)
    with pytest.raises(AttestationRefused, match="certifies another key"):
        verify_ek_certificate(spliced, ca.trusted(), now())
    with pytest.raises(AttestationRefused, match="no EK certificate"):
        verify_ek_certificate(Endorsement(genuine.public, None), ca.trusted(), now())
    # Before the certificate was issued (swtpm's are valid until 9999, so not after).
    with pytest.raises(AttestationRefused, match="not valid at validation time"):
        verify_ek_certificate(genuine, ca.trusted(), now() - dt.timedelta(days=1))


def test_a_certification_for_another_nonce_or_key_is_refused(tpm: Tpm) -> None:
    ak = AttestationKey(tpm)
    ak_public = check_attestation_key(ak.public())
    mesh = MeshKey(tpm)
    nonce = os.urandom(16)
    certification = ak.certify(mesh.handle, nonce)
    with pytest.raises(AttestationRefused, match="made for another nonce"):
        verify_certification(certification, ak_public, mesh.public_area(), os.urandom(16))
    # The AK certifying itself is no statement about the mesh key.
    ak_handle = tpm.persistent(AK_HANDLE)
    assert ak_handle is not None
    self_certified = ak.certify(ak_handle, nonce)
    with pytest.raises(AttestationRefused, match="certifies another key"):
        verify_certification(self_certified, ak_public, mesh.public_area(), nonce)


def test_malformed_evidence_is_one_clear_refusal() -> None:
    with pytest.raises(AttestationRefused, match="attestation key public area: malformed"):
        check_attestation_key(b"\x00\x23garbage")
    with pytest.raises(AttestationRefused, match="EK certificate: malformed"):
        verify_ek_certificate(Endorsement(b"", b"not der"), _no_cas(), now())


def test_a_verifier_without_manufacturer_cas_refuses_every_ek_certificate(tpm: Tpm) -> None:
    endorsement = EndorsementKey.read(tpm).evidence(tpm)
    with pytest.raises(AttestationRefused, match="no TPM manufacturer CA is configured"):
        verify_ek_certificate(endorsement, _no_cas(), now())


def _no_cas() -> ManufacturerCAs:
    """A verifier configured with no manufacturer at all."""
    return ManufacturerCAs(roots=())
