"""lisp.keyring: make-before-break rekeying over key-ids 1..3, limits, drop reasons."""

from __future__ import annotations

import itertools

import pytest

from lisp.crypto import (
    CS_AES128_GCM,
    CS_CHACHA20_POLY1305,
    CryptoError,
    EcdhKeyPair,
    PacketCipher,
    ReplayError,
    derive_data_key,
    packet_key_id,
)
from lisp.data_header import DataHeader
from lisp.keyring import DecapKeyring, EncapKeyring, PendingExchange

HEADER = DataHeader(nonce=1).encode()


def etr_answer(decap: DecapKeyring, pending: PendingExchange, now: float, peer: object = None):
    """What the ETR does on a Map-Request: new key pair, install the decap key, reply."""
    etr = EcdhKeyPair.generate()
    key = derive_data_key(etr, pending.public, pending.cipher_suite)
    decap.install(
        pending.key_id, PacketCipher(pending.cipher_suite, key, pending.key_id), now, peer
    )
    return etr.public


def exchange(encap: EncapKeyring, decap: DecapKeyring, now: float) -> int:
    pending = encap.begin_exchange(now)
    reply = etr_answer(decap, pending, now)
    return encap.complete_exchange(pending, reply, pending.cipher_suite, now)


@pytest.mark.parametrize("suite", [CS_AES128_GCM, CS_CHACHA20_POLY1305])
def test_exchange_then_traffic(suite: int) -> None:
    encap, decap = EncapKeyring(suite), DecapKeyring()
    assert not encap.has_key and encap.key_id == 0 and encap.needs_rekey(0.0)
    with pytest.raises(CryptoError) as info:
        encap.seal(HEADER, b"x")
    assert info.value.reason == "no-key"
    assert exchange(encap, decap, 0.0) == 1
    assert encap.has_key and not encap.needs_rekey(1.0)
    for i in range(100):
        assert decap.open(encap.seal(HEADER, b"pkt%d" % i), 1.0) == b"pkt%d" % i
    assert encap.packets == 100


def test_key_id_rotation_1_2_3_1() -> None:
    encap, decap = EncapKeyring(), DecapKeyring()
    ids = [exchange(encap, decap, float(t)) for t in range(7)]
    assert ids == [1, 2, 3, 1, 2, 3, 1]


def test_pending_exchanges_never_reuse_the_key_in_use() -> None:
    encap, decap = EncapKeyring(), DecapKeyring()
    exchange(encap, decap, 0.0)  # key-id 1 in use
    kids = [encap.begin_exchange(1.0).key_id for _ in range(6)]
    assert 1 not in kids
    assert all(a != b for a, b in itertools.pairwise(kids))


def test_make_before_break() -> None:
    encap, decap = EncapKeyring(), DecapKeyring(grace_seconds=30.0)
    exchange(encap, decap, 0.0)
    old_packets = [encap.seal(HEADER, b"old%d" % i) for i in range(5)]

    pending = encap.begin_exchange(100.0)
    assert pending.key_id == 2
    reply = etr_answer(decap, pending, 100.0)  # ETR installs key 2 before it replies
    # Until the reply arrives the ITR keeps sealing with key 1, and the ETR still opens it.
    in_between = encap.seal(HEADER, b"between")
    assert packet_key_id(in_between) == 1
    assert decap.open(in_between, 100.5) == b"between"

    assert encap.complete_exchange(pending, reply, CS_AES128_GCM, 101.0) == 2
    new = encap.seal(HEADER, b"new")
    assert packet_key_id(new) == 2 and encap.packets == 1
    assert decap.open(new, 101.0) == b"new"  # key 2 seen: key 1 now has 30 s left
    assert set(decap.key_ids) == {1, 2}

    # Late packets sealed with the old key still open during the grace period ...
    assert decap.open(old_packets[0], 120.0) == b"old0"
    assert decap.open(old_packets[1], 130.9) == b"old1"
    # ... and not after it.
    with pytest.raises(CryptoError) as info:
        decap.open(old_packets[2], 131.5)
    assert info.value.reason == "expired"
    assert decap.key_ids == (2,)
    assert decap.open(encap.seal(HEADER, b"still"), 500.0) == b"still"


