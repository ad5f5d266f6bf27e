"""Talking to the controller: first contact with a pinned CA, TLS channels, readable errors.

First contact (a node holding only a join token): open a TLS connection without verifying,
read the certificate chain the server sends, keep the certificate whose SHA-256 equals the pin
from the token, and from then on use gRPC over TLS with that CA as the only root. A server that
cannot show the pinned CA is refused before any secret is sent.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from common.errors import LispmeshError
from controller_api.pki import SERVER_NAME

CONNECT_TIMEOUT = 5.0
_ENCODING_DER: Any = vars(ssl)["_ssl"].ENCODING_DER  # no public name in 3.11


class ControllerUnreachable(LispmeshError):
    """One line: `cannot reach the controller at ADDR: why`."""


class ControllerRefused(Exception):
    """The controller answered with an error (one line, from its message)."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


def split_address(address: str, default_port: int = 7443) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port`, `v6` -> (host, port)."""
    text = address.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if not port.isdigit():
            raise ValueError(f"{address!r}: the port is not a number")
        return host, int(port)
    return text, default_port


def target(address: str) -> str:
    host, port = split_address(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _why(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    return (exc.strerror or str(exc)).lower()


def fetch_pinned_ca(address: str, pin: str, timeout: float = CONNECT_TIMEOUT) -> bytes:
    """The PEM of the CA certificate in the server's chain whose SHA-256 (DER) is `pin`."""
    host, port = split_address(address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # nothing is trusted yet: the pin decides below
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls,
        ):
            # Python 3.11 has no public API for the unverified chain (3.13 adds one).
            sslobj: Any = tls._sslobj  # type: ignore[attr-defined]
            chain = sslobj.get_unverified_chain() or []
            ders = [cert.public_bytes(_ENCODING_DER) for cert in chain]
    except ssl.SSLError as exc:
        raise ControllerUnreachable(
            f"cannot reach the controller at {address}: TLS failed ({exc.reason})"
        ) from None
    except OSError as exc:
        raise ControllerUnreachable(
            f"cannot reach the controller at {address}: {_why(exc)}"
        ) from None
    for der in ders:
        if hashlib.sha256(der).hexdigest() == pin.lower():
            cert = x509.load_der_x509_certificate(der)
            return cert.public_bytes(serialization.Encoding.PEM)
    raise ControllerRefused(
        f"the server at {address} does not present the CA the token pins "
        "(wrong address, or someone in the middle): refusing to enroll"
    )


def _options() -> list[tuple[str, Any]]:
    return [
        # The pinned CA is the trust anchor; it issues this name to the controller only.
        ("grpc.ssl_target_name_override", SERVER_NAME),
        ("grpc.default_authority", SERVER_NAME),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 5_000),
    ]


def credentials(
    ca_pem: bytes, cert_pem: bytes | None = None, key_pem: bytes | None = None
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )


def aio_channel(address: str, creds: grpc.ChannelCredentials) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(target(address), creds, options=_options())


def sync_channel(address: str, creds: grpc.ChannelCredentials) -> grpc.Channel:
    return grpc.secure_channel(target(address), creds, options=_options())


def explain(error: grpc.RpcError, address: str) -> Exception:
    """A gRPC failure as ControllerUnreachable or ControllerRefused, with one clear line."""
    code = error.code() if hasattr(error, "code") else None
    details = (error.details() if hasattr(error, "details") else "") or ""
    if code == grpc.StatusCode.UNAVAILABLE and details.startswith("controller replica "):
        # The replica answered: its store did not (controller_api/store_errors.py).
        return ControllerRefused(details, code)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        lowered = details.lower()
        if "refused" in lowered:
            why = "connection refused"
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED or "timeout" in lowered:
            why = "timed out"
        elif "handshake" in lowered or "ssl" in lowered or "certificate" in lowered:
            why = "TLS failed (not this controller's CA?)"
        else:
            why = details.split(";")[-1].strip() or "unavailable"
        return ControllerUnreachable(f"cannot reach the controller at {address}: {why}")
    return ControllerRefused(details or str(code), code)
