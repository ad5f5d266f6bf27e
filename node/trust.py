"""The node's trust bundle (`ca.crt`) follows the controller's CAs through a CA rotation.

A desired state names the CAs to trust, the cross-certificates that vouch for new ones and the
CA that issues now. The node takes a new CA only when a CA it trusts cross-signed it
(common.ca_trust.extend_trust), drops CAs the controller no longer names, and asks for a new
certificate at once when its own is from a CA that no longer issues.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from certs.files import read_ca_bundle
from certs.format import IdentityError
from common.ca_trust import TrustError, ca_fingerprint, extend_trust
from common.files import write_file_atomic
from controller_api.gen.lispmesh.v1 import config_pb2
from node.state import StateDir


def _pems(data: bytes, what: str) -> list[x509.Certificate]:
    if not data:
        return []
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TrustError(
            f"the {what} in the desired state is not PEM certificates: {exc}"
        ) from None


def bundle_pem(cas: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in cas)


def take_bundle(
    trusted: list[x509.Certificate], offered_pem: bytes, cross_pem: bytes
) -> list[x509.Certificate]:
    """The bundle to trust after a controller offered `offered_pem`; TrustError if it names a
    CA no trusted CA vouched for (the node then keeps `trusted`)."""
    offered = _pems(offered_pem, "CA bundle")
    if not offered:
        return trusted
    return extend_trust(trusted, offered, _pems(cross_pem, "cross-certificates"))


def update_bundle(state: StateDir, desired: config_pb2.DesiredState) -> bool:
    """Write the bundle `desired` names into `state.ca` if it differs; True if it changed."""
    try:
        trusted = read_ca_bundle(state.ca)
    except IdentityError as exc:
        raise TrustError(exc.reason) from None
    new = take_bundle(trusted, desired.ca_bundle_pem, desired.ca_cross_pem)
    if [ca_fingerprint(c) for c in new] == [ca_fingerprint(c) for c in trusted]:
        return False
    write_file_atomic(state.ca, bundle_pem(new), 0o644)
    return True


def issued_by_any(cert: x509.Certificate, cas: list[x509.Certificate]) -> x509.Certificate | None:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    return None


def renew_for_new_issuer(state: StateDir, issuing_ca: str) -> bool:
    """True if the node's certificate is not from `issuing_ca` (a fingerprint; "": unknown)."""
    if not issuing_ca:
        return False
    try:
        cert = x509.load_pem_x509_certificate(state.cert.read_bytes())
        issuer = issued_by_any(cert, read_ca_bundle(state.ca))
    except (OSError, ValueError, IdentityError):
        return False  # nothing to decide on: the regular schedule stands
    return issuer is None or ca_fingerprint(issuer) != issuing_ca
