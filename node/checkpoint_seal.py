"""A TPM node's checkpoint, encrypted with a key that only its TPM opens, and only while the PCRs
hold the values the controller last accepted.

The checkpoint holds the site key, so on a TPM node it is not a plain file: it is
`checkpoint.sealed`, AES-256-GCM under a random data key, and that data key is sealed to the TPM
under PolicyPCR (node/tpm/seal.py) and stored beside the ciphertext. The key is sealed to the PCR
values of the last quote the controller accepted (`reseal`, after each accepted attestation), so:

- a restart with the same measurements opens it (the node comes back with the controller away);
- a node whose measurements changed since (a new boot loader, a bootkit, a PCR extended by hand)
  cannot open it: one line names the PCRs, and the agent starts without it and gets its desired
  state from the controller once it attests (quarantined until the policy allows the change);
- a legitimate update, once the controller accepts the new measurements, is sealed to at once.

A disk copied to another machine opens nothing: the sealed key loads only under this TPM's
storage key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.state import StateError
from node.tpm import SealedSecret, Tpm, TpmError, seal, unseal

VERSION = 1
# Bound into every ciphertext, so a blob made for anything else never decrypts as a checkpoint.
AAD = b"lispmesh node checkpoint v1"


class CheckpointSeal:
    """The checkpoint cipher of `node.state.StateDir` on a TPM node (see the module text)."""

    def __init__(self, tpm: Tpm) -> None:
        self.tpm = tpm
        self._key: bytes | None = None
        self._sealed: SealedSecret | None = None

    @property
    def sealed_pcrs(self) -> dict[int, bytes] | None:
        """The PCR values the data key is sealed to (None until it is opened or sealed)."""
        return dict(self._sealed.pcrs) if self._sealed is not None else None

    def encrypt(self, plaintext: bytes) -> bytes:
        if self._key is None or self._sealed is None:
            raise StateError("no checkpoint key sealed to this TPM yet (the node has not attested)")
        nonce = os.urandom(12)
        ciphertext = AESGCM(self._key).encrypt(nonce, plaintext, AAD)
        return (
            json.dumps(
                {
                    "version": VERSION,
                    "sealed_key": json.loads(self._sealed.to_bytes()),
                    "nonce": nonce.hex(),
                    "ciphertext": ciphertext.hex(),
                },
                indent=1,
            ).encode()
            + b"\n"
        )

    def decrypt(self, blob: bytes, where: str) -> bytes:
        """The checkpoint in `blob` (the file `where`); StateError (one line, naming the PCRs
        that changed when that is why) if this TPM does not open it."""
        try:
            doc = json.loads(blob)
            if doc.get("version") != VERSION:
                raise ValueError(f"unsupported version {doc.get('version')!r}")
            sealed_doc = json.dumps(doc["sealed_key"]).encode()
            nonce, ciphertext = bytes.fromhex(doc["nonce"]), bytes.fromhex(doc["ciphertext"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateError(f"{where}: not a sealed checkpoint ({exc})") from None
        try:
            sealed = SealedSecret.from_bytes(sealed_doc, where)
            with self.tpm.lock:
                key = unseal(self.tpm, sealed)
        except TpmError as exc:  # SealRefused names the PCRs that changed
            raise StateError(f"{where}: {exc}") from None
        try:
            plaintext = AESGCM(key).decrypt(nonce, ciphertext, AAD)
        except (InvalidTag, ValueError):
            raise StateError(f"{where}: the checkpoint does not decrypt (altered?)") from None
        self._key, self._sealed = key, sealed
        return plaintext

    def reseal(self, values: Mapping[int, bytes]) -> bool:
        """Seal a new data key to `values` (the PCRs of a quote the controller just accepted),
        unless the key is sealed to exactly these already. True when it re-sealed: the caller
        saves the checkpoint again with the new key."""
        if self._key is not None and self._sealed is not None and self._sealed.pcrs == values:
            return False
        key = os.urandom(32)
        with self.tpm.lock:
            sealed = seal(self.tpm, key, sorted(values), values)
        self._key, self._sealed = key, sealed
        return True
