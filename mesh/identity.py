"""Node identity (ECDSA P-256 keys, X.509 certificates from the mesh CA) and the binding of the
RFC 8061 key exchange to it.

Files (PEM): a CA directory holds `ca.crt` (0644) and `ca.key` (0600); a node directory holds
`node.key` (0600), `node.crt` (0644) and `ca.crt` (0644). Private keys are created with mode 0600
(never widened by the umask) and written atomically; a key file readable by group or others is
refused on load. Nothing here logs key material.

Node certificates carry the node's EID prefixes in a private, non-critical extension (OID
`EID_EXTENSION_OID`: DER UTF8String "iid:prefix,iid:prefix"), optionally its RLOC prefixes
(`RLOC_EXTENSION_OID`, same encoding without iids), and a SAN URI `lispmesh://node/<name>`.
Key usage digitalSignature and EKU clientAuth+serverAuth make them usable for mTLS later.

Key-exchange binding: each side signs a `KxTranscript` (role, Map-Request nonce, cipher suite,
key-id, its X25519 public key, its EIDs and RLOCs) and sends `{"v":1,"kid":..,"cert":..,"sig":..}`
in a JSON LCAF next to its Security-Key LCAF. The receiver rebuilds the transcript from what it
received and calls `verify_proof`: a man in the middle that rewrites the public key, nonce, EIDs
or RLOCs breaks the signature, and only a node whose certificate covers the EIDs can answer
for them.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Literal, Protocol, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.files import write_file_atomic
from lisp.address import NO_ADDRESS
from lisp.lcaf import JsonLcaf

IpNetwork: TypeAlias = IPv4Network | IPv6Network
IpAddr: TypeAlias = IPv4Address | IPv6Address
Eid: TypeAlias = tuple[int, IpNetwork]  # (instance-id, prefix)
Now: TypeAlias = "dt.datetime | float | None"
# A moment a verifier is given (wall-clock seconds or a datetime): it never reads a clock itself.
At: TypeAlias = "dt.datetime | float"

# A private OID arc: 2.25.<UUID> (ITU-T X.667) needs no registration and is ours alone.
_ARC = "2.25.234865613516693589482944461835356777512"
EID_EXTENSION_OID = x509.ObjectIdentifier(f"{_ARC}.1")
RLOC_EXTENSION_OID = x509.ObjectIdentifier(f"{_ARC}.2")
SAN_URI_PREFIX = "lispmesh://node/"
# v2: the request names the EIDs it asks for (so, the receiving ETR) and when it was signed.
KX_DOMAIN = b"lispmesh-kx-v2\x00"
PROOF_VERSION = 2
MAX_PROOF_TEXT = 8192

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
NODE_CERT_FILE = "node.crt"
NODE_KEY_FILE = "node.key"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
_CLOCK_SKEW = dt.timedelta(minutes=5)


class IdentityError(Exception):
    """An identity check failed; `reason` is one precise, loggable line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotFromCa(IdentityError):
    """The certificate was not issued by the CA it was checked against (another may have)."""


# ---------------------------------------------------------------------------------------------
# files


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


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise IdentityError(
            f"invalid node name {name!r}: use letters, digits, '.', '_', '-' (max 63)"
        )
    return name


# ---------------------------------------------------------------------------------------------
# the EID/RLOC extension


def _der_utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    n = len(raw)
    if n < 0x80:
        length = bytes((n,))
    else:
        size = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes((0x80 | len(size),)) + size
    return b"\x0c" + length + raw


def _parse_der_utf8(der: bytes) -> str:
    if len(der) < 2 or der[0] != 0x0C:
        raise ValueError("not a DER UTF8String")
    n, pos = der[1], 2
    if n & 0x80:
        size = n & 0x7F
        if size == 0 or size > 4 or len(der) < 2 + size:
            raise ValueError("bad DER length")
        n, pos = int.from_bytes(der[2 : 2 + size], "big"), 2 + size
    if len(der) != pos + n:
        raise ValueError("DER length does not match")
    return der[pos:].decode("utf-8")


def encode_eids(eids: Sequence[Eid]) -> str:
    return ",".join(f"{iid}:{prefix}" for iid, prefix in _canonical_eids(eids))


