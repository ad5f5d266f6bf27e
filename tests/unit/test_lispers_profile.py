"""lispers.net's RFC 8061 framing (lisp/lispers_profile.py) against the golden vector that
lispers.net's own `lisp_packet.encrypt` produced (../shared/reference/lisp-wire.md §2.1)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lisp.crypto import CryptoError, EcdhKeyPair, derive_key_material
from lisp.crypto_suites import CS_AES128_CBC_SHA256, CS_AES128_GCM
from lisp.lispers_profile import LispersCipher, inner_length, lispers_keys

ENCRYPT_KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
ICV_KEY = bytes.fromhex("00000000abababababababababababababababab")
INNER = bytes.fromhex(
    "4500005400004000400100000a63020a0a63010a0800f7ff0001000100000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
)
HEADER = bytes.fromhex("8112345600000000")
SEALED = bytes.fromhex(
    "6e7686087d9fc651af92e7c295d1b47a9817c66e82b44615f6be961705dd16153dfb3d829443d2430f3bbc89"
    "1bd9665a66559db23547a43d331663dd83c7520b0458abc06015e6cc6547ac9f3157884be6e986215dfec97c"
    "8c323d40dec34464420263bf067f89b3cb9cc5ca9f6cb75006e87710a0b3315af5fdf44105eec1ff6ba41a16"
    "47e9a762a5dd7563115c104e"
)
PACKET = HEADER + SEALED


def gcm() -> LispersCipher:
    return LispersCipher(CS_AES128_GCM, ENCRYPT_KEY, ICV_KEY)


def test_the_vector_has_the_documented_shape() -> None:
    assert len(INNER) == 84 and len(SEALED) == 12 + 96 + 16 + 20


def test_opens_the_packet_lispers_net_sealed() -> None:
    assert gcm().open(PACKET) == INNER


def test_seals_the_same_bytes_as_lispers_net_given_its_iv() -> None:
    assert gcm().seal(HEADER, INNER, SEALED[:12]) == PACKET


@pytest.mark.parametrize("offset", [0, 7, 8, 19, 20, 100, 131, len(PACKET) - 1])
def test_any_flipped_bit_is_refused_before_decryption(offset: int) -> None:
    tampered = bytearray(PACKET)
    tampered[offset] ^= 0x01
    with pytest.raises(CryptoError) as refused:
        gcm().open(bytes(tampered))
    assert refused.value.reason == "tag"


def test_the_wrong_icv_key_is_refused() -> None:
    with pytest.raises(CryptoError):
        LispersCipher(CS_AES128_GCM, ENCRYPT_KEY, bytes(20)).open(PACKET)


def test_keys_agree_on_both_ends_and_differ_from_the_rfc_framing() -> None:
    a, b = EcdhKeyPair.generate(), EcdhKeyPair.generate()
    encrypt_key, icv_key = lispers_keys(a, b.public)
    assert (encrypt_key, icv_key) == lispers_keys(b, a.public)
    assert len(encrypt_key) == 16 and len(icv_key) == 20 and icv_key[:4] == bytes(4)
    # The hashed shared secret makes lispers.net's keys differ from the RFC derivation.
    assert encrypt_key != derive_key_material(a, b.public)[:16]


def _ipv6_packet(payload: bytes) -> bytes:
    return (
        bytes([0x60, 0, 0, 0])
        + len(payload).to_bytes(2, "big")
        + bytes([17, 64])
        + bytes(32)
        + payload
    )


@pytest.mark.parametrize("suite", [CS_AES128_GCM, CS_AES128_CBC_SHA256])
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 1000])
def test_round_trip_removes_the_space_padding(suite: int, size: int) -> None:
    a, b = EcdhKeyPair.generate(), EcdhKeyPair.generate()
    sender = LispersCipher(suite, *lispers_keys(a, b.public))
    receiver = LispersCipher(suite, *lispers_keys(b, a.public))
    inner = _ipv6_packet(os.urandom(size))
    packet = sender.seal(HEADER, inner, os.urandom(sender.iv_len))
    padded = len(inner) + (-len(inner) % 16)
    tag = 16 if suite == CS_AES128_GCM else 0
    assert len(packet) == 8 + sender.iv_len + padded + tag + 20
    assert receiver.open(packet) == inner


def test_cbc_icv_covers_header_iv_and_ciphertext() -> None:
    cipher = LispersCipher(CS_AES128_CBC_SHA256, ENCRYPT_KEY, ICV_KEY)
    packet = cipher.seal(HEADER, INNER, bytes(range(16)))
    for offset in (0, 8, 24, len(packet) - 21):
        tampered = bytearray(packet)
        tampered[offset] ^= 0x80
        with pytest.raises(CryptoError):
            cipher.open(bytes(tampered))


def test_an_inner_length_that_does_not_fit_the_padding_is_malformed() -> None:
    with pytest.raises(CryptoError) as refused:
        inner_length(INNER[:2] + (200).to_bytes(2, "big") + INNER[4:] + b" " * 12)
    assert refused.value.reason == "malformed"


SUITES = st.sampled_from([CS_AES128_GCM, CS_AES128_CBC_SHA256])


@given(st.binary(max_size=300), SUITES)
def test_any_bytes_raise_only_crypto_error(raw: bytes, suite: int) -> None:
    cipher = LispersCipher(suite, ENCRYPT_KEY, ICV_KEY)
    with contextlib.suppress(CryptoError):
        cipher.open(raw)


@given(st.binary(max_size=300), SUITES)
def test_any_body_under_a_valid_icv_raises_only_crypto_error(body: bytes, suite: int) -> None:
    # Past the ICV: the decryption and the inner-length parsing see arbitrary plaintext.
    cipher = LispersCipher(suite, ENCRYPT_KEY, ICV_KEY)
    sealed = HEADER + bytes(cipher.iv_len) + body
    icv = hmac.new(ICV_KEY, sealed, hashlib.sha256).digest()[:20]
    try:
        inner = cipher.open(sealed + icv)
    except CryptoError:
        return
    assert len(inner) <= len(body)
