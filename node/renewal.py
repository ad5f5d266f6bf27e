"""Certificate renewal: a new key and a new certificate long before the old one expires.

Node certificates expire (a year by default); a fleet enrolled on one day would lose its mTLS
and every key exchange on one day a year later. So the agent renews at 2/3 of the lifetime: a
new P-256 key made here (a TPM node keeps its TPM-resident key), a CSR for it sent over mutual
TLS with the current certificate (`NodeConfig.Renew`), the new pair installed so that a crash
at any point leaves a usable pair.
A failed attempt is retried with capped exponential backoff and jitter, so a controller that is
down for a while (or a fleet renewing at once) is not hammered, and renewal keeps trying for the
whole last third of the lifetime. The controller keeps accepting the old certificate for its
grace period, so an answer lost on the way costs nothing: the node asks again with the old one.

`RenewalSchedule` is the sans-IO part (times in, times out); `renew_certificate` does one RPC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certs.files import read_ca_bundle
from common.errors import LispmeshError
from controller_api.client import aio_channel, credentials, explain
from controller_api.gen.lispmesh.v1 import config_pb2, config_pb2_grpc
from controller_api.pki import make_csr
from node.backoff import Backoff
from node.node_key import NodeKey
from node.state import StateDir
from node.trust import issued_by_any

RENEW_AT = 2 / 3  # of the certificate's lifetime
RENEW_TIMEOUT = 10.0


class RenewalError(LispmeshError):
    """One line: why this renewal attempt failed (the next one follows the backoff)."""


def lifetime(cert: x509.Certificate) -> tuple[float, float]:
    """(not before, not after) as POSIX timestamps."""
    return cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()


@dataclass
class RenewalSchedule:
    """When to try the next renewal of a certificate valid over [not_before, not_after]."""

    not_before: float
    not_after: float
    backoff: Backoff
    retry_at: float | None = None  # after a failure
    last_error: str = ""

    @classmethod
    def for_certificate(cls, cert: x509.Certificate, backoff: Backoff) -> RenewalSchedule:
        start, end = lifetime(cert)
        return cls(start, end, backoff)

    @property
    def due_at(self) -> float:
        return self.not_before + RENEW_AT * (self.not_after - self.not_before)

    def next_attempt(self) -> float:
        return self.retry_at if self.retry_at is not None else self.due_at

    def failed(self, now: float, error: str) -> float:
        """The time of the next attempt after one that failed at `now`."""
        self.retry_at = now + self.backoff.next()
        self.last_error = error
        return self.retry_at

    def renew_early(self, now: float) -> None:
        """Renew at `now` (the certificate's CA no longer issues: a CA rotation)."""
        self.retry_at = now

    def renewed(self, cert: x509.Certificate) -> None:
        self.not_before, self.not_after = lifetime(cert)
        self.retry_at = None
        self.last_error = ""
        self.backoff.reset()


def _check(cert_pem: bytes, key: ec.EllipticCurvePrivateKey, state: StateDir) -> x509.Certificate:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        trusted = read_ca_bundle(state.ca)
    except Exception as exc:
        raise RenewalError(f"the controller sent an unusable certificate: {exc}") from None
    if issued_by_any(cert, trusted) is None:
        # The issuing CA changed and this node has not taken the bundle naming it yet.
        raise RenewalError("the controller sent a certificate from a CA this node does not trust")
    if cert.public_key() != key.public_key():
        raise RenewalError("the controller sent a certificate for another key")
    old = x509.load_pem_x509_certificate(state.cert.read_bytes())
    if cert.subject != old.subject:
        raise RenewalError(f"the controller renewed the certificate for {cert.subject}")
    return cert


async def renew_certificate(
    state: StateDir, name: str, api_address: str, tpm_key: NodeKey | None = None
) -> x509.Certificate:
    """Renew once: a new key, its certificate from the controller, both installed. A node
    whose key lives in its TPM (`tpm_key`) keeps that key: the CSR is signed in the TPM and
    only the new certificate is installed (a new key made here would not be TPM-resident)."""
    if tpm_key is not None:
        key = tpm_key.private_key
        creds = tpm_key.channel_credentials(state.ca.read_bytes(), state.cert.read_bytes())
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        creds = credentials(state.ca.read_bytes(), state.cert.read_bytes(), state.key.read_bytes())
    request = config_pb2.RenewRequest(csr_der=make_csr(key, name))
    try:
        async with aio_channel(api_address, creds) as channel:
            stub: Any = config_pb2_grpc.NodeConfigStub(channel)  # type: ignore[no-untyped-call]
            reply = await stub.Renew(request, timeout=RENEW_TIMEOUT)
    except grpc.aio.AioRpcError as exc:
        raise RenewalError(str(explain(exc, api_address))) from None
    cert = _check(reply.certificate_pem, key, state)
    if tpm_key is not None:
        state.install_certificate(cert)
    else:
        state.install_renewal(key, cert)
    return cert
