"""Who is calling: a node (its certificate, mapped to its row) or an operator (admin cert).

gRPC has already checked the client certificate chains to the controller CA; here the exact
certificate must belong to a node that is not revoked (a re-enrolled node's old certificate no
longer counts; a renewed node's old one only until the end of its grace period), or carry the
admin URI. Everything but Enrollment goes through one of these.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import grpc
from cryptography import x509

from controller_api import pki
from controller_api.settings import rfc3339
from controller_api.store import NodeRow, Store


class Denied(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def peer_certificate(context: grpc.aio.ServicerContext) -> x509.Certificate | None:
    auth = context.auth_context()
    pems = auth.get("x509_pem_cert") or []
    if not pems:
        return None
    try:
        return x509.load_pem_x509_certificate(pems[0])
    except ValueError:
        return None


def _uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


class Authenticator:
    def __init__(
        self,
        store: Store,
        ca: x509.Certificate | Callable[[], Sequence[x509.Certificate]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        # The trusted CAs (two during a CA rotation), read at each call: a rotation or its
        # finish applies to the next call.
        self.cas = (lambda: (ca,)) if isinstance(ca, x509.Certificate) else ca
        self.clock = clock

    def _chained(self, cert: x509.Certificate | None, what: str) -> x509.Certificate:
        if cert is None:
            raise Denied(
                grpc.StatusCode.UNAUTHENTICATED,
                f"{what} certificate is required: use the controller's API port (mutual TLS), "
                "not its join port",
            )
        for ca in self.cas():
            try:
                cert.verify_directly_issued_by(ca)
            except Exception:
                continue
            return cert
        raise Denied(grpc.StatusCode.UNAUTHENTICATED, "client certificate not from this controller")

    def node(self, context: grpc.aio.ServicerContext) -> NodeRow:
        cert = self._chained(peer_certificate(context), "a node")
        fp = pki.fingerprint(cert)
        node = self.store.node_by_cert(fp) or self.store.node_by_retired_cert(fp, self.clock())
        if node is None:
            raise Denied(
                grpc.StatusCode.UNAUTHENTICATED,
                "this node certificate is not (or no longer) known: enroll the node again",
            )
        if node.revoked:
            raise Denied(
                grpc.StatusCode.PERMISSION_DENIED,
                f"node {node.name} was revoked at {rfc3339(node.revoked_at)}",
            )
        return node

    def admin(self, context: grpc.aio.ServicerContext) -> str:
        cert = self._chained(peer_certificate(context), "an admin")
        names = [u for u in _uris(cert) if u.startswith(pki.ADMIN_URI_PREFIX)]
        if not names:
            raise Denied(grpc.StatusCode.PERMISSION_DENIED, "not an admin certificate")
        return names[0][len(pki.ADMIN_URI_PREFIX) :]