def parse_eids(text: str) -> tuple[Eid, ...]:
    out = []
    for item in filter(None, text.split(",")):
        iid_text, _, prefix = item.partition(":")
        iid = int(iid_text)
        if not 0 <= iid < 2**32:
            raise ValueError(f"instance-id {iid} out of range")
        out.append((iid, ip_network(prefix)))
    return tuple(out)


def _canonical_eids(eids: Sequence[Eid]) -> list[Eid]:
    return sorted(set(eids), key=lambda e: (e[0], e[1].version, e[1]))


def _eid_extension(eids: Sequence[Eid]) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(EID_EXTENSION_OID, _der_utf8(encode_eids(eids)))


def _rloc_extension(rlocs: Sequence[IpNetwork]) -> x509.UnrecognizedExtension:
    ordered = sorted(set(rlocs), key=lambda n: (n.version, n))
    return x509.UnrecognizedExtension(RLOC_EXTENSION_OID, _der_utf8(",".join(map(str, ordered))))


@dataclass(frozen=True, slots=True)
class NodeClaims:
    """What a node certificate says: name, EIDs, RLOC prefixes (None: not restricted)."""

    name: str
    eids: tuple[Eid, ...]
    rlocs: tuple[IpNetwork, ...] | None


def _raw_extension(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes:
    value = cert.extensions.get_extension_for_oid(oid).value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise ValueError(f"extension {oid.dotted_string} has an unexpected type")
    return value.value


def certificate_claims(cert: x509.Certificate) -> NodeClaims:
    """Name, EIDs and RLOCs of a node certificate; IdentityError if it is not one."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
        names = [u[len(SAN_URI_PREFIX) :] for u in uris if u.startswith(SAN_URI_PREFIX)]
        if len(names) != 1:
            raise IdentityError(f"certificate has no single {SAN_URI_PREFIX}<name> URI")
        name = check_name(names[0])
        eids = parse_eids(_parse_der_utf8(_raw_extension(cert, EID_EXTENSION_OID)))
        try:
            text = _parse_der_utf8(_raw_extension(cert, RLOC_EXTENSION_OID))
        except x509.ExtensionNotFound:
            rlocs = None
        else:
            rlocs = tuple(ip_network(t) for t in filter(None, text.split(",")))
    except x509.ExtensionNotFound as exc:
        missing = exc.oid.dotted_string
        raise IdentityError(f"not a lispmesh node certificate (missing {missing})") from None
    except (ValueError, UnicodeError) as exc:
        raise IdentityError(f"node certificate has a malformed lispmesh extension: {exc}") from None
    return NodeClaims(name, eids, rlocs)


# ---------------------------------------------------------------------------------------------
# CA and node identity


def _utcnow(now: Now = None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if isinstance(now, dt.datetime):
        return now if now.tzinfo else now.replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(now, dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def ca_certificate_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    not_before: dt.datetime,
    lifetime: dt.timedelta,
) -> x509.CertificateBuilder:
    """An unsigned CA certificate for `public_key`: path length 0 (it signs node certificates
    only), keyCertSign + cRLSign, its subject key identifier. Self-signed when `issuer` is
    `subject`; a cross-certificate when another CA signs it (controller_api.ca_rotation)."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


class CertificateAuthority:
    """The mesh CA (later: the controller's CA). Issues node certificates."""

    def __init__(self, certificate: x509.Certificate, private_key: ec.EllipticCurvePrivateKey):
        self.certificate = certificate
        self._key = private_key

    @classmethod
    def create(
        cls, directory: Path | str, name: str, valid_days: int = 3650, now: Now = None
    ) -> CertificateAuthority:
        directory = Path(directory)
        if (directory / CA_KEY_FILE).exists():
            raise IdentityError(f"a CA already exists in {directory}; refusing to overwrite it")
        key = _new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        start = _utcnow(now) - _CLOCK_SKEW
        cert = ca_certificate_builder(
            subject, subject, key.public_key(), start, dt.timedelta(days=valid_days)
        ).sign(key, hashes.SHA256())
        write_private_key(directory / CA_KEY_FILE, key)
        write_certificate(directory / CA_CERT_FILE, cert)
        return cls(cert, key)

    @classmethod
    def load(cls, directory: Path | str) -> CertificateAuthority:
        directory = Path(directory)
        return cls(
            read_certificate(directory / CA_CERT_FILE),
            read_private_key(directory / CA_KEY_FILE),
        )

    def issue(
        self,
        node_name: str,
        public_key: ec.EllipticCurvePublicKey,
        eids: Sequence[Eid],
        rlocs: Sequence[IpNetwork] | None = None,
        valid_days: float = 365,
        now: Now = None,
    ) -> x509.Certificate:
        """A node certificate for `node_name` and its EID prefixes (and RLOC prefixes, if the
        node's locators should be pinned; mobile nodes leave them out)."""
        check_name(node_name)
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise IdentityError("node keys must be ECDSA P-256")
        # Valid a little before now (peers' clocks differ) and `valid_days` from now: a short
        # lifetime (a lab renewing every few minutes) is not eaten by the back-dating.
        start = _utcnow(now) - _CLOCK_SKEW
        end = _utcnow(now) + dt.timedelta(days=valid_days)
        end = min(end, self.certificate.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(SAN_URI_PREFIX + node_name)]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .add_extension(_eid_extension(eids), critical=False)
        )
        if rlocs is not None:
            builder = builder.add_extension(_rloc_extension(rlocs), critical=False)
        return builder.sign(self._key, hashes.SHA256())


