"""Golden vectors: the lispers.net captures A-D of reference/lisp-wire.md decode to the documented
fields, their HMACs verify, and HMAC-SHA-1 / HMAC-SHA-256 sign and verify for every key-id."""

from __future__ import annotations

import hashlib
import hmac
from ipaddress import IPv4Address
from typing import Any

import pytest

from lisp import (
    AfiList,
    DecodeError,
    DistinguishedName,
    EidRecord,
    EncodeError,
    InfoMessage,
    MapNotify,
    MapNotifyAck,
    MapRegister,
    MapReply,
    MapRequest,
    NatTraversal,
    NoAddress,
    RlocRecord,
    SecurityKey,
    auth,
    decode_control,
)
from lisp.address import decode_address
from lisp.wire import Reader
from tests.lisp_strategies import GOLDEN

KEY = b"interop-secret"
A, B, C, D = GOLDEN["A"], GOLDEN["B"], GOLDEN["C"], GOLDEN["D"]
LP_NONCE = bytes.fromhex("01dfdfdfddccbbaa")  # lispers.net log "0xaabbccdddfdfdf01", host order
# xTR-ID (128 bits, upper 64 zero) then Site-ID (64 bits, zero)
XTR_TAIL = bytes(8) + bytes.fromhex("c52f47dc05db9bf3") + bytes(8)


def _nonce_bytes(message: Any) -> bytes:
    return int(message.nonce).to_bytes(8, "big")


def _check_registered_record(records: tuple[EidRecord, ...]) -> None:
    """The one EID-record of vectors A and B."""
    assert len(records) == 1
    record = records[0]
    assert record.ttl == 3  # minutes
    assert record.eid == IPv4Address("10.99.2.0")
    assert record.mask_len == 24
    assert str(record.prefix) == "10.99.2.0/24"
    assert record.authoritative is True
    assert record.action == 0
    assert record.map_version == 0
    assert record.rlocs == (
        RlocRecord(
            IPv4Address("10.77.0.2"), priority=1, weight=100, m_priority=255, m_weight=0,
            local=True, probed=False, reachable=True,
        ),
    )  # fmt: skip


# --- A: Map-Register ------------------------------------------------------------------------------


def test_vector_a_map_register_fields() -> None:
    message = decode_control(A)
    assert type(message) is MapRegister
    assert A[0] >> 4 == 3
    assert _nonce_bytes(message) == LP_NONCE
    # Flags: I (xTR-ID present) + T (TTL is the timeout) + M (want Map-Notify); nothing else.
    assert message.xtr_id is not None
    assert message.ttl_timeout is True
    assert message.want_map_notify is True
    assert not any(
        (message.proxy_reply, message.lisp_sec, message.rtr, message.eid_notify, message.merge,
         message.mobile)
    )  # fmt: skip
    assert (message.key_id, message.alg_id, len(message.auth_data)) == (0, 2, 32)
    assert message.auth_data == A[16:48]
    _check_registered_record(message.records)
    assert message.xtr_id >> 64 == 0  # lispers.net: upper 64 bits of the xTR-ID are zero
    assert message.xtr_id == 0xC52F47DC05DB9BF3
    assert message.site_id == 0
    assert MapRegister.decode(A) == message


def test_vector_a_reencodes_byte_for_byte() -> None:
    assert decode_control(A).encode() == A


# --- B: Map-Notify with a stray xTR-ID ------------------------------------------------------------


def test_vector_b_map_notify_fields() -> None:
    message = decode_control(B)
    assert type(message) is MapNotify  # type 4, not a Map-Notify-Ack
    assert B[0] == 0x40  # I bit clear...
    assert message.xtr_id is None
    assert message.rtr is False
    assert _nonce_bytes(message) == LP_NONCE  # copied from the Map-Register
    assert (message.key_id, message.alg_id, len(message.auth_data)) == (0, 2, 32)
    _check_registered_record(message.records)
    assert message.records == decode_control(A).records


def test_vector_b_tolerates_the_trailing_xtr_id() -> None:
    message = MapNotify.decode(B)
    body = message.encode()
    assert len(B) - len(body) == 24  # ...yet the 24 xTR-ID/Site-ID bytes are present
    assert B[: len(body)] == body
    assert B[-24:] == A[-24:] == XTR_TAIL


