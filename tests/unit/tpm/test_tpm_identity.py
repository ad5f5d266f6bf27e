"""The node's mesh key lives in the TPM: signatures made there verify with cryptography, the key is
the same after a reconnect and a TPM reset, and it cannot be exported."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tpm2_pytss import ESYS_TR

from node.tpm import MeshKey, Tpm, TpmError
from node.tpm.device import tcti_for
from node.tpm.keys import provision
from node.tpm.templates import MESH_KEY_HANDLE, attestation_key_template
from tests.swtpm import Swtpm

ECDSA = ec.ECDSA(hashes.SHA256())


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_signatures_from_the_tpm_verify_in_software(tpm: Tpm) -> None:
    key = MeshKey(tpm).private_key()
    public = key.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(public.curve, ec.SECP256R1)
    signature = key.sign(b"key exchange transcript", ECDSA)
    public.verify(signature, b"key exchange transcript", ECDSA)
    with pytest.raises(InvalidSignature):
        public.verify(signature, b"another transcript", ECDSA)


def test_a_csr_can_be_signed_by_the_tpm_key(tpm: Tpm) -> None:
    key = MeshKey(tpm).private_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node-1")]))
        .sign(key, hashes.SHA256())
    )
    assert csr.is_signature_valid
    assert _spki(csr.public_key()) == _spki(key.public_key())  # type: ignore[arg-type]


def test_the_key_never_leaves_the_tpm(tpm: Tpm) -> None:
    key = MeshKey(tpm).private_key()
    with pytest.raises(NotImplementedError):
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    with pytest.raises(NotImplementedError):
        key.private_numbers()


def test_same_key_after_reconnect_and_tpm_reset(swtpm: Swtpm) -> None:
    with Tpm.open(swtpm.tcti) as tpm:
        first = _spki(MeshKey(tpm).private_key().public_key())
    with Tpm.open(swtpm.tcti) as tpm:
        assert _spki(MeshKey(tpm).private_key().public_key()) == first
    swtpm.restart()
    with Tpm.open(swtpm.tcti) as tpm:
        assert _spki(MeshKey(tpm).private_key().public_key()) == first
        # Cleared from its handle, the template re-creates the same key.
        handle = tpm.persistent(MESH_KEY_HANDLE)
        assert handle is not None
        tpm.esapi.evict_control(ESYS_TR.OWNER, handle, MESH_KEY_HANDLE)
        assert tpm.persistent(MESH_KEY_HANDLE) is None
        assert _spki(MeshKey(tpm).private_key().public_key()) == first


def test_another_object_at_the_handle_is_refused_not_evicted(tpm: Tpm) -> None:
    provision(tpm, MESH_KEY_HANDLE, attestation_key_template(), ESYS_TR.ENDORSEMENT)
    with pytest.raises(TpmError, match=r"0x81000a10 holds an object that is not the lispmesh key"):
        MeshKey(tpm).private_key()


def test_bad_tpm_specs_are_one_line_errors() -> None:
    assert tcti_for("/dev/tpmrm0") == "device:/dev/tpmrm0"
    assert tcti_for("swtpm:port=2321") == "swtpm:port=2321"
    with pytest.raises(TpmError, match="not a device path or a TCTI string"):
        tcti_for("tpmrm0")
    with pytest.raises(TpmError, match="cannot connect"):
        Tpm.open("swtpm:port=1")
