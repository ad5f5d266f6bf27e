"""Tokens made straight in the state dir, with or without the controller running: for
provisioning (cloud-init, labs) where the node's command line is written before the controller
answers. Needs the same file access as the controller itself (root on its machine)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from controller_api.pki import CA_DIR, tls_ca
from controller_api.settings import StoreSettings
from controller_api.store import TokenRow
from controller_api.store_backend import open_store
from controller_api.tokens import JoinToken, ca_pin, new_token


def create_token(
    state_dir: Path,
    ttl: float,
    max_uses: int,
    tags: tuple[str, ...] = (),
    description: str = "",
    store_settings: StoreSettings | None = None,
) -> tuple[JoinToken, TokenRow]:
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    store = open_store(store_settings or StoreSettings(), state_dir)
    try:
        # The CA of the controller's TLS certificate: during a CA rotation still the old one.
        token = new_token(ca_pin(tls_ca(store, state_dir / CA_DIR)))
        now = time.time()
        row = store.add_token(
            token.token_id, token.secret_hash, now, now + ttl, max_uses, tags, description
        )
    finally:
        store.close()
    return token, row
