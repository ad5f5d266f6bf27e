"""Where the node's mesh and mTLS key lives: in the TPM when one is configured, else a 0600 file.

With a TPM the key is the TPM-resident P-256 key (node/tpm/keys.py): every signature (the CSR,
TLS client authentication to the controller, the mesh's key-exchange proofs) is made by the TPM
and the private key never exists outside it. Without one the key is `node.key` (0600) in the state
dir, which anyone with root on the machine, or its disk, can copy: the node says so, once.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc
import grpc.experimental
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs.files import read_certificate, read_private_key, write_private_key
from certs.format import IdentityError
from common.errors import LispmeshError
from controller_api.client import credentials
from node.state import Enrollment, StateDir

log = logging.getLogger("lispmesh.agent")

Origin = Literal["tpm", "file"]


class NodeKeyError(LispmeshError):
    """The key cannot be used (one line: which TPM or file, and why)."""


@dataclass
class NodeKey:
    origin: Origin
    private_key: ec.EllipticCurvePrivateKey
    where: str  # the TPM's TCTI, or the key file
    # node.tpm.Tpm and node.tpm.MeshKey when origin == "tpm" (imported only then: tpm2-pytss)
    tpm: Any = None
    mesh: Any = None

    @classmethod
    def open(cls, state: StateDir, tpm: str | None, create: bool = False) -> NodeKey:
        """The TPM's mesh key when `tpm` (a device path or TCTI) is given, else the file key
        (made, 0600, when `create` and there is none)."""
        if tpm:
            return cls._from_tpm(tpm)
        log.warning(
            "no TPM configured (--tpm): the node key is the file %s, which can be copied off "
            "this machine",
            state.key,
        )
        try:
            if state.key.exists() or not create:
                return cls("file", read_private_key(state.key), str(state.key))
        except IdentityError as exc:
            raise NodeKeyError(exc.reason) from None
        key = ec.generate_private_key(ec.SECP256R1())
        write_private_key(state.key, key)
        return cls("file", key, str(state.key))

    @classmethod
    def _from_tpm(cls, spec: str) -> NodeKey:
        from node.tpm import MeshKey, Tpm, TpmError

        try:
            device = Tpm.open(spec)
        except TpmError as exc:
            raise NodeKeyError(str(exc)) from None
        try:
            with device.lock:
                mesh = MeshKey(device)
            key = mesh.private_key()
        except TpmError as exc:
            device.close()
            raise NodeKeyError(str(exc)) from None
        return cls("tpm", key, device.where, device, mesh)

    def public_der(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def channel_credentials(self, ca_pem: bytes, cert_pem: bytes) -> grpc.ChannelCredentials:
        """Mutual-TLS credentials for the controller's API with this key. A TPM key signs the
        TLS handshake through gRPC's custom-signer hook: BoringSSL never sees the private key."""
        if self.origin == "file":
            # Read now: a certificate renewal (node/renewal.py) replaces the key file.
            try:
                key = read_private_key(Path(self.where))
            except IdentityError as exc:
                raise NodeKeyError(exc.reason) from None
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            return credentials(ca_pem, cert_pem, pem)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", grpc.experimental.ExperimentalApiWarning)
            return grpc.experimental.ssl_channel_credentials_with_custom_signer(
                private_key_sign_fn=self._tls_sign,
                root_certificates=ca_pem,
                certificate_chain=cert_pem,
            )

    def _tls_sign(self, data: bytes, algorithm: Any, _on_complete: Any) -> bytes:
        # A P-256 certificate only ever negotiates ECDSA with SHA-256 (TLS 1.3 binds the curve
        # to the hash); refuse anything else rather than sign a digest of another kind.
        if algorithm != grpc.experimental.PrivateKeySignatureAlgorithm.ECDSA_SECP256R1_SHA256:
            raise NodeKeyError(f"TLS asked the TPM key for a {algorithm} signature")
        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256()))

    def close(self) -> None:
        if self.tpm is not None:
            self.tpm.close()
            self.tpm = None

    def check_certificate(self, state: StateDir) -> None:
        """Refuse a node certificate that is not for this key: a state dir copied to a machine
        with another TPM (a clone) stops here with one line, not at the TLS handshake."""
        try:
            cert = read_certificate(state.cert)
        except IdentityError as exc:
            raise NodeKeyError(exc.reason) from None
        if cert.public_key() != self.private_key.public_key():
            raise NodeKeyError(
                f"{state.cert} is the certificate of another key than the "
                + ("mesh key of the TPM " if self.origin == "tpm" else "key file ")
                + f"{self.where} (a state dir copied from another machine?): join this node again"
            )


def tpm_for(enrollment: Enrollment, option: str | None) -> str | None:
    """The TPM the agent uses: `--tpm` if given, else the one the node joined with. A node that
    joined with a file key cannot switch to the TPM without joining again (its certificate is
    for the file key)."""
    if enrollment.identity == "tpm":
        return option or enrollment.tpm or None
    if option:
        raise NodeKeyError(
            f"node {enrollment.name} joined with a file key: join again (--force) to move its "
            "identity into the TPM"
        )
    return None