def test_old_key_stays_until_new_key_seen() -> None:
    decap = DecapKeyring(grace_seconds=10.0)
    encap = EncapKeyring()
    exchange(encap, decap, 0.0)
    old = encap.seal(HEADER, b"old")
    pending = encap.begin_exchange(5.0)
    etr_answer(decap, pending, 5.0)  # reply lost: the ITR never switches
    assert decap.open(old, 500.0) == b"old"  # no grace countdown without new-key traffic
    assert decap.expire(500.0) == []


def test_stale_and_superseded_exchanges() -> None:
    encap, decap = EncapKeyring(), DecapKeyring()
    exchange(encap, decap, 0.0)
    a = encap.begin_exchange(1.0)  # key-id 2
    b = encap.begin_exchange(1.0)  # key-id 3
    c = encap.begin_exchange(1.0)  # key-id 2 again: a is superseded
    assert (a.key_id, b.key_id, c.key_id) == (2, 3, 2)
    reply_a = etr_answer(decap, a, 1.0)
    with pytest.raises(CryptoError) as info:
        encap.complete_exchange(a, reply_a, CS_AES128_GCM, 2.0)
    assert info.value.reason == "stale"
    reply_b, reply_c = etr_answer(decap, b, 1.0), etr_answer(decap, c, 1.0)
    assert encap.complete_exchange(c, reply_c, CS_AES128_GCM, 2.0) == 2
    assert encap.pending == ()  # b is older than c: retired
    with pytest.raises(CryptoError):
        encap.complete_exchange(b, reply_b, CS_AES128_GCM, 2.0)
    assert decap.open(encap.seal(HEADER, b"x"), 2.0) == b"x"


def test_complete_checks_suite_and_public_key() -> None:
    encap = EncapKeyring()
    pending = encap.begin_exchange(0.0)
    with pytest.raises(CryptoError) as info:
        encap.complete_exchange(pending, EcdhKeyPair.generate().public, CS_CHACHA20_POLY1305, 0)
    assert info.value.reason == "suite"
    with pytest.raises(CryptoError) as info:
        encap.complete_exchange(pending, bytes(32), CS_AES128_GCM, 0.0)
    assert info.value.reason == "public-key"
    assert not encap.has_key
    encap.complete_exchange(pending, EcdhKeyPair.generate().public, CS_AES128_GCM, 0.0)
    assert encap.has_key


def test_rekey_due_by_packets_and_hard_limit() -> None:
    encap = EncapKeyring(rekey_after_packets=10, reject_after_packets=15)
    decap = DecapKeyring()
    exchange(encap, decap, 0.0)
    for _ in range(9):
        encap.seal(HEADER, b"x")
    assert not encap.needs_rekey(1.0)
    encap.seal(HEADER, b"x")
    assert encap.needs_rekey(1.0)  # soft limit: start an exchange, keep sending
    for _ in range(5):
        encap.seal(HEADER, b"x")
    with pytest.raises(CryptoError) as info:
        encap.seal(HEADER, b"x")
    assert info.value.reason == "exhausted"
    exchange(encap, decap, 2.0)
    assert not encap.needs_rekey(2.0) and encap.packets == 0
    assert decap.open(encap.seal(HEADER, b"y"), 2.0) == b"y"


def test_rekey_due_by_time_and_expiry() -> None:
    encap = EncapKeyring(rekey_after_seconds=600.0, reject_after_seconds=1800.0)
    exchange(encap, DecapKeyring(), 1000.0)
    assert not encap.needs_rekey(1599.0)
    assert encap.needs_rekey(1600.0)
    assert not encap.expire(2799.0) and encap.has_key
    assert encap.expire(2800.0) and not encap.has_key
    assert encap.needs_rekey(2800.0)


def test_limits_validated() -> None:
    with pytest.raises(ValueError):
        EncapKeyring(rekey_after_packets=10, reject_after_packets=5)
    with pytest.raises(ValueError):
        EncapKeyring(reject_after_packets=2**33)
    with pytest.raises(ValueError):
        EncapKeyring(rekey_after_seconds=100.0, reject_after_seconds=50.0)
    with pytest.raises(CryptoError):
        EncapKeyring(cipher_suite=2)


