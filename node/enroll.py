"""`lispmesh node join`: enroll this machine with the controller, once.

The key is the TPM's mesh key when a TPM is given (it never leaves the TPM), else made here
(0600) and never sent; the controller signs a CSR for it. Before the token
secret is sent, the controller must show the CA the token pins (or the one given by --ca-cert).
"""

from __future__ import annotations

import datetime as dt
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs.files import read_private_key, write_certificate
from certs.format import IdentityError
from common.errors import LispmeshError
from common.files import write_file_atomic
from controller_api.client import (
    ControllerRefused,
    ControllerUnreachable,
    credentials,
    explain,
    fetch_pinned_ca,
    split_address,
    sync_channel,
)
from controller_api.gen.lispmesh.v1 import enrollment_pb2, enrollment_pb2_grpc
from controller_api.pki import make_csr
from controller_api.tokens import TokenFormatError, parse_token
from node.node_key import NodeKey, NodeKeyError
from node.state import Enrollment, StateDir
from node.tpm_evidence import TpmWitness
from node.trust import bundle_pem, issued_by_any, take_bundle

AGENT_VERSION = "0.1.0"
ENROLL_TIMEOUT = 15.0


class EnrollError(LispmeshError):
    """One line. `retry`: the controller could not be reached (worth trying again)."""

    def __init__(self, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True)
class Onboarding:
    cert: Path
    key: Path


def _trusted_ca(controller: str, pin: str | None, ca_cert: Path | None) -> bytes:
    if ca_cert is not None:
        try:
            return ca_cert.read_bytes()
        except OSError as exc:
            raise EnrollError(f"cannot read the CA certificate {ca_cert}: {exc.strerror}") from None
    if pin is None:
        raise EnrollError("no way to trust the controller: use a token with a CA pin, or --ca-cert")
    try:
        return fetch_pinned_ca(controller, pin)
    except ControllerUnreachable as exc:
        raise EnrollError(str(exc), retry=True) from None
    except ControllerRefused as exc:
        raise EnrollError(str(exc)) from None


def enroll(
    state: StateDir,
    controller: str,
    token: str | None = None,
    onboarding: Onboarding | None = None,
    name: str | None = None,
    ca_cert: Path | None = None,
    tpm: str | None = None,
    event_log: Path | None = None,
) -> Enrollment:
    """Join with the key in the TPM `tpm` (a device path or TCTI) when given, else a file key.
    A TPM node proves its TPM and attests (with the measured-boot `event_log`) as it joins."""
    state.prepare()
    if state.revoked_message() is not None:
        # A revoked identity is dead: joining again starts from a fresh key.
        for path in (state.key, state.cert, state.checkpoint_file, state.revoked_file):
            path.unlink(missing_ok=True)
    request = enrollment_pb2.EnrollRequest(
        requested_name=name or "", hostname=socket.gethostname(), agent_version=AGENT_VERSION
    )
    pin = None
    if token is not None:
        try:
            pin = parse_token(token).ca_pin
        except TokenFormatError as exc:
            raise EnrollError(str(exc)) from None
        request.join_token = token.strip()
    elif onboarding is None:
        raise EnrollError("give a join token (--token) or an onboarding certificate")
    try:
        split_address(controller)
    except ValueError as exc:
        raise EnrollError(f"--controller: {exc}") from None
    ca_pem = _trusted_ca(controller, pin, ca_cert)
    try:
        node_key = NodeKey.open(state, tpm, create=True)
    except NodeKeyError as exc:
        raise EnrollError(str(exc)) from None
    try:
        return _enroll_with(
            state, controller, request, node_key, ca_pem, onboarding, name, event_log
        )
    finally:
        node_key.close()


