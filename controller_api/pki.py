"""The controller's certificates: its CA (made on first start), its TLS server certificate, the
admin client certificate the CLI uses, and the checks of what nodes send (CSRs, onboarding
certificates).

State-dir files: `ca/ca.crt` + `ca/ca.key` (0600), `server.crt` + `server.key` (0600, reissued
at each start so it names the current addresses), `admin.crt` + `admin.key` (0600, made once).
Clients reach the server under the fixed name `SERVER_NAME` (gRPC target-name override): the
trust comes from the pinned CA, which issues that name to the controller only (node
certificates carry URI names, never DNS names).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.files import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    read_certificate,
    write_certificate,
    write_private_key,
)
from certs.format import IdentityError
from common.ca_trust import TrustError, cross_signed_by
from common.files import write_file_atomic
from controller_api import ca_rotation
from controller_api.ca import CertificateAuthority
from controller_api.store import CaMaterial, Store, StoreError

SERVER_NAME = "controller.lispmesh"
ADMIN_URI_PREFIX = "lispmesh://admin/"
CA_DIR = "ca"


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def public_key_fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _leaf(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    san: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: int,
) -> x509.Certificate:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    end = min(start + dt.timedelta(days=days), ca.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _names(addresses: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [
        x509.DNSName(SERVER_NAME),
        x509.DNSName("localhost"),
        x509.DNSName(socket.gethostname()),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    for address in addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            names.append(x509.DNSName(address))
    return list(dict.fromkeys(names))


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def oldest(entries: list[ca_rotation.CaEntry]) -> ca_rotation.CaEntry:
    """The oldest CA of a set: the one no other CA of the set cross-signed."""
    for entry in entries:
        others = [o.certificate for o in entries if o is not entry]
        cross = entry.cross
        if cross is None or not any(cross_signed_by(cross, entry.certificate, o) for o in others):
            return entry
    return entries[0]


def tls_ca(store: Store, ca_dir: Path) -> x509.Certificate:
    """The CA a token made now must pin (the store's CA is made first if there is none)."""
    shared_ca(store, ca_dir)
    try:
        return oldest([ca_rotation.parse(m) for m in store.ca_materials()]).certificate
    except TrustError as exc:
        raise StoreError(str(exc)) from None


class ControllerPki:
    """The controller's CAs (one; two during a rotation, see controller_api.ca_rotation), its
    TLS server certificate (from the oldest CA: every node trusts that one) and the admin
    certificate. With a store, `refresh` follows the CAs stored there and the gRPC credentials
    from `server_credentials` follow `refresh`, without a restart."""

    def __init__(
        self, state_dir: Path, addresses: list[str], materials: list[CaMaterial],
        store: Store | None = None,
    ) -> None:  # fmt: skip
        self.state_dir = state_dir
        self.addresses = addresses
        self.store = store
        self.entries: list[ca_rotation.CaEntry] = []
        self.server_cert_pem = b""  # server certificate followed by its CA: clients read it
        self.server_key_pem = b""
        self.generation = 0  # bumped by every change of the CAs
        self._apply(materials)

    # ------------------------------------------------------------------ the CA set

    @property
    def issuer(self) -> ca_rotation.CaEntry:
        return self.entries[0]

    @property
    def ca(self) -> CertificateAuthority:
        """The issuing CA: new and renewed node certificates come from it."""
        return CertificateAuthority(self.issuer.certificate, self.issuer.key)

    @property
    def trusted(self) -> list[x509.Certificate]:
        return [e.certificate for e in self.entries]

    @property
    def ca_pem(self) -> bytes:
        """The trust bundle (PEM), the issuing CA first."""
        return b"".join(pem(c) for c in self.trusted)

    @property
    def cross_pem(self) -> bytes:
        return b"".join(pem(e.cross) for e in self.entries if e.cross is not None)

    @property
    def tls_ca(self) -> ca_rotation.CaEntry:
        """The CA of the controller's TLS certificate (tokens pin it): the oldest."""
        return oldest(self.entries)

    @property
    def phase(self) -> str:
        if len(self.entries) == 1:
            return "stable"
        return "distributing" if self.issuer is self.tls_ca else "switching"

    def issuer_of(self, cert: x509.Certificate) -> ca_rotation.CaEntry | None:
        return next((e for e in self.entries if _issued_by(cert, e.certificate)), None)

    def refresh(self) -> bool:
        """Take the CAs stored now (another replica may have rotated); True if they changed."""
        if self.store is None:
            return False
        materials = self.store.ca_materials()
        if materials == [ca_rotation.material(e) for e in self.entries] or not materials:
            return False
        self._apply(materials)
        return True

    def replace(self, entries: list[ca_rotation.CaEntry]) -> None:
        """Store `entries` as the CA set (Conflict if another replica changed it meanwhile)."""
        assert self.store is not None
        current = [ca_rotation.material(e) for e in self.entries]
        self.store.replace_ca_materials(current, [ca_rotation.material(e) for e in entries])
        self.refresh()

    def _apply(self, materials: list[CaMaterial]) -> None:
        try:
            entries = [ca_rotation.parse(m) for m in materials]
        except TrustError as exc:
            raise IdentityError(str(exc)) from None
        old_tls = self.tls_ca.fingerprint if self.entries else None
        self.entries = entries
        tls = self.tls_ca
        if tls.fingerprint != old_tls:
            self._server_certificate(tls)
        self._admin_certificate()
        write_file_atomic(self.state_dir / "ca.crt", self.ca_pem, 0o644)
        self.generation += 1

    def _server_certificate(self, tls: ca_rotation.CaEntry) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _leaf(tls.certificate, tls.key, key, SERVER_NAME, _names(self.addresses),
                     ExtendedKeyUsageOID.SERVER_AUTH, 825)  # fmt: skip
        write_private_key(self.state_dir / "server.key", key)
        write_certificate(self.state_dir / "server.crt", cert)
        self.server_key_pem = (self.state_dir / "server.key").read_bytes()
        self.server_cert_pem = pem(cert) + pem(tls.certificate)

    def _admin_certificate(self) -> None:
        """Made once, and again when no trusted CA issued it (a rotation finished)."""
        path = self.state_dir / "admin.crt"
        made = (self.state_dir / "admin.key").exists() and path.exists()
        if made and any(_issued_by(read_certificate(path), c) for c in self.trusted):
            return
        admin_key = ec.generate_private_key(ec.SECP256R1())
        admin = _leaf(self.issuer.certificate, self.issuer.key, admin_key, "admin",
                      [x509.UniformResourceIdentifier(ADMIN_URI_PREFIX + "admin")],
                      ExtendedKeyUsageOID.CLIENT_AUTH, 3650)  # fmt: skip
        write_private_key(self.state_dir / "admin.key", admin_key)
        write_certificate(path, admin)

    def rotate(self, now: float) -> None:
        """A new CA, cross-signed by the issuing one, trusted beside it (not issuing yet)."""
        if len(self.entries) > 1:
            raise StoreError(
                f"a CA rotation is in progress ({self.phase}): finish it first (ca rotate --finish)"
            )
        moment = dt.datetime.fromtimestamp(now, dt.UTC)
        self.replace([self.issuer, ca_rotation.new_ca(self.issuer, moment)])

    def switch(self) -> None:
        """The new CA issues from now on (every connected node trusts it)."""
        if self.phase == "distributing":
            self.replace([*self.entries[1:], self.entries[0]])

    @property
    def distributing_since(self) -> float | None:
        """When the rotation under way began (from its new CA's validity), while distributing."""
        if self.phase != "distributing":
            return None
        start = self.entries[1].certificate.not_valid_before_utc + ca_rotation.BACKDATE
        return start.timestamp()

    def abandon(self) -> None:
        """Drop the new CA that never issued: the old one alone, as before the rotation."""
        if self.phase != "distributing":
            raise StoreError(f"no CA rotation to abandon ({self.phase})")
        self.replace([self.issuer])

    def finish(self) -> None:
        """Only the issuing CA stays trusted."""
        if self.phase == "distributing":
            raise StoreError("the new CA does not issue yet: wait for the nodes to take it")
        self.replace([self.issuer])

    # ------------------------------------------------------------------ TLS

    def server_configuration(self, mutual: bool) -> Any:
        pair = [(self.server_key_pem, self.server_cert_pem)]
        roots = self.ca_pem if mutual else None
        return grpc.ssl_server_certificate_configuration(pair, root_certificates=roots)

    def server_credentials(self, mutual: bool) -> grpc.ServerCredentials:
        """Credentials that follow the CA set: a handshake after a change sees the new server
        certificate and (mutual) the new client roots. The fetcher runs in gRPC's threads: it
        only reads values the event loop replaced whole."""
        seen = [self.generation]

        def fetch() -> Any:
            if seen[0] == self.generation:
                return None
            seen[0] = self.generation
            return self.server_configuration(mutual)

        return grpc.dynamic_ssl_server_credentials(
            self.server_configuration(mutual), fetch, require_client_authentication=mutual
        )

    @classmethod
    def load_or_create(
        cls, state_dir: Path, addresses: list[str], store: Store | None = None
    ) -> ControllerPki:
        """The CAs of `store` (see `shared_ca`), or without one the CA in `state_dir/ca`."""
        if store is not None:
            shared_ca(store, state_dir / CA_DIR)
            return cls(state_dir, addresses, store.ca_materials(), store)
        ca_dir = state_dir / CA_DIR
        if not (ca_dir / CA_KEY_FILE).exists():
            CertificateAuthority.create(ca_dir, "lispmesh controller CA")
        material = ca_from_dir(ca_dir)
        assert material is not None
        return cls(state_dir, addresses, [material])


def parse_csr(der: bytes) -> ec.EllipticCurvePublicKey:
    """The public key of a CSR whose self-signature verifies (proof of possession)."""
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError:
        raise IdentityError("the certificate request is not a DER PKCS#10 request") from None
    if not csr.is_signature_valid:
        raise IdentityError("the certificate request's signature does not verify")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise IdentityError("node keys must be ECDSA P-256")
    return key


def make_csr(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class OnboardedDevice:
    fingerprint: str
    common_name: str


def load_onboarding_cas(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise IdentityError(f"onboarding CA {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise IdentityError(f"onboarding CA {path}: not PEM certificates ({exc})") from None


def verify_onboarding(
    cas: list[x509.Certificate], cert_der: bytes, csr_der: bytes, signature: bytes
) -> OnboardedDevice:
    """A device certificate issued by one of `cas`, valid now, whose key signed the CSR."""
    try:
        cert = x509.load_der_x509_certificate(cert_der)
    except ValueError:
        raise IdentityError("the onboarding certificate is not DER X.509") from None
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
            break
        except (ValueError, TypeError, InvalidSignature):
            continue
    else:
        raise IdentityError("the onboarding certificate is not from a trusted onboarding CA")
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise IdentityError(f"the onboarding certificate expired at {cert.not_valid_after_utc}")
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise IdentityError("the onboarding certificate's key is not ECDSA")
    try:
        key.verify(signature, csr_der, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise IdentityError("the onboarding signature over the request does not verify") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else ""
    return OnboardedDevice(fingerprint(cert), common_name)


def read_ca(path: Path) -> x509.Certificate:
    return read_certificate(path)


# ------------------------------------------------------------------ the CA shared by replicas


def ca_from_dir(ca_dir: Path) -> CaMaterial | None:
    if not (ca_dir / CA_KEY_FILE).exists():
        return None
    return CaMaterial((ca_dir / CA_CERT_FILE).read_bytes(), (ca_dir / CA_KEY_FILE).read_bytes())


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` atomically (a crash leaves the old file or the new one, never half)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def shared_ca(store: Store, ca_dir: Path) -> CertificateAuthority:
    """The CA of the store, written to `ca_dir`: stored first from `ca_dir` (or made there) if
    the store has none yet. A replica whose own CA lost that race takes the stored one."""
    stored = store.ca_material()
    if stored is None:
        local = ca_from_dir(ca_dir)
        if local is None:
            CertificateAuthority.create(ca_dir, "lispmesh controller CA")
            local = ca_from_dir(ca_dir)
            assert local is not None
        stored = store.init_ca_material(local)
    if ca_from_dir(ca_dir) != stored:
        ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write(ca_dir / CA_KEY_FILE, stored.key_pem, 0o600)
        _write(ca_dir / CA_CERT_FILE, stored.cert_pem, 0o644)
    try:
        return CertificateAuthority.load(ca_dir)
    except (IdentityError, OSError, ValueError) as exc:
        raise StoreError(f"CA in {ca_dir}: {exc}") from None