class NodeIdentity:
    """A node's private key, and its certificate once the CA issued one."""

    def __init__(
        self,
        name: str,
        private_key: ec.EllipticCurvePrivateKey,
        certificate: x509.Certificate | None = None,
        directory: Path | None = None,
    ) -> None:
        self.name = check_name(name)
        self._key = private_key
        self.certificate = certificate
        self.directory = directory
        self._cert_der: bytes | None = None

    @classmethod
    def load_or_create(cls, directory: Path | str, name: str) -> NodeIdentity:
        """Load `node.key` (creating it, 0600, if missing) and `node.crt` if present."""
        directory = Path(directory)
        key_path = directory / NODE_KEY_FILE
        if key_path.exists():
            key = read_private_key(key_path)
        else:
            key = _new_key()
            write_private_key(key_path, key)
        cert_path = directory / NODE_CERT_FILE
        cert = read_certificate(cert_path) if cert_path.exists() else None
        if cert is not None and cert.public_key() != key.public_key():
            raise IdentityError(f"{cert_path} is not the certificate of {key_path}")
        return cls(name, key, cert, directory)

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def install_certificate(self, certificate: x509.Certificate) -> None:
        """Use (and save, if the identity has a directory) a certificate for this key."""
        if certificate.public_key() != self._key.public_key():
            raise IdentityError("certificate is not for this node's key")
        self.certificate = certificate
        self._cert_der = None
        if self.directory is not None:
            write_certificate(self.directory / NODE_CERT_FILE, certificate)

    @property
    def certificate_der(self) -> bytes:
        if self.certificate is None:
            raise IdentityError(f"node {self.name} has no certificate yet")
        if self._cert_der is None:
            self._cert_der = self.certificate.public_bytes(serialization.Encoding.DER)
        return self._cert_der

    def sign(self, data: bytes) -> bytes:
        """ECDSA-SHA256 (DER) signature by the node key."""
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))

    def __repr__(self) -> str:
        return f"NodeIdentity({self.name!r}, certificate={self.certificate is not None})"


def provision_lab_identities(
    out_dir: Path | str,
    ca_name: str,
    nodes: Mapping[str, Sequence[tuple[int, str | IpNetwork]]],
    valid_days: int = 365,
) -> dict[str, Path]:
    """A CA in `out_dir/ca/` (created once, reused after) and, per node, `out_dir/<name>/` with
    node.key (kept if present), a freshly issued node.crt and ca.crt. Returns the node dirs."""
    out = Path(out_dir)
    ca_dir = out / "ca"
    if (ca_dir / CA_KEY_FILE).exists():
        ca = CertificateAuthority.load(ca_dir)
    else:
        ca = CertificateAuthority.create(ca_dir, ca_name)
    dirs: dict[str, Path] = {}
    for name, eid_specs in nodes.items():
        node_dir = out / check_name(name)
        eids = [(int(iid), ip_network(prefix)) for iid, prefix in eid_specs]
        (node_dir / NODE_CERT_FILE).unlink(missing_ok=True)  # reissued below, for this key
        node = NodeIdentity.load_or_create(node_dir, name)
        node.install_certificate(ca.issue(name, node.public_key, eids, valid_days=valid_days))
        write_certificate(node_dir / CA_CERT_FILE, ca.certificate)
        dirs[name] = node_dir
    return dirs