def _enroll_with(
    state: StateDir,
    controller: str,
    request: enrollment_pb2.EnrollRequest,
    node_key: NodeKey,
    ca_pem: bytes,
    onboarding: Onboarding | None,
    name: str | None,
    event_log: Path | None,
) -> Enrollment:
    key = node_key.private_key
    try:
        request.csr_der = make_csr(key, name or socket.gethostname())
        if onboarding is not None:
            device_key = read_private_key(onboarding.key)
            request.onboarding.certificate_der = x509.load_pem_x509_certificate(
                onboarding.cert.read_bytes()
            ).public_bytes(serialization.Encoding.DER)
            request.onboarding.csr_signature = device_key.sign(
                request.csr_der, ec.ECDSA(hashes.SHA256())
            )
    except IdentityError as exc:
        raise EnrollError(exc.reason) from None
    except (OSError, ValueError) as exc:
        raise EnrollError(f"onboarding certificate: {exc}") from None
    witness = None
    if node_key.origin == "tpm":
        try:
            witness = TpmWitness(node_key.tpm, node_key.mesh, event_log)
        except _tpm_errors() as exc:
            raise EnrollError(str(exc)) from None
    response = _call(controller, ca_pem, request, witness)
    return _store(state, controller, node_key, ca_pem, response)


def _tpm_errors() -> tuple[type[Exception], ...]:
    """TpmError once a TPM is in use, else nothing: node.tpm (tpm2-pytss) is imported only by
    TPM nodes, and a file-key node starts (and joins) a tenth of a second sooner without it."""
    if "node.tpm" not in sys.modules:
        return ()
    from node.tpm import TpmError

    return (TpmError,)


def _call(
    controller: str,
    ca_pem: bytes,
    request: enrollment_pb2.EnrollRequest,
    witness: TpmWitness | None,
) -> enrollment_pb2.EnrollResponse:
    """Enroll; with a TPM, first the challenge its evidence answers (StartTpmEnrollment)."""
    with sync_channel(controller, credentials(ca_pem)) as channel:
        stub: Any = enrollment_pb2_grpc.EnrollmentStub(channel)  # type: ignore[no-untyped-call]
        try:
            if witness is not None:
                challenge = stub.StartTpmEnrollment(
                    witness.identity(), timeout=ENROLL_TIMEOUT, wait_for_ready=False
                )
                request.tpm.CopyFrom(witness.answer(challenge))
            response: enrollment_pb2.EnrollResponse = stub.Enroll(
                request, timeout=ENROLL_TIMEOUT, wait_for_ready=False
            )
        except grpc.RpcError as exc:
            error = explain(exc, controller)
            retry = isinstance(error, ControllerUnreachable)
            prefix = "" if retry else f"the controller at {controller} refused to enroll: "
            raise EnrollError(prefix + str(error), retry=retry) from None
        except _tpm_errors() as exc:
            raise EnrollError(str(exc)) from None
    return response


def _store(
    state: StateDir,
    controller: str,
    node_key: NodeKey,
    ca_pem: bytes,
    response: enrollment_pb2.EnrollResponse,
) -> Enrollment:
    try:
        cert = x509.load_pem_x509_certificate(response.certificate_pem)
        # The CAs to trust from now on: the one the controller was authenticated with, and
        # (during a CA rotation) the new one it cross-signed.
        bundle = take_bundle(
            x509.load_pem_x509_certificates(ca_pem),
            response.ca_certificate_pem,
            response.ca_cross_pem,
        )
    except Exception as exc:
        raise EnrollError(f"the controller sent an unusable certificate: {exc}") from None
    if issued_by_any(cert, bundle) is None:
        raise EnrollError("the controller sent a certificate from a CA this node does not trust")
    if cert.public_key() != node_key.private_key.public_key():
        raise EnrollError("the controller sent a certificate for another key")
    host, _ = split_address(controller)
    shown_host = f"[{host}]" if ":" in host else host
    enrollment = Enrollment(
        node_id=response.node_id,
        name=response.node_name,
        controller=controller,
        api_address=f"{shown_host}:{response.api_port}",
        instance_id=response.instance_id,
        eid_prefixes=tuple(p.prefix for p in response.eid_prefixes),
        enrolled_at=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        identity=node_key.origin,
        tpm=node_key.where if node_key.origin == "tpm" else "",
        api_addresses=tuple(response.api_addresses),
    )
    write_file_atomic(state.ca, bundle_pem(bundle), 0o644)
    write_certificate(state.cert, cert)
    state.save_enrollment(enrollment)
    return enrollment