def test_replay_and_decrypt_errors_are_distinct() -> None:
    encap, decap = EncapKeyring(), DecapKeyring()
    exchange(encap, decap, 0.0)
    packet = encap.seal(HEADER, b"once")
    assert decap.open(packet, 0.0) == b"once"
    with pytest.raises(ReplayError):
        decap.open(packet, 0.0)
    forged = packet[:-1] + bytes((packet[-1] ^ 1,))
    with pytest.raises(CryptoError) as info:
        decap.open(forged, 0.0)
    assert info.value.reason == "tag"
    with pytest.raises(CryptoError) as info:  # forged counter must not move the window
        decap.open(packet[:12] + b"\xff" * 8 + packet[20:], 0.0)
    assert decap.open(encap.seal(HEADER, b"next"), 0.0) == b"next"
    with pytest.raises(CryptoError) as info:
        decap.open(HEADER + bytes(40), 0.0)  # key-id 0: plaintext
    assert info.value.reason == "no-key"
    with pytest.raises(CryptoError) as info:
        decap.open(bytes([HEADER[0] | 3]) + HEADER[1:] + bytes(40), 0.0)
    assert info.value.reason == "no-key"
    with pytest.raises(CryptoError) as info:
        decap.open(packet[:20], 0.0)
    assert info.value.reason == "short"


def test_reordered_packets_accepted_once() -> None:
    encap, decap = EncapKeyring(), DecapKeyring(replay_window=2048)
    exchange(encap, decap, 0.0)
    packets = [encap.seal(HEADER, b"%d" % i) for i in range(3000)]
    assert decap.open(packets[2999], 0.0) == b"2999"
    assert decap.open(packets[1000], 0.0) == b"1000"
    with pytest.raises(ReplayError):
        decap.open(packets[500], 0.0)  # older than the window
    with pytest.raises(ReplayError):
        decap.open(packets[1000], 0.0)


def test_decap_max_age_and_expire() -> None:
    decap = DecapKeyring(max_age_seconds=100.0)
    encap = EncapKeyring()
    exchange(encap, decap, 0.0)
    assert decap.open(encap.seal(HEADER, b"a"), 100.0) == b"a"
    assert decap.expire(100.0) == []
    assert decap.expire(100.5) == [1]
    assert not decap.has_key
    with pytest.raises(CryptoError):
        decap.open(encap.seal(HEADER, b"b"), 100.5)


def test_reinstall_same_slot_resets_replay_window() -> None:
    encap, decap = EncapKeyring(rotate_key_ids=False), DecapKeyring()
    assert exchange(encap, decap, 0.0) == 1
    assert decap.open(encap.seal(HEADER, b"a"), 0.0) == b"a"
    assert exchange(encap, decap, 1.0) == 1  # interop mode: lispers.net always uses key-id 1
    assert decap.open(encap.seal(HEADER, b"b"), 1.0) == b"b"  # counter 0 again, new window


def test_peer_and_status() -> None:
    encap, decap = EncapKeyring(), DecapKeyring()
    pending = encap.begin_exchange(0.0)
    reply = etr_answer(decap, pending, 0.0, peer="node-a")
    encap.complete_exchange(pending, reply, CS_AES128_GCM, 0.0)
    assert decap.open_with_peer(encap.seal(HEADER, b"x"), 1.0) == (b"x", "node-a")
    status = encap.status(5.0)
    assert status is not None
    assert status.as_dict() == {
        "key_id": 1,
        "cipher_suite": CS_AES128_GCM,
        "age": 5.0,
        "packets": 1,
        "role": "encap",
    }
    [slot] = decap.status(5.0)
    assert (slot.key_id, slot.packets, slot.role) == (1, 1, "decap")
    encap.clear()
    assert encap.status(5.0) is None and not encap.has_key


def test_install_checks_slot() -> None:
    cipher = PacketCipher(CS_AES128_GCM, bytes(16), 2)
    with pytest.raises(CryptoError):
        DecapKeyring().install(1, cipher, 0.0)