# ---------------------------------------------------------------------------------------------
# key-exchange binding


@dataclass(frozen=True, slots=True)
class KxTranscript:
    """What one side of a key exchange signs. Build it from the message fields, never from the
    proof itself; EIDs and RLOCs are sets (order and duplicates do not matter)."""

    role: Literal["request", "reply", "binding"]  # binding: a NAT binding claimed at an RTR
    nonce: int  # the Map-Request nonce (64 bits), echoed by the Map-Reply
    cipher_suite: int
    key_id: int
    ecdh_public: bytes
    # A request: the EID-prefixes it asks for (the receiver); a reply: those it answers.
    eids: tuple[Eid, ...]
    rlocs: tuple[IpAddr, ...] = ()
    issued_at_ms: int = 0  # when the proof was signed (Unix ms): its freshness

    def encode(self) -> bytes:
        """Canonical bytes: domain tag, then fixed-width fields and sorted, deduplicated sets."""
        if self.role not in _ROLES:
            raise IdentityError(f"transcript role {self.role!r} is not request/reply/binding")
        try:
            return self._encode()
        except (struct.error, AttributeError, TypeError) as exc:
            raise IdentityError(f"transcript cannot be encoded: {exc}") from None

    def _encode(self) -> bytes:
        parts = [
            KX_DOMAIN,
            struct.pack(
                "!BQQBBH",
                _ROLES[self.role],
                self.nonce,
                self.issued_at_ms,
                self.cipher_suite,
                self.key_id,
                len(self.ecdh_public),
            ),
            self.ecdh_public,
        ]
        eids = _canonical_eids(self.eids)
        parts.append(struct.pack("!H", len(eids)))
        for iid, prefix in eids:
            parts.append(struct.pack("!IBB", iid, prefix.version, prefix.prefixlen))
            parts.append(prefix.network_address.packed)
        rlocs = sorted(set(self.rlocs), key=lambda a: (a.version, a))
        parts.append(struct.pack("!H", len(rlocs)))
        for rloc in rlocs:
            parts.append(bytes((rloc.version,)) + rloc.packed)
        return b"".join(parts)


_ROLES = {"request": 1, "reply": 2, "binding": 3}  # signed: a proof for one never fits another


@dataclass(frozen=True, slots=True)
class Proof:
    """A parsed proof JSON LCAF (not yet verified)."""

    version: int
    key_id: int
    certificate_der: bytes
    signature: bytes
    issued_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """A peer whose proof verified: who it is and what it may claim."""

    name: str
    eids: tuple[Eid, ...]
    rlocs: tuple[IpNetwork, ...] | None
    fingerprint: str  # SHA-256 of the certificate DER, hex
    not_after: dt.datetime

    def covers(self, iid: int, prefix: IpNetwork) -> bool:
        return _covered(self.eids, iid, prefix)


def _covered(eids: Sequence[Eid], iid: int, prefix: IpNetwork) -> bool:
    return any(
        ciid == iid and cnet.version == prefix.version and prefix.subnet_of(cnet)  # type: ignore[arg-type]
        for ciid, cnet in eids
    )


def make_proof(identity: NodeIdentity, transcript: KxTranscript) -> JsonLcaf:
    """The JSON LCAF proving `identity` offered `transcript` (compact: one line, no spaces)."""
    text = json.dumps(
        {
            "v": PROOF_VERSION,
            "kid": transcript.key_id,
            "t": transcript.issued_at_ms,
            "cert": base64.b64encode(identity.certificate_der).decode("ascii"),
            "sig": base64.b64encode(identity.sign(transcript.encode())).decode("ascii"),
        },
        separators=(",", ":"),
    )
    return JsonLcaf(text, NO_ADDRESS)


def _b64(value: object, what: str, limit: int) -> bytes:
    if not isinstance(value, str) or len(value) > limit:
        raise IdentityError(f"proof {what} is not a base64 string of at most {limit} chars")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise IdentityError(f"proof {what} is not valid base64") from None