# --- C: Info-Reply with a short NAT-LCAF Length ---------------------------------------------------


def test_vector_c_info_reply_fields() -> None:
    message = decode_control(C)
    assert type(message) is InfoMessage
    assert message.is_reply is True
    assert _nonce_bytes(message) == bytes.fromhex("87b62bc2e6ddf556")
    assert (message.key_id, message.alg_id, message.auth_data) == (0, 0, b"")  # unauthenticated
    assert message.ttl == 0
    assert message.eid == NoAddress()
    assert message.mask_len == 0
    assert message.payload == NatTraversal(
        ms_port=0,
        etr_port=51347,
        global_etr=IPv4Address("10.77.0.2"),
        ms_rloc=NoAddress(),
        private_etr=DistinguishedName("vm"),
        rtrs=(IPv4Address("10.77.0.9"),),
    )


def test_vector_c_rtr_read_despite_length_16() -> None:
    lcaf_at = C.index(b"\x40\x03")  # AFI 16387, then rsvd1, flags, type, rsvd2, Length
    assert C[lcaf_at + 4] == 7  # NAT-Traversal
    assert int.from_bytes(C[lcaf_at + 6 : lcaf_at + 8], "big") == 16
    assert len(C) - (lcaf_at + 8) == 23  # the body really runs 7 bytes past the Length field
    # A strict reader that trusts the Length field cannot decode it...
    with pytest.raises(DecodeError):
        decode_address(Reader(C, lcaf_at))
    # ...the Info decoder reads to the end of the payload and finds the RTR.
    payload = decode_control(C).payload
    assert isinstance(payload, NatTraversal)
    assert payload.rtrs == (IPv4Address("10.77.0.9"),)


# --- D: Map-Reply with an RFC 8061 Security-Key ---

D_KEY = bytes.fromhex("c381142a3d8a08aade0068297daba8efc9ab66759ee893eec6d25da6aa0c6b77")


def test_vector_d_map_reply_fields() -> None:
    message = decode_control(D)
    assert type(message) is MapReply
    assert _nonce_bytes(message) == bytes.fromhex("6cbf3be9af3c0b9a")
    assert (message.probe, message.echo_nonce_capable, message.security) == (False, False, False)
    assert len(message.records) == 1
    record = message.records[0]
    assert (record.ttl, record.eid, record.mask_len) == (1440, IPv4Address("10.99.3.0"), 24)
    assert record.authoritative is True  # direct from the ETR
    assert len(record.rlocs) == 1
    rloc = record.rlocs[0]
    assert (rloc.priority, rloc.weight, rloc.local, rloc.probed, rloc.reachable) == (
        1, 100, True, False, True,
    )  # fmt: skip
    assert rloc.address == AfiList(
        (IPv4Address("10.77.1.2"), SecurityKey(2, (D_KEY,), IPv4Address("10.77.1.2")))
    )
    assert len(D_KEY) == 32


def test_vector_d_reencodes_byte_for_byte() -> None:
    assert decode_control(D).encode() == D
    lcaf = D[D.index(b"\x40\x03") :]
    assert lcaf[4] == 1  # AFI-List...
    assert int.from_bytes(lcaf[6:8], "big") == 58  # ...with the documented 58-byte body
    assert len(lcaf) == 8 + 58


# --- HMAC -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [A, B], ids=["A", "B"])
def test_golden_hmac_verifies(raw: bytes) -> None:
    assert auth.verify(raw, KEY) is True
    assert auth.key_id_of(raw) == 0
    # Re-signing the capture with its auth data zeroed reproduces it exactly (B: the trailing
    # xTR-ID bytes are covered by the HMAC even though the I bit is clear).
    zeroed = raw[:16] + bytes(32) + raw[48:]
    assert auth.sign(zeroed, KEY) == raw
    expected = hmac.new(KEY, zeroed, hashlib.sha256).digest()
    assert raw[16:48] == expected


@pytest.mark.parametrize("raw", [A, B], ids=["A", "B"])
def test_golden_hmac_fails_with_a_wrong_key(raw: bytes) -> None:
    assert auth.verify(raw, b"interop-secreT") is False
    assert auth.verify(raw, b"") is False
    assert auth.verify(raw, KEY + b"!") is False
    assert auth.verify(raw, KEY[:-1]) is False


