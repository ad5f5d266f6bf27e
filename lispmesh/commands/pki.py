"""`lispmesh pki ...`: a mesh CA and node certificates for nodes that run without a controller.

In the spirit of `nebula-cert`:

    lispmesh pki ca create --out keys/ca --name "edge mesh CA"      # ca.key (0600) + ca.crt
    lispmesh pki cert issue --ca keys/ca --name edge-1 --eid 10.1.0.0/24 --eid [7]fd00:1::/64 \\
        --out keys/edge-1                          # node.key made here (0600), node.crt, ca.crt
    lispmesh pki cert issue ... --public-key edge-1.pub   # the key was made on the node itself
    lispmesh pki cert show keys/edge-1/node.crt [--json]
    lispmesh pki cert verify keys/edge-1/node.crt --ca keys/ca/ca.crt [--json]

The files are what a node config's `identity:` names (key, cert, ca). An EID is `[IID]PREFIX`
(instance-id 0 without the brackets); `--rloc PREFIX` pins the node's locators (leave it out for
mobile nodes). `verify` checks what every peer checks in the key exchange: the CA's signature, a
node (end-entity) certificate, its validity now, and lispmesh's name and EID extensions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
from ipaddress import ip_network
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lispmesh.commands.options import Subparsers, group
from lispmesh.commands.output import print_json
from lispmesh.errors import CliError

_EID_RE = re.compile(r"(?:\[(\d+)\])?(\S+)\Z")


def _eid(text: str) -> tuple[int, Any]:
    match = _EID_RE.match(text)
    try:
        if match is None:
            raise ValueError
        iid = int(match.group(1) or 0)
        if iid >= 2**24:  # the LISP instance-id is 24 bits on the wire
            raise CliError(f"--eid {text}: instance-id {iid} is more than 24 bits")
        return iid, ip_network(match.group(2))
    except ValueError:
        raise CliError(
            f"--eid {text}: not [IID]PREFIX, e.g. 10.1.0.0/24 or [7]fd00:1::/64"
        ) from None


def _rloc(text: str) -> Any:
    try:
        return ip_network(text)
    except ValueError:
        raise CliError(f"--rloc {text}: not a prefix, e.g. 192.0.2.0/24") from None


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not 0 < days <= 36500:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days between 0 and 36500")
    return days


def _certificate(path: Path) -> x509.Certificate:
    from certs.files import read_certificate
    from certs.format import IdentityError

    try:
        return read_certificate(path)
    except IdentityError as exc:
        raise CliError(exc.reason) from None


def _public_key(path: Path) -> ec.EllipticCurvePublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise CliError(f"{path}: not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CliError(f"{path}: node keys must be ECDSA P-256")
    return key


# ---------------------------------------------------------------------------------------------


def _ca_create(args: argparse.Namespace) -> int:
    from certs.files import CA_CERT_FILE
    from certs.format import IdentityError
    from controller_api.ca import CertificateAuthority

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        out.chmod(0o700)
        ca = CertificateAuthority.create(out, args.name, valid_days=int(args.days))
    except IdentityError as exc:
        raise CliError(exc.reason) from None
    except OSError as exc:
        raise CliError(f"{out}: {exc.strerror}") from None
    until = ca.certificate.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"CA {args.name!r} in {out} (key 0600, {CA_CERT_FILE} valid until {until})")
    return 0


def _cert_issue(args: argparse.Namespace) -> int:
    from certs.files import CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE, write_certificate
    from certs.format import IdentityError
    from controller_api.ca import CertificateAuthority
    from mesh.identity import NodeIdentity

    eids = [_eid(e) for e in args.eid]
    rlocs = [_rloc(r) for r in args.rloc] if args.rloc else None
    out = Path(args.out or args.name)
    try:
        ca = CertificateAuthority.load(Path(args.ca))
    except IdentityError as exc:
        raise CliError(f"--ca {args.ca}: {exc.reason}") from None
    except OSError as exc:
        raise CliError(f"--ca {args.ca}: no CA there ({exc.strerror})") from None
    try:
        out.mkdir(parents=True, exist_ok=True)
        if args.public_key:
            public_key = _public_key(Path(args.public_key))
            key_note = f"for the key in {args.public_key}"
        else:
            # The key is made here, 0600, next to its certificate; an existing key is kept.
            public_key = NodeIdentity.load_or_create(out, args.name).public_key
            key_note = f"key {out / NODE_KEY_FILE} (0600)"
        cert = ca.issue(args.name, public_key, eids, rlocs, valid_days=args.days)
        write_certificate(out / NODE_CERT_FILE, cert)
        write_certificate(out / CA_CERT_FILE, ca.certificate)
    except IdentityError as exc:
        raise CliError(exc.reason) from None
    except OSError as exc:
        raise CliError(f"{out}: {exc.strerror}") from None
    until = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"node {args.name}: {out / NODE_CERT_FILE} until {until}, {key_note}")
    return 0


def _describe(cert: x509.Certificate) -> dict[str, Any]:
    from cryptography.hazmat.primitives import hashes

    from certs.format import IdentityError, certificate_claims

    try:
        claims = certificate_claims(cert)
    except IdentityError as exc:
        raise CliError(exc.reason) from None
    return {
        "name": claims.name,
        "eids": [f"[{iid}]{prefix}" for iid, prefix in claims.eids],
        "rlocs": None if claims.rlocs is None else [str(r) for r in claims.rlocs],
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fingerprint": cert.fingerprint(hashes.SHA256()).hex(),
    }


def _show_lines(doc: dict[str, Any]) -> None:
    print(f"node         {doc['name']}")
    print(f"EIDs         {', '.join(doc['eids'])}")
    print(f"RLOCs        {', '.join(doc['rlocs']) if doc['rlocs'] is not None else 'any'}")
    print(f"issuer       {doc['issuer']}")
    print(f"valid        {doc['not_before']} .. {doc['not_after']}")
    print(f"serial       {doc['serial']}")
    print(f"fingerprint  {doc['fingerprint']}")


def _cert_show(args: argparse.Namespace) -> int:
    doc = _describe(_certificate(Path(args.file)))
    if args.json:
        print_json(doc)
    else:
        _show_lines(doc)
    return 0


def _cert_verify(args: argparse.Namespace) -> int:
    from certs.format import IdentityError
    from mesh.identity import verify_node_certificate

    cert = _certificate(Path(args.file))
    ca = _certificate(Path(args.ca))
    try:
        verify_node_certificate(ca, cert, dt.datetime.now(dt.UTC))
    except IdentityError as exc:
        raise CliError(f"{args.file}: {exc.reason}") from None
    doc = _describe(cert)
    if args.json:
        print_json({**doc, "valid": True})
    else:
        print(f"{args.file}: valid node certificate of {doc['name']} until {doc['not_after']}")
    return 0


# ---------------------------------------------------------------------------------------------


def register(subparsers: Subparsers) -> None:
    _, sub = group(subparsers, "pki", "a mesh CA and node certificates (no controller needed)")
    _, ca_sub = group(sub, "ca", "the mesh CA")
    create = ca_sub.add_parser("create", help="a new CA: ca.key (0600) and ca.crt")
    create.add_argument("--out", required=True, help="directory for ca.key and ca.crt")
    create.add_argument("--name", default="lispmesh mesh CA", help="the CA's common name")
    create.add_argument("--days", type=_days, default=3650.0, help="lifetime (3650 days)")
    create.set_defaults(handler=_ca_create)

    _, cert_sub = group(sub, "cert", "node certificates")
    issue = cert_sub.add_parser("issue", help="a node certificate for a name and its EIDs")
    issue.add_argument("--ca", required=True, help="the CA directory (ca.key, ca.crt)")
    issue.add_argument("--name", required=True, help="the node's name")
    issue.add_argument(
        "--eid", action="append", required=True, help="[IID]PREFIX the node may claim (repeat)"
    )
    issue.add_argument("--rloc", action="append", help="pin the node's locators to PREFIX")
    issue.add_argument("--days", type=_days, default=365.0, help="lifetime (365 days)")
    issue.add_argument("--out", help="directory for node.key, node.crt, ca.crt (default: NAME)")
    issue.add_argument(
        "--public-key", help="certify this PEM public key instead of making a key here"
    )
    issue.set_defaults(handler=_cert_issue)

    show = cert_sub.add_parser("show", help="what a node certificate says")
    show.add_argument("file")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_cert_show)

    verify = cert_sub.add_parser("verify", help="would a peer accept this certificate now?")
    verify.add_argument("file")
    verify.add_argument("--ca", required=True, help="the mesh CA certificate (ca.crt)")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(handler=_cert_verify)