def parse_proof(json_lcaf: JsonLcaf) -> Proof:
    """The fields of a proof JSON LCAF; IdentityError (only) for anything malformed."""
    try:
        if json_lcaf.binary:
            raise IdentityError("proof JSON LCAF is binary, expected text")
        text = json_lcaf.text
        if not isinstance(text, str) or len(text) > MAX_PROOF_TEXT:
            raise IdentityError(f"proof is not text of at most {MAX_PROOF_TEXT} chars")
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            raise IdentityError("proof is not valid JSON") from None
        if not isinstance(doc, dict):
            raise IdentityError("proof JSON is not an object")
        version, kid = doc.get("v"), doc.get("kid")
        if type(version) is not int or version != PROOF_VERSION:
            raise IdentityError(f"unsupported proof version {version!r}")
        if type(kid) is not int or not 1 <= kid <= 3:
            raise IdentityError(f"proof key-id {kid!r} is not 1..3")
        issued = doc.get("t")
        if type(issued) is not int or not 0 <= issued < 2**63:
            raise IdentityError(f"proof time {issued!r} is not a time in ms")
        cert = _b64(doc.get("cert"), "cert", 6000)
        sig = _b64(doc.get("sig"), "sig", 200)
        return Proof(version, kid, cert, sig, issued)
    except IdentityError:
        raise
    except Exception as exc:  # robust to any garbage: never another exception type
        raise IdentityError(f"malformed proof ({type(exc).__name__})") from None


@dataclass(frozen=True, slots=True)
class VerifiedCertificate:
    """A node certificate a verifier accepted: its claims, key and validity."""

    claims: NodeClaims
    public_key: ec.EllipticCurvePublicKey
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str


_CACHE_SIZE = 1024
_cert_cache: OrderedDict[tuple[bytes, bytes], VerifiedCertificate] = OrderedDict()


def _ca_fingerprint(ca_certificate: x509.Certificate) -> bytes:
    return ca_certificate.fingerprint(hashes.SHA256())


def _verified_certificate(ca_certificate: x509.Certificate, der: bytes) -> VerifiedCertificate:
    """Parse `der` and check it was issued by the CA (cached by (CA, cert) fingerprint; only
    certificates that chained are cached, validity times are checked by the caller)."""
    fingerprint = hashlib.sha256(der).digest()
    key = (_ca_fingerprint(ca_certificate), fingerprint)
    cached = _cert_cache.get(key)
    if cached is not None:
        _cert_cache.move_to_end(key)
        return cached
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise IdentityError("proof certificate is not valid DER X.509") from None
    try:
        cert.verify_directly_issued_by(ca_certificate)
    except (ValueError, TypeError, InvalidSignature):
        raise NotFromCa(
            f"certificate of {cert.subject.rfc4514_string()} not issued by the mesh CA"
        ) from None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or constraints.ca:
        raise IdentityError("proof certificate is not a node (end-entity) certificate")
    public_key = cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise IdentityError("proof certificate key is not ECDSA")
    verified = VerifiedCertificate(
        certificate_claims(cert),
        public_key,
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
        fingerprint.hex(),
    )
    _cert_cache[key] = verified
    if len(_cert_cache) > _CACHE_SIZE:
        _cert_cache.popitem(last=False)
    return verified


class CertificateVerifier(Protocol):
    """Decides which node certificates a key exchange accepts (as Nebula's handshake machine
    takes its CA pool): the mesh CA by default (`CaVerifier`); tests and other trust models
    inject their own. IdentityError with the reason when a certificate is refused."""

    def verify(self, der: bytes, now: At) -> VerifiedCertificate: ...


class CaVerifier:
    """Node certificates directly issued by one CA, within their validity at `now`."""

    def __init__(self, ca_certificate: x509.Certificate) -> None:
        self.ca_certificate = ca_certificate

    def verify(self, der: bytes, now: At) -> VerifiedCertificate:
        cert = _verified_certificate(self.ca_certificate, der)
        name = cert.claims.name
        moment = _utcnow(now)
        if moment < cert.not_before:
            raise IdentityError(f"certificate of node {name} not valid before {cert.not_before}")
        if moment > cert.not_after:
            raise IdentityError(f"certificate of node {name} expired at {cert.not_after}")
        return cert


