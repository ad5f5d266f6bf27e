"""Trust in a set of CAs that changes over time (a CA rotation), shared by node and controller.

A node extends its trust only along cross-certificates: it takes a CA into its bundle when a CA it
already trusts certified that CA's name and key, so a bundle arriving on the wire (a desired
state, an enrollment reply) cannot add a CA the previous one never vouched for. Dropping a CA
needs no proof: trusting less is always safe.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from common.errors import LispmeshError


class TrustError(LispmeshError):
    """A CA bundle cannot be taken (one line: which CA and why)."""


def ca_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, hex (the same value as a token's CA pin)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def cross_signed_by(cross: x509.Certificate, ca: x509.Certificate, by: x509.Certificate) -> bool:
    """`cross` certifies `ca`'s name and key, and `by` signed it."""
    try:
        cross.verify_directly_issued_by(by)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return cross.subject == ca.subject and cross.public_key() == ca.public_key()


def extend_trust(
    trusted: Sequence[x509.Certificate],
    offered: Sequence[x509.Certificate],
    crosses: Sequence[x509.Certificate],
) -> list[x509.Certificate]:
    """The bundle a node takes from what the controller offers: each offered CA it trusts
    already, or one cross-signed by a CA it trusts (or by one accepted so), in the offered
    order. TrustError if any offered CA is neither: the node keeps its bundle."""
    known = {ca_fingerprint(c) for c in trusted}
    accepted = [c for c in offered if ca_fingerprint(c) in known]
    pending = [c for c in offered if ca_fingerprint(c) not in known]
    while pending:
        vouched = [
            c for c in pending
            if any(cross_signed_by(x, c, by) for x in crosses for by in (*trusted, *accepted))
        ]  # fmt: skip
        if not vouched:
            names = ", ".join(c.subject.rfc4514_string() for c in pending)
            raise TrustError(f"CA {names} is not cross-signed by a CA this node trusts")
        accepted.extend(vouched)
        pending = [c for c in pending if c not in vouched]
    order = {ca_fingerprint(c): i for i, c in enumerate(offered)}
    return sorted(accepted, key=lambda c: order[ca_fingerprint(c)])
