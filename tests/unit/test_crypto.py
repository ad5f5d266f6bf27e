"""lisp.crypto: X25519, the RFC 8061 KDF (lispers.net variant), AEAD sealing, replay window."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lisp.crypto import (
    CS_AES128_GCM,
    CS_CHACHA20_POLY1305,
    MIN_SEALED_LEN,
    OVERHEAD,
    SUPPORTED_SUITES,
    CryptoError,
    EcdhKeyPair,
    PacketCipher,
    ReplayError,
    ReplayWindow,
    derive_data_key,
    derive_key_material,
    kdf_context,
    packet_key_id,
    with_key_id,
)
from lisp.data_header import DataHeader

# RFC 7748 §6.1 X25519 test vector.
ALICE_PRIV = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUB = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIV = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUB = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")

SUITES = sorted(SUPPORTED_SUITES)
HEADER = DataHeader(nonce=0x123456, instance_id=7, lsb=1).encode()


def _hand_kdf(local_pub: bytes, remote_pub: bytes, shared: bytes) -> bytes:
    """lisp-wire.md §2, written out independently of lisp.crypto."""
    lpub = int(local_pub.hex(), 16)
    rpub = int(remote_pub.hex(), 16)
    context = "0001" + "lisp-crypto" + hex(lpub ^ rpub)[2:] + "0100"
    return hmac.new(context.encode(), shared, hashlib.sha256).digest()


def _cipher(suite: int = CS_AES128_GCM, key_id: int = 1) -> PacketCipher:
    alice, bob = EcdhKeyPair.generate(), EcdhKeyPair.generate()
    return PacketCipher(suite, derive_data_key(alice, bob.public, suite), key_id)


# -- key agreement and KDF --------------------------------------------------------------------


def test_x25519_matches_rfc7748_vector() -> None:
    alice = EcdhKeyPair.from_private_bytes(ALICE_PRIV)
    bob = EcdhKeyPair.from_private_bytes(BOB_PRIV)
    assert alice.public == ALICE_PUB and bob.public == BOB_PUB
    assert alice.shared_secret(BOB_PUB) == SHARED == bob.shared_secret(ALICE_PUB)


def test_kdf_matches_hand_computation() -> None:
    alice = EcdhKeyPair.from_private_bytes(ALICE_PRIV)
    material = _hand_kdf(ALICE_PUB, BOB_PUB, SHARED)
    assert derive_key_material(alice, BOB_PUB) == material
    assert derive_data_key(alice, BOB_PUB, CS_AES128_GCM) == material[:16]
    assert derive_data_key(alice, BOB_PUB, CS_CHACHA20_POLY1305) == material
    # Pinned (RFC 7748 keys), so a change of the formula shows up even if it stays symmetric.
    assert kdf_context(ALICE_PUB, BOB_PUB) == (
        b"0001lisp-crypto5bbe2b74f24d66e0a7d01c1e58dac26d323c79c57d407db94658d79ac51365250100"
    )
    assert material.hex() == "a21cecade3a73ffa12ea77e74cd31b17449396535867cbcf9994c4aed46bca3c"


@pytest.mark.parametrize("suite", SUITES)
def test_kdf_is_symmetric(suite: int) -> None:
    itr, etr = EcdhKeyPair.generate(), EcdhKeyPair.generate()
    key = derive_data_key(itr, etr.public, suite)
    assert key == derive_data_key(etr, itr.public, suite)
    assert len(key) == (16 if suite == CS_AES128_GCM else 32)
    assert key != derive_data_key(EcdhKeyPair.generate(), etr.public, suite)


def test_kdf_context_hex_is_lowercase_and_unpadded() -> None:
    one = bytes(31) + b"\x01"
    assert kdf_context(one, bytes(32)) == b"0001lisp-crypto10100"
    assert kdf_context(b"\xab" + bytes(31), bytes(32)).startswith(b"0001lisp-cryptoab00")
    assert kdf_context(ALICE_PUB, BOB_PUB) == kdf_context(BOB_PUB, ALICE_PUB)


@pytest.mark.parametrize(
    "bad",
    [
        bytes(32),  # the identity: all-zero shared secret
        b"\x01" + bytes(31),  # order-1 point
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    ],
)
def test_low_order_public_key_rejected(bad: bytes) -> None:
    with pytest.raises(CryptoError) as info:
        derive_data_key(EcdhKeyPair.generate(), bad, CS_AES128_GCM)
    assert info.value.reason == "public-key"


@pytest.mark.parametrize("length", [0, 31, 33])
def test_public_key_length_checked(length: int) -> None:
    with pytest.raises(CryptoError):
        EcdhKeyPair.generate().shared_secret(b"\x09" * length)


def test_unsupported_suite_rejected() -> None:
    with pytest.raises(CryptoError) as info:
        derive_data_key(EcdhKeyPair.generate(), EcdhKeyPair.generate().public, 2)
    assert info.value.reason == "suite"
    with pytest.raises(CryptoError):
        PacketCipher(2, bytes(16), 1)
    with pytest.raises(CryptoError):
        PacketCipher(CS_AES128_GCM, bytes(32), 1)  # wrong key size for the suite


def test_repr_hides_secrets() -> None:
    pair = EcdhKeyPair.from_private_bytes(ALICE_PRIV)
    assert ALICE_PRIV.hex() not in repr(pair)
    key = bytes(range(16))
    assert key.hex() not in repr(PacketCipher(CS_AES128_GCM, key, 1))


# -- sealing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("size", [0, 1, 40, 1400, 9000])
def test_seal_open_round_trip(suite: int, size: int) -> None:
    cipher = _cipher(suite, key_id=2)
    inner = bytes(range(256)) * (size // 256) + bytes(size % 256)
    packet = cipher.seal(HEADER, inner, 77)
    assert len(packet) == len(HEADER) + OVERHEAD + size == 8 + cipher.overhead + size
    assert packet_key_id(packet) == 2
    assert DataHeader.decode(packet).key_id == 2
    assert DataHeader.decode(packet).instance_id == 7  # everything else of the header kept
    assert struct.unpack_from("!Q", packet, 12)[0] == 77  # IV = salt(4) || counter(8)
    assert cipher.open(packet) == (77, inner)


def test_iv_salt_is_per_key_and_fixed() -> None:
    cipher = _cipher()
    a, b = cipher.seal(HEADER, b"x", 1), cipher.seal(HEADER, b"x", 2)
    assert a[8:12] == b[8:12] and a[12:20] != b[12:20]


def test_both_ends_of_an_exchange_interoperate() -> None:
    itr, etr = EcdhKeyPair.generate(), EcdhKeyPair.generate()
    sender = PacketCipher(CS_AES128_GCM, derive_data_key(itr, etr.public, CS_AES128_GCM), 1)
    receiver = PacketCipher(CS_AES128_GCM, derive_data_key(etr, itr.public, CS_AES128_GCM), 1)
    assert receiver.open(sender.seal(HEADER, b"hello", 5)) == (5, b"hello")


@pytest.mark.parametrize("suite", SUITES)
def test_tampering_any_byte_is_detected(suite: int) -> None:
    cipher = _cipher(suite)
    packet = cipher.seal(HEADER, b"inner packet bytes " * 2, 9)
    for i in range(len(packet)):
        for flip in (0x01, 0x80):
            bad = bytearray(packet)
            bad[i] ^= flip
            with pytest.raises(CryptoError):
                cipher.open(bytes(bad))


def test_truncation_and_extension_detected() -> None:
    cipher = _cipher()
    packet = cipher.seal(HEADER, b"abc", 1)
    for n in range(len(packet)):
        with pytest.raises(CryptoError):
            cipher.open(packet[:n])
    with pytest.raises(CryptoError) as info:
        cipher.open(packet[: MIN_SEALED_LEN - 1])
    assert info.value.reason == "short"
    with pytest.raises(CryptoError):
        cipher.open(packet + b"\x00")


def test_wrong_key_id_and_wrong_key() -> None:
    cipher = _cipher(key_id=1)
    packet = cipher.seal(HEADER, b"abc", 1)
    with pytest.raises(CryptoError) as info:
        cipher.open(with_key_id(packet[:8], 2) + packet[8:])
    assert info.value.reason == "key-id"
    other = _cipher(key_id=1)
    with pytest.raises(CryptoError) as info:
        other.open(packet)
    assert info.value.reason == "tag"


def test_key_id_header_helpers() -> None:
    assert packet_key_id(with_key_id(HEADER, 3)) == 3
    assert with_key_id(with_key_id(HEADER, 3), 0) == HEADER
    assert with_key_id(HEADER, 1)[1:] == HEADER[1:]
    assert packet_key_id(b"") == 0
    with pytest.raises(CryptoError):
        with_key_id(HEADER, 4)
    with pytest.raises(CryptoError):
        PacketCipher(CS_AES128_GCM, bytes(16), 0)


def test_seal_validates_header_and_counter() -> None:
    cipher = _cipher()
    with pytest.raises(CryptoError):
        cipher.seal(HEADER[:7], b"x", 1)
    with pytest.raises(CryptoError):
        cipher.seal(HEADER + b"\x00", b"x", 1)
    with pytest.raises(CryptoError):
        cipher.seal(HEADER, b"x", 2**64)
    with pytest.raises(CryptoError):
        cipher.seal(HEADER, b"x", -1)
    # The hard limit: a key seals REJECT_AFTER_COUNTER packets and not one more.
    assert cipher.open(cipher.seal(HEADER, b"x", 2**32)) == (2**32, b"x")
    with pytest.raises(CryptoError, match="hard limit"):
        cipher.seal(HEADER, b"x", 2**32 + 1)


def test_replay_error_is_not_a_crypto_error() -> None:
    assert not issubclass(ReplayError, CryptoError)
    assert not issubclass(CryptoError, ReplayError)


# -- replay window ----------------------------------------------------------------------------


def test_replay_in_order_and_duplicates() -> None:
    window = ReplayWindow()
    assert all(window.accept(c) for c in range(10_000))
    assert not any(window.accept(c) for c in range(9_000, 10_000))
    assert window.highest == 9_999


def test_replay_reordering_within_window() -> None:
    window = ReplayWindow(2048)
    assert window.accept(5000)
    for c in (4999, 3000, 4500, 2953, 5001, 4998):
        assert window.accept(c), c
        assert not window.accept(c), c


def test_replay_window_edges_at_least_2048() -> None:
    for size in (2048, 4096):
        window = ReplayWindow(size)
        assert window.size >= 2048
        top = 100_000
        assert window.accept(top)
        assert window.accept(top - size + 1)  # the oldest counter still inside
        assert not window.accept(top - size)  # just outside
        assert not window.accept(0)


def test_replay_far_jumps_move_the_window() -> None:
    window = ReplayWindow(4096)
    assert window.accept(1)
    assert window.accept(10**12)
    assert not window.accept(1)  # now far too old
    assert window.accept(10**12 - 100)
    assert not window.accept(10**12 - 100)
    assert window.accept(2**64 - 1)
    assert not window.accept(2**64 - 1)
    assert window.accept(2**64 - 4096)
    assert not window.accept(2**64 - 4097)


def test_replay_window_size_rounds_up() -> None:
    assert ReplayWindow(100).size == 128
    with pytest.raises(ValueError):
        ReplayWindow(10)


@settings(max_examples=300, deadline=None)
@given(
    size=st.sampled_from([64, 128, 2048, 4096]),
    steps=st.lists(
        st.one_of(
            st.integers(0, 20_000),
            st.integers(-200, 70).map(lambda d: ("rel", d)),
        ),
        max_size=300,
    ),
)
def test_replay_window_matches_set_model(size: int, steps: list[int | tuple[str, int]]) -> None:
    window = ReplayWindow(size)
    seen: set[int] = set()
    highest = -1
    for step in steps:
        counter = max(0, highest + step[1]) if isinstance(step, tuple) else step
        expected = counter not in seen and counter > highest - window.size
        assert window.accept(counter) == expected, (counter, highest)
        if expected:
            seen.add(counter)
            highest = max(highest, counter)