@pytest.mark.parametrize("raw", [A, B], ids=["A", "B"])
def test_golden_hmac_fails_if_any_byte_is_flipped(raw: bytes) -> None:
    for at in range(len(raw)):
        for mask in (0x01, 0x80):
            flipped = raw[:at] + bytes((raw[at] ^ mask,)) + raw[at + 1 :]
            assert auth.verify(flipped, KEY) is False, f"flip {mask:#x} at byte {at} verified"
    assert auth.verify(raw[:-1], KEY) is False
    assert auth.verify(raw + b"\x00", KEY) is False


def test_verify_uses_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((bytes(a), bytes(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert auth.verify(A, KEY) is True
    assert calls == [(A[16:48], A[16:48])]
    assert auth.verify(A, b"wrong") is False
    assert len(calls) == 2 and calls[1][1] == A[16:48] and calls[1][0] != A[16:48]


def _unsigned(kind: str, key_id: int, alg_id: int) -> bytes:
    record = EidRecord(IPv4Address("10.99.2.0"), 24, (RlocRecord(IPv4Address("10.77.0.2")),))
    if kind == "register":
        return MapRegister(7, (record,), key_id, alg_id, xtr_id=1, want_map_notify=True).encode()
    if kind == "notify":
        return MapNotify(7, (record,), key_id, alg_id).encode()
    if kind == "notify-ack":
        return MapNotifyAck(7, (record,), key_id, alg_id, xtr_id=3, site_id=4).encode()
    return InfoMessage(7, False, key_id, alg_id, payload=DistinguishedName("host")).encode()


@pytest.mark.parametrize(
    ("alg_id", "digest", "length"),
    [(1, hashlib.sha1, 20), (2, hashlib.sha256, 32)],
    ids=["HMAC-SHA-1", "HMAC-SHA-256"],
)
@pytest.mark.parametrize("kind", ["register", "notify", "notify-ack", "info"])
def test_sign_and_verify_every_key_id(alg_id: int, digest: Any, length: int, kind: str) -> None:
    for key_id in range(256):
        unsigned = _unsigned(kind, key_id, alg_id)
        assert unsigned[12:16] == bytes((key_id, alg_id)) + length.to_bytes(2, "big")
        assert unsigned[16 : 16 + length] == bytes(length)
        key = b"site-key-%d" % key_id
        signed = auth.sign(unsigned, key)
        assert len(signed) == len(unsigned)
        assert signed[16 : 16 + length] == hmac.new(key, unsigned, digest).digest()
        assert signed[:16] == unsigned[:16] and signed[16 + length :] == unsigned[16 + length :]
        assert auth.verify(signed, key) is True
        assert auth.verify(signed, key + b"x") is False
        assert auth.key_id_of(signed) == key_id
        decoded = decode_control(signed)
        assert decoded.auth_data == signed[16 : 16 + length]  # type: ignore[union-attr]
        assert auth.sign(signed, key) == signed  # stale auth data is ignored when re-signing


def test_sign_alg_none_and_unauthenticated_types() -> None:
    unsigned = _unsigned("register", 0, 0)
    assert auth.sign(unsigned, KEY) == unsigned
    assert auth.verify(unsigned, KEY) is False  # alg 0 never counts as authenticated
    assert auth.verify(C, KEY) is False  # Info-Reply C is unauthenticated
    request = MapRequest(1, (IPv4Address("10.0.0.1"),), ()).encode()
    with pytest.raises(DecodeError):
        auth.sign(request, KEY)
    assert auth.verify(request, KEY) is False
    assert auth.verify(D, KEY) is False
    for junk in (b"", b"\x30", A[:13], A[:20]):
        assert auth.verify(junk, KEY) is False


def test_sign_rejects_a_length_that_does_not_match_the_algorithm() -> None:
    # lenient decode / strict sign: alg 2 (SHA-256) with 20 bytes of auth data
    raw = bytearray(_unsigned("notify", 0, 1))
    raw[13] = 2
    with pytest.raises(EncodeError):
        auth.sign(bytes(raw), KEY)
    assert auth.verify(bytes(raw), KEY) is False
