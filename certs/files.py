"""Key and certificate files (PEM) of the mesh CA and of nodes.

A CA directory holds `ca.crt` (0644) and `ca.key` (0600); a node directory holds `node.key`
(0600), `node.crt` (0644) and `ca.crt` (0644). Private keys are created with mode 0600 (never
widened by the umask) and written atomically; a key file readable by group or others is refused
on load. Nothing here logs key material.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs.format import IdentityError
from common.files import write_file_atomic

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
NODE_CERT_FILE = "node.crt"
NODE_KEY_FILE = "node.key"


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh node or CA key: ECDSA P-256, the only curve the mesh accepts."""
    return ec.generate_private_key(ec.SECP256R1())


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_file_atomic(path, pem, 0o600)


def read_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        mode = path.stat().st_mode & 0o777
        pem = path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"private key {path} cannot be read: {exc.strerror}") from None
    if mode & 0o077:
        raise IdentityError(
            f"private key {path} is readable by group or others (mode {mode:04o}): chmod 600 it"
        )
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"private key {path} cannot be read: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise IdentityError(f"private key {path} is not an ECDSA P-256 key")
    return key


def write_certificate(path: Path, cert: x509.Certificate) -> None:
    write_file_atomic(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def read_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise IdentityError(f"certificate {path} cannot be read: {exc.strerror}") from None
    except ValueError as exc:
        raise IdentityError(f"certificate {path} is not a PEM X.509 certificate: {exc}") from None


def read_ca_bundle(path: Path) -> list[x509.Certificate]:
    """The CA certificates of a PEM bundle (one or more); IdentityError naming the file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"CA bundle {path} cannot be read: {exc.strerror}") from None
    try:
        cas = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise IdentityError(f"CA bundle {path} is not PEM X.509 certificates: {exc}") from None
    for ca in cas:
        try:
            constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            subject = ca.subject.rfc4514_string()
            raise IdentityError(f"CA bundle {path}: {subject} is not a CA certificate")
    return cas
