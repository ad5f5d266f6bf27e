"""The node agent's state directory (default /var/lib/lispmesh).

node.key         the node's P-256 key (0600), made here, never sent anywhere (absent when the
                 key is in the TPM: see node/node_key.py)
node.crt         its certificate, issued by the controller at enrollment (and each renewal)
node.key.new     during a renewal only: the new pair, moved into place key first
node.crt.new
ca.crt           the controller CA (pinned at enrollment; the only root trusted)
agent.json       node id and name, the controller's join and API addresses, run dir
checkpoint.json  the last desired state applied (0600: it holds the site key)
checkpoint.sealed  instead, on a TPM node: the same, encrypted with a key sealed to the TPM's
                 PCRs (node/checkpoint_seal.py)
revoked          present once the controller revoked this node
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import json_format

from certs.files import write_certificate, write_private_key
from common.errors import LispmeshError
from common.files import write_file_atomic
from controller_api.gen.lispmesh.v1 import config_pb2

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("/var/lib/lispmesh")


class StateError(LispmeshError):
    """One line for the operator."""


@dataclass(frozen=True)
class Enrollment:
    node_id: str
    name: str
    controller: str  # the join address the node was given
    api_address: str  # host:port of the mutual-TLS API
    instance_id: int
    eid_prefixes: tuple[str, ...]
    enrolled_at: str
    identity: str = "file"  # where the node key lives: "tpm" or "file" (node.key)
    tpm: str = ""  # the TPM it joined with (device path or TCTI); `--tpm` may override it
    # Every controller replica's API address, api_address first (empty: one controller). The
    # agent moves along this list when the one it uses stops answering.
    api_addresses: tuple[str, ...] = ()

    def controllers(self) -> tuple[str, ...]:
        """The API addresses to try, in order."""
        rest = [a for a in self.api_addresses if a != self.api_address]
        return (self.api_address, *rest)


class CheckpointCipher(Protocol):
    """What keeps the checkpoint sealed (node/checkpoint_seal.py on a TPM node). Both raise
    StateError, one line."""

    def encrypt(self, plaintext: bytes) -> bytes: ...

    def decrypt(self, blob: bytes, where: str) -> bytes: ...


class StateDir:
    def __init__(self, path: Path, cipher: CheckpointCipher | None = None) -> None:
        self.path = path
        # Set on a TPM node: the checkpoint is then `checkpoint.sealed`, never plain text.
        self.cipher = cipher

    @property
    def key(self) -> Path:
        return self.path / "node.key"

    @property
    def cert(self) -> Path:
        return self.path / "node.crt"

    @property
    def new_key(self) -> Path:
        return self.path / "node.key.new"

    @property
    def new_cert(self) -> Path:
        return self.path / "node.crt.new"

    @property
    def ca(self) -> Path:
        return self.path / "ca.crt"

    @property
    def agent_file(self) -> Path:
        return self.path / "agent.json"

    @property
    def checkpoint_file(self) -> Path:
        return self.path / "checkpoint.json"

    @property
    def sealed_checkpoint_file(self) -> Path:
        return self.path / "checkpoint.sealed"

    @property
    def revoked_file(self) -> Path:
        return self.path / "revoked"

    def prepare(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            os.chmod(self.path, 0o700)
        except OSError as exc:
            raise StateError(f"state dir {self.path}: {exc.strerror}") from None

    def install_renewal(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        """Put a renewed key and certificate in place. Both are written beside the old pair
        first, then moved key first, so a crash anywhere leaves what `finish_renewal` can turn
        into a matching pair (the new one, or the old one if the new certificate never came)."""
        write_private_key(self.new_key, key)
        write_certificate(self.new_cert, cert)
        os.replace(self.new_key, self.key)
        os.replace(self.new_cert, self.cert)

    def install_certificate(self, cert: x509.Certificate) -> None:
        """Put a renewed certificate for the same (TPM-resident) key in place, atomically."""
        write_certificate(self.new_cert, cert)
        os.replace(self.new_cert, self.cert)

    def finish_renewal(self) -> None:
        """After a crash during `install_renewal`: complete it, or drop a half-made one."""
        if self.new_cert.exists():
            if self.new_key.exists():
                os.replace(self.new_key, self.key)
            os.replace(self.new_cert, self.cert)
            log.warning("%s: completed a renewal interrupted by a crash", self.path)
        elif self.new_key.exists():
            self.new_key.unlink()  # its certificate never arrived: the old pair stands

    def enrolled(self) -> bool:
        return self.agent_file.exists() and self.cert.exists()

    def load_enrollment(self) -> Enrollment:
        if not self.agent_file.exists():
            raise StateError(f"no node is enrolled in {self.path} (no {self.agent_file.name})")
        try:
            data = json.loads(self.agent_file.read_text())
            data["eid_prefixes"] = tuple(data["eid_prefixes"])
            data["api_addresses"] = tuple(data.get("api_addresses", ()))
            return Enrollment(**data)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise StateError(f"{self.agent_file}: unreadable enrollment ({exc})") from None

    def save_enrollment(self, enrollment: Enrollment) -> None:
        text = json.dumps(asdict(enrollment), indent=2) + "\n"
        write_file_atomic(self.agent_file, text.encode(), 0o644)

    def load_checkpoint(self) -> config_pb2.DesiredState | None:
        """The last desired state applied, or None (with one warning line) when there is none
        this node can use: never an exception for a bad file, so a node never crash-loops on it."""
        if self.cipher is not None:
            return self._load_sealed_checkpoint(self.cipher)
        try:
            text = self.checkpoint_file.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"{self.checkpoint_file}: {exc.strerror}") from None
        except ValueError as exc:  # not UTF-8: a torn write or a disk error
            self._unusable_checkpoint(self.checkpoint_file, exc)
            return None
        return self._parse_checkpoint(text, self.checkpoint_file)

    def _load_sealed_checkpoint(self, cipher: CheckpointCipher) -> config_pb2.DesiredState | None:
        if self.checkpoint_file.exists():
            # A plain checkpoint on a TPM node is not this node's (or predates sealing): taking
            # it would let whoever wrote the disk choose the node's configuration.
            log.warning("%s: plain checkpoint ignored and removed (this node's checkpoint is "
                        "sealed to its TPM)", self.checkpoint_file)  # fmt: skip
            self.checkpoint_file.unlink(missing_ok=True)
        try:
            blob = self.sealed_checkpoint_file.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"{self.sealed_checkpoint_file}: {exc.strerror}") from None
        try:
            text = cipher.decrypt(blob, str(self.sealed_checkpoint_file)).decode()
        except (StateError, UnicodeDecodeError) as exc:
            log.warning(
                "checkpoint not opened: %s; starting without it (the controller sends the "
                "desired state once this node attests)",
                exc,
            )
            return None
        return self._parse_checkpoint(text, self.sealed_checkpoint_file)

    def _parse_checkpoint(self, text: str, path: Path) -> config_pb2.DesiredState | None:
        try:
            desired = config_pb2.DesiredState()
            json_format.Parse(text, desired)
            return desired
        except json_format.ParseError as exc:
            self._unusable_checkpoint(path, exc)
            return None

    @staticmethod
    def _unusable_checkpoint(path: Path, exc: Exception) -> None:
        # A torn or foreign file: better no checkpoint than a wrong one, and never a crash loop.
        log.warning("%s: unreadable checkpoint ignored (%s)", path, exc)

    def save_checkpoint(self, desired: config_pb2.DesiredState) -> None:
        doc: dict[str, Any] = json_format.MessageToDict(desired, preserving_proto_field_name=True)
        text = (json.dumps(doc, indent=2) + "\n").encode()
        if self.cipher is None:
            write_file_atomic(self.checkpoint_file, text, 0o600)
            return
        try:
            blob = self.cipher.encrypt(text)
        except StateError as exc:
            log.warning("checkpoint not saved: %s", exc)
            return
        write_file_atomic(self.sealed_checkpoint_file, blob, 0o600)

    def forget_checkpoint(self) -> None:
        self.checkpoint_file.unlink(missing_ok=True)
        self.sealed_checkpoint_file.unlink(missing_ok=True)

    def mark_revoked(self, message: str) -> None:
        write_file_atomic(self.revoked_file, (message + "\n").encode(), 0o644)

    def revoked_message(self) -> str | None:
        try:
            return self.revoked_file.read_text().strip()
        except OSError:
            return None
