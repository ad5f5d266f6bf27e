"""Tokens made straight in the state dir, with or without the controller running: for
provisioning (cloud-init, labs) where the node's command line is written before the controller
answers. Needs the same file access as the controller itself (root on its machine)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from controller_api.pki import CA_DIR
from controller_api.server import DB_FILE
from controller_api.store import SqliteStore, TokenRow
from controller_api.tokens import JoinToken, ca_pin, new_token
from mesh.identity import CA_KEY_FILE, CertificateAuthority


def create_token(
    state_dir: Path,
    ttl: float,
    max_uses: int,
    tags: tuple[str, ...] = (),
    description: str = "",
) -> tuple[JoinToken, TokenRow]:
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    ca_dir = state_dir / CA_DIR
    if (ca_dir / CA_KEY_FILE).exists():
        ca = CertificateAuthority.load(ca_dir)
    else:
        ca = CertificateAuthority.create(ca_dir, "lispmesh controller CA")
    token = new_token(ca_pin(ca.certificate))
    store = SqliteStore(state_dir / DB_FILE)
    try:
        now = time.time()
        row = store.add_token(
            token.token_id, token.secret_hash, now, now + ttl, max_uses, tags, description
        )
    finally:
        store.close()
    return token, row