class CaBundleVerifier:
    """Node certificates directly issued by any CA of a trust bundle, within their validity at
    `now`. During a CA rotation the bundle holds the old CA and the new one, so certificates of
    both are accepted; once the old CA is dropped from the bundle its certificates are not."""

    def __init__(self, cas: Sequence[x509.Certificate]) -> None:
        if not cas:
            raise IdentityError("the CA bundle is empty")
        self.cas = tuple(cas)

    def verify(self, der: bytes, now: At) -> VerifiedCertificate:
        digest = hashlib.sha256(der).digest()
        for ca in self.cas:  # a certificate seen before: its CA without a failed signature check
            if (_ca_fingerprint(ca), digest) in _cert_cache:
                return CaVerifier(ca).verify(der, now)
        for ca in self.cas[:-1]:
            try:
                return CaVerifier(ca).verify(der, now)
            except NotFromCa:
                continue  # another CA of the bundle may have issued it
        return CaVerifier(self.cas[-1]).verify(der, now)


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


def as_verifier(
    trust: CertificateVerifier | x509.Certificate | Sequence[x509.Certificate],
) -> CertificateVerifier:
    """A verifier, given one, the CA certificate or the CA bundle to verify against."""
    if isinstance(trust, x509.Certificate):
        return CaVerifier(trust)
    if isinstance(trust, Sequence):
        return CaBundleVerifier(trust)
    return trust


def verify_node_certificate(
    ca_certificate: x509.Certificate, certificate: x509.Certificate, now: At
) -> PeerIdentity:
    """What a peer would accept of `certificate` at `now`: issued by the CA, a node certificate,
    within its validity; IdentityError with the reason otherwise (`lispmesh pki cert verify`)."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    cert = CaVerifier(ca_certificate).verify(der, now)
    return PeerIdentity(
        cert.claims.name, cert.claims.eids, cert.claims.rlocs, cert.fingerprint, cert.not_after
    )


def verify_proof(
    trust: CertificateVerifier | x509.Certificate,
    json_lcaf: JsonLcaf,
    transcript: KxTranscript,
    now: At,
    delegated: Callable[[str], Sequence[Eid]] | None = None,
) -> PeerIdentity:
    """Check a peer's proof at `now` (the caller's clock: nothing here reads one) against the
    transcript rebuilt from its message; `trust` is the certificate verifier, or the CA
    certificate for the default one. IdentityError with a precise reason for: malformed proof,
    key-id mismatch, certificate refused by the verifier (not from the CA, not yet valid or
    expired), signature mismatch, an EID (or pinned RLOC) the certificate does not cover.
    `delegated(name)`: EIDs the controller assigned to node `name` beyond its certificate's
    (app replicas placed on it), which its replies may claim too.
    """
    proof = parse_proof(json_lcaf)
    if proof.key_id != transcript.key_id:
        raise IdentityError(
            f"proof key-id {proof.key_id} does not match key-id {transcript.key_id}"
        )
    cert = as_verifier(trust).verify(proof.certificate_der, now)
    name = cert.claims.name
    try:
        cert.public_key.verify(proof.signature, transcript.encode(), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise IdentityError(f"signature does not match (node {name})") from None
    # A reply's EIDs are the signer's own (the certificate must cover them); a request's are
    # what it asks another node for.
    extra = delegated(name) if delegated is not None else ()
    for iid, prefix in transcript.eids if transcript.role == "reply" else ():
        if not _covered(cert.claims.eids, iid, prefix) and not _covered(extra, iid, prefix):
            raise IdentityError(f"EID {prefix} iid {iid} not in certificate of node {name}")
    if cert.claims.rlocs is not None:
        for rloc in transcript.rlocs:
            if not any(rloc in net for net in cert.claims.rlocs):
                raise IdentityError(f"RLOC {rloc} not in certificate of node {name}")
    return PeerIdentity(name, cert.claims.eids, cert.claims.rlocs, cert.fingerprint, cert.not_after)


def transcript_rlocs(addresses: Sequence[object]) -> tuple[IpAddr, ...]:
    """The IP addresses among `addresses` (helper to build a transcript from message fields)."""
    out: list[IpAddr] = []
    for a in addresses:
        if isinstance(a, IPv4Address | IPv6Address):
            out.append(a)
        elif isinstance(a, str):
            out.append(ip_address(a))
    return tuple(out)
