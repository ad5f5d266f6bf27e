"""`lispmesh pki`: a CA, node certificates, show and verify; every bad input is one line."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs.files import read_certificate, read_private_key
from certs.format import certificate_claims
from lispmesh.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["pki", *argv])
    except SystemExit as exc:  # argparse errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_ca_then_node_certificates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = tmp_path / "ca"
    assert run(capsys, "ca", "create", "--out", str(ca), "--name", "t")[0] == 0
    assert (ca / "ca.key").stat().st_mode & 0o777 == 0o600
    code, out, _ = run(capsys, "cert", "issue", "--ca", str(ca), "--name", "e1", "--eid",
                       "10.1.0.0/24", "--eid", "[7]fd00:1::/64", "--rloc", "192.0.2.0/24",
                       "--days", "30", "--out", str(tmp_path / "e1"))  # fmt: skip
    assert code == 0 and "node e1" in out
    cert = read_certificate(tmp_path / "e1" / "node.crt")
    key = read_private_key(tmp_path / "e1" / "node.key")  # refuses anything but 0600
    assert cert.public_key() == key.public_key()
    claims = certificate_claims(cert)
    assert claims.name == "e1" and [(i, str(p)) for i, p in claims.eids] == [
        (0, "10.1.0.0/24"), (7, "fd00:1::/64")
    ]  # fmt: skip
    assert [str(r) for r in claims.rlocs or ()] == ["192.0.2.0/24"]
    lifetime = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=29) < lifetime <= dt.timedelta(days=30)
    code, out, _ = run(capsys, "cert", "show", str(tmp_path / "e1" / "node.crt"), "--json")
    assert code == 0 and json.loads(out)["eids"] == ["[0]10.1.0.0/24", "[7]fd00:1::/64"]
    code, out, _ = run(capsys, "cert", "verify", str(tmp_path / "e1" / "node.crt"),
                       "--ca", str(ca / "ca.crt"))  # fmt: skip
    assert code == 0 and "valid node certificate of e1" in out


def test_a_key_made_elsewhere_is_certified_without_its_private_half(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "ca", "create", "--out", str(tmp_path / "ca"))
    key = ec.generate_private_key(ec.SECP256R1())
    pub = tmp_path / "e2.pub"
    pub.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    code, _, err = run(capsys, "cert", "issue", "--ca", str(tmp_path / "ca"), "--name", "e2",
                       "--eid", "10.2.0.0/24", "--public-key", str(pub),
                       "--out", str(tmp_path / "e2"))  # fmt: skip
    assert code == 0, err
    assert read_certificate(tmp_path / "e2" / "node.crt").public_key() == key.public_key()
    assert not (tmp_path / "e2" / "node.key").exists()


def test_another_cas_certificate_fails_verification(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for ca in ("a", "b"):
        run(capsys, "ca", "create", "--out", str(tmp_path / ca))
    run(capsys, "cert", "issue", "--ca", str(tmp_path / "b"), "--name", "x", "--eid",
        "10.0.0.0/24", "--out", str(tmp_path / "x"))  # fmt: skip
    code, _, err = run(capsys, "cert", "verify", str(tmp_path / "x" / "node.crt"),
                       "--ca", str(tmp_path / "a" / "ca.crt"))  # fmt: skip
    assert code == 1 and err.strip().splitlines() == [
        f"lispmesh: error: {tmp_path}/x/node.crt: certificate of CN=x not issued by the mesh CA"
    ]
    # A CA certificate is no node certificate.
    code, _, err = run(capsys, "cert", "verify", str(tmp_path / "a" / "ca.crt"),
                       "--ca", str(tmp_path / "a" / "ca.crt"))  # fmt: skip
    assert code == 1 and "not a node (end-entity) certificate" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["cert", "issue", "--name", "n", "--eid", "10.0.0.0/33"], "--eid 10.0.0.0/33: not"),
        (["cert", "issue", "--name", "n", "--eid", "[99999999]10.0.0.0/8"], "more than 24 bits"),
        (["cert", "issue", "--name", "bad name", "--eid", "10.0.0.0/8"], "bad name"),
        (["cert", "issue", "--name", "n", "--eid", "10.0.0.0/8", "--rloc", "x"], "--rloc x"),
        (["ca", "create"], "a CA already exists"),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    run(capsys, "ca", "create", "--out", str(tmp_path / "ca"))
    where = ["--ca", str(tmp_path / "ca")] if argv[0] == "cert" else ["--out", str(tmp_path / "ca")]
    code, _, err = run(
        capsys, *argv, *where, *(["--out", str(tmp_path / "n")] * (argv[0] == "cert"))
    )
    assert code == 1 and len(err.strip().splitlines()) == 1 and message in err, err
    assert "Traceback" not in err


def test_unreadable_files_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.crt"
    garbage.write_bytes(b"\x00\xff not a certificate")
    for argv in (["cert", "show", str(garbage)], ["cert", "show", str(tmp_path / "none")],
                 ["cert", "issue", "--ca", str(tmp_path / "none"), "--name", "n", "--eid",
                  "10.0.0.0/8"]):  # fmt: skip
        code, _, err = run(capsys, *argv)
        assert code == 1 and len(err.strip().splitlines()) == 1, err
    code, _, err = run(capsys, "ca", "create", "--out", str(tmp_path / "c"), "--days", "0")
    assert code == 2 and "between 0 and 36500" in err
