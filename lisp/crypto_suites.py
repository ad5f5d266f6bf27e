"""RFC 8061 cipher-suite numbers this project speaks, and their names in config files."""

from __future__ import annotations

from typing import Final

# CS 2 (X25519 + AES-128-CBC + HMAC-SHA-256) exists only in the lispers.net interop profile
# (lisp/lispers_profile.py), so it has no config-file name here.
CS_AES128_CBC_SHA256: Final = 2
CS_AES128_GCM: Final = 5
CS_CHACHA20_POLY1305: Final = 6

CIPHER_SUITE_NAMES: dict[int, str] = {
    CS_AES128_GCM: "aes128-gcm",
    CS_CHACHA20_POLY1305: "chacha20-poly1305",
}
