"""Round trip: every message and LCAF type survives encode then decode unchanged; encoders are
strict (out-of-range values raise EncodeError, never a silent truncation or another exception)."""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lisp import (
    AfiList,
    AsNumber,
    DataHeader,
    DecodeError,
    DistinguishedName,
    EidRecord,
    EncapsulatedControl,
    EncodeError,
    GeoCoordinates,
    InfoMessage,
    InstanceId,
    JsonLcaf,
    MacAddress,
    MapNotify,
    MapNotifyAck,
    MapRegister,
    MapReply,
    MapRequest,
    NatTraversal,
    NoAddress,
    RequestRecord,
    RlocRecord,
    SecurityKey,
    SourceDestKey,
    UnknownLcaf,
    decode_control,
)
from lisp.address import MAX_ADDRESS_DEPTH, decode_address, encode_address
from lisp.wire import Reader
from tests import lisp_strategies as s

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
V4 = IPv4Address("10.0.0.1")
V6 = IPv6Address("2001:db8::1")


def _address_roundtrip(address: Any) -> None:
    raw = encode_address(address)
    reader = Reader(raw)
    assert decode_address(reader) == address
    assert reader.remaining == 0, "decoder must consume exactly what the encoder wrote"


# --- addresses and LCAFs --------------------------------------------------------------------------


@FUZZ
@given(s.plain_addresses)
def test_plain_address_roundtrip(address: Any) -> None:
    _address_roundtrip(address)


@pytest.mark.parametrize("cls", list(s.lcaf_strategies(s.addresses(0))), ids=lambda c: c.__name__)
@FUZZ
@given(data=st.data())
def test_each_lcaf_type_roundtrip(cls: type, data: st.DataObject) -> None:
    value = data.draw(s.lcaf_strategies(s.addresses(2))[cls])
    assert type(value) is cls
    _address_roundtrip(value)


@FUZZ
@given(s.addresses(3))
def test_nested_address_roundtrip(address: Any) -> None:
    _address_roundtrip(address)


@pytest.mark.parametrize("address", s.sample_addresses(), ids=repr)
def test_sample_address_roundtrip(address: Any) -> None:
    _address_roundtrip(address)


def test_nested_afi_list_roundtrips_up_to_the_depth_bound() -> None:
    deepest = s.nested_afi_lists(MAX_ADDRESS_DEPTH, DistinguishedName("leaf"))
    _address_roundtrip(deepest)
    with pytest.raises(EncodeError, match="nested"):
        encode_address(AfiList((deepest,)))
    # The same one-too-deep value, built by hand, is refused by the decoder.
    raw = encode_address(DistinguishedName("leaf"))
    for _ in range(MAX_ADDRESS_DEPTH + 1):
        raw = b"\x40\x03\x00\x00\x01\x00" + len(raw).to_bytes(2, "big") + raw
    with pytest.raises(DecodeError, match="nested"):
        decode_address(Reader(raw))


@FUZZ
@given(s.nul_free_bytes)
def test_distinguished_name_keeps_any_nul_free_bytes(raw: bytes) -> None:
    wire = b"\x00\x11" + raw + b"\x00"
    decoded = decode_address(Reader(wire))
    assert isinstance(decoded, DistinguishedName)
    assert encode_address(decoded) == wire


# --- records --------------------------------------------------------------------------------------


@FUZZ
@given(s.rloc_records)
def test_rloc_record_roundtrip(record: RlocRecord) -> None:
    reader = Reader(record.encode())
    assert RlocRecord.decode_from(reader) == record
    assert reader.remaining == 0


@FUZZ
@given(s.eid_records())
def test_eid_record_roundtrip(record: EidRecord) -> None:
    reader = Reader(record.encode())
    assert EidRecord.decode_from(reader) == record
    assert reader.remaining == 0


# --- control messages -----------------------------------------------------------------------------

MESSAGE_STRATEGIES = {
    MapRequest: s.map_requests(),
    MapReply: s.map_replies,
    MapRegister: s.map_registers(),
    MapNotify: s.map_notifies(),
    MapNotifyAck: s.map_notify_acks,
    InfoMessage: s.info_messages(),
    EncapsulatedControl: s.ecm_messages,
}


@pytest.mark.parametrize("cls", list(MESSAGE_STRATEGIES), ids=lambda c: c.__name__)
@FUZZ
@given(data=st.data())
def test_control_message_roundtrip(cls: Any, data: st.DataObject) -> None:
    message = data.draw(MESSAGE_STRATEGIES[cls])
    raw = message.encode()
    decoded = cls.decode(raw)
    assert type(decoded) is cls
    assert decoded == message
    assert decode_control(raw) == message
    assert decoded.encode() == raw  # and back to the same bytes


@pytest.mark.parametrize("family", [s.ipv4s, s.ipv6s], ids=["inner-v4", "inner-v6"])
@FUZZ
@given(data=st.data())
def test_ecm_carries_a_control_message(family: Any, data: st.DataObject) -> None:
    inner = data.draw(s.non_ecm_messages)
    ecm = EncapsulatedControl(
        data.draw(family), data.draw(family), inner.encode(), data.draw(s.u16s), 4342
    )
    raw = ecm.encode()
    decoded = decode_control(raw)
    assert decoded == ecm
    assert isinstance(decoded, EncapsulatedControl)
    assert decode_control(decoded.message) == inner
    assert len(raw) == 4 + (20 if isinstance(ecm.inner_source, IPv4Address) else 40) + 8 + len(
        inner.encode()
    )


def test_ecm_inner_checksums_are_valid() -> None:
    from lisp.ecm import internet_checksum, udp_checksum

    for src, dst in ((V4, IPv4Address("10.0.0.2")), (V6, IPv6Address("2001:db8::2"))):
        raw = EncapsulatedControl(src, dst, b"\x10" + bytes(30)).encode()
        ip_len = 20 if src.version == 4 else 40
        if src.version == 4:
            assert internet_checksum(raw[4:24]) == 0  # a header with its checksum sums to 0
        udp = raw[4 + ip_len :]
        zeroed = udp[:6] + b"\x00\x00" + udp[8:]
        assert int.from_bytes(udp[6:8], "big") == udp_checksum(src, dst, zeroed) != 0


@pytest.mark.parametrize("message", s.sample_messages(), ids=lambda m: type(m).__name__)
def test_sample_corpus_roundtrip(message: Any) -> None:
    raw = message.encode()
    if isinstance(message, DataHeader):
        assert DataHeader.decode(raw) == message
    else:
        assert decode_control(raw) == message


# --- data header ----------------------------------------------------------------------------------


@FUZZ
@given(s.data_headers())
def test_data_header_roundtrip(header: DataHeader) -> None:
    raw = header.encode()
    assert len(raw) == 8
    assert DataHeader.decode(raw) == header
    assert DataHeader.decode(raw + b"inner packet") == header


def _all_valid_headers() -> list[DataHeader]:
    headers = []
    for mode, echo, iid, lsb, key_id, r in itertools.product(
        ("none", "nonce", "versions"), (False, True), (None, 0, 0xFFFFFF), (None, 0, 0xA5),
        range(4), (False, True),
    ):  # fmt: skip
        if echo and mode != "nonce":
            continue
        headers.append(
            DataHeader(
                nonce=0x123456 if mode == "nonce" else None,
                echo_nonce_request=echo,
                lsb=lsb if iid is not None or not lsb else 0xDEADBEEF,
                instance_id=iid,
                source_map_version=0xABC if mode == "versions" else None,
                dest_map_version=0x123 if mode == "versions" else None,
                key_id=key_id,
                reserved_r=r,
            )
        )
    return headers


def test_data_header_every_valid_combination_roundtrips() -> None:
    headers = _all_valid_headers()
    assert len(headers) == 4 * 3 * 3 * 4 * 2  # (none, nonce, nonce+E, versions) x I x L x KK x R
    encodings = set()
    for header in headers:
        raw = header.encode()
        assert DataHeader.decode(raw) == header
        encodings.add(raw)
    assert len(encodings) == len(headers), "two different headers share an encoding"


# --- bit positions (round trip alone cannot catch two swapped flags) ---

# Masks on the first 32-bit word, as documented in reference/lisp-wire.md §1.1 - §1.6.
REQUEST_BITS = {
    "authoritative": 0x08000000, "probe": 0x02000000, "smr": 0x01000000, "pitr": 0x00800000,
    "smr_invoked": 0x00400000, "mobile": 0x00200000, "decent_nat": 0x00008000,
    "local_xtr": 0x00004000, "dont_map_reply": 0x00002000,
}  # fmt: skip
REGISTER_BITS = {
    "proxy_reply": 0x08000000, "lisp_sec": 0x04000000, "rtr": 0x01000000,
    "eid_notify": 0x00001000, "ttl_timeout": 0x00000800, "merge": 0x00000400,
    "mobile": 0x00000200, "want_map_notify": 0x00000100,
}  # fmt: skip
REPLY_BITS = {"probe": 0x08000000, "echo_nonce_capable": 0x04000000, "security": 0x02000000}
ECM_BITS = {"security": 0x08000000, "ddt": 0x04000000, "to_etr": 0x02000000, "to_ms": 0x01000000}


def _word0(message: Any) -> int:
    return int.from_bytes(message.encode()[:4], "big")


def test_flag_bits_sit_where_the_wire_reference_puts_them() -> None:
    base_req = MapRequest(1, (V4,), ())
    assert _word0(base_req) == 0x10000000
    for name, mask in REQUEST_BITS.items():
        assert _word0(MapRequest(1, (V4,), (), **{name: True})) == 0x10000000 | mask, name
    assert _word0(MapRequest(1, (V4,), (), xtr_id=1)) == 0x10000000 | 0x00100000
    m_bit = MapRequest(1, (V4,), (), map_reply_record=EidRecord(V4, 32))
    assert _word0(m_bit) == 0x10000000 | 0x04000000
    assert _word0(MapRequest(1, (V4,) * 32, (RequestRecord(V4, 32),) * 3)) == 0x10001F03

    for name, mask in REGISTER_BITS.items():
        assert _word0(MapRegister(1, (), **{name: True})) == 0x30000000 | mask, name
    assert _word0(MapRegister(1, (), xtr_id=1)) == 0x32000000
    for name, mask in REPLY_BITS.items():
        assert _word0(MapReply(1, (), **{name: True})) == 0x20000000 | mask, name
    for cls, top in ((MapNotify, 0x40000000), (MapNotifyAck, 0x50000000)):
        assert _word0(cls(1, (), rtr=True)) == top | 0x04000000
        assert _word0(cls(1, (), xtr_id=1)) == top | 0x08000000
    for name, mask in ECM_BITS.items():
        assert _word0(EncapsulatedControl(V4, V4, b"", **{name: True})) == 0x80000000 | mask
    assert _word0(InfoMessage(1, is_reply=True)) == 0x78000000


def test_record_bits_sit_where_the_wire_reference_puts_them() -> None:
    rloc = RlocRecord(V4, 1, 2, 3, 4, local=True, probed=True, reachable=True).encode()
    assert rloc == bytes((1, 2, 3, 4, 0, 7, 0, 1)) + V4.packed
    for kw, bit in (("local", 4), ("probed", 2), ("reachable", 1)):
        flags = dict.fromkeys(("local", "probed", "reachable"), False) | {kw: True}
        assert RlocRecord(V4, **flags).encode()[5] == bit
    record = EidRecord(V4, 24, (), ttl=3, action=5, authoritative=True, map_version=0xABC)
    assert record.encode()[:12] == bytes.fromhex("00000003 0018 b000 0abc 0001".replace(" ", ""))


def test_data_header_bits() -> None:
    word = lambda h: int.from_bytes(h.encode()[:4], "big")  # noqa: E731
    assert word(DataHeader(nonce=0xABCDEF)) == 0x80ABCDEF
    assert word(DataHeader(nonce=1, echo_nonce_request=True)) == 0xA0000001
    assert word(DataHeader(source_map_version=0xABC, dest_map_version=0x123)) == 0x10ABC123
    assert word(DataHeader(instance_id=5)) == 0x08000000
    assert DataHeader(instance_id=5, lsb=3).encode() == bytes.fromhex("4800000000000503")
    assert DataHeader(lsb=0xDEADBEEF).encode() == bytes.fromhex("40000000deadbeef")
    assert word(DataHeader(reserved_r=True)) == 0x04000000
    assert word(DataHeader(key_id=3)) == 0x03000000


# --- strict when sending --------------------------------------------------------------------------

REC = EidRecord(V4, 24)
REJECTED: dict[str, Any] = {
    "EID mask-len 33 for IPv4": lambda: EidRecord(V4, 33).encode(),
    "EID mask-len 129 for IPv6": lambda: EidRecord(V6, 129).encode(),
    "EID mask-len 49 for MAC": lambda: EidRecord(MacAddress(bytes(6)), 49).encode(),
    "EID mask-len 33 inside an IID": lambda: EidRecord(InstanceId(1, V4), 33).encode(),
    "request record mask-len 33": lambda: MapRequest(1, (V4,), (RequestRecord(V4, 33),)).encode(),
    "source/dest mask 33": lambda: encode_address(SourceDestKey(V4, 33, V4, 8)),
    "info mask-len 33": lambda: InfoMessage(1, eid=V4, mask_len=33).encode(),
    "record TTL 2^32": lambda: EidRecord(V4, 8, ttl=1 << 32).encode(),
    "ACT 8": lambda: EidRecord(V4, 8, action=8).encode(),
    "map-version 4096": lambda: EidRecord(V4, 8, map_version=4096).encode(),
    "256 locators": lambda: EidRecord(V4, 8, (RlocRecord(V4),) * 256).encode(),
    "RLOC priority 256": lambda: RlocRecord(V4, priority=256).encode(),
    "RLOC weight -1": lambda: RlocRecord(V4, weight=-1).encode(),
    "RLOC priority True (a bool)": lambda: RlocRecord(V4, priority=True).encode(),
    "a string is not an address": lambda: RlocRecord("10.0.0.1").encode(),
    "DH instance-id 2^24": lambda: DataHeader(instance_id=1 << 24).encode(),
    "DH nonce 2^24": lambda: DataHeader(nonce=1 << 24).encode(),
    "DH 8-bit LSBs with an IID": lambda: DataHeader(instance_id=1, lsb=256).encode(),
    "DH 32-bit LSBs": lambda: DataHeader(lsb=1 << 32).encode(),
    "DH key-id 4": lambda: DataHeader(key_id=4).encode(),
    "DH map-version 4096": lambda: DataHeader(source_map_version=4096, dest_map_version=0).encode(),
    "DH nonce and versions": lambda: DataHeader(
        nonce=1, source_map_version=1, dest_map_version=1
    ).encode(),
    "DH echo without nonce": lambda: DataHeader(echo_nonce_request=True).encode(),
    "DH half the versions": lambda: DataHeader(source_map_version=5).encode(),
    "no ITR-RLOC": lambda: MapRequest(1, (), ()).encode(),
    "33 ITR-RLOCs": lambda: MapRequest(1, (V4,) * 33, ()).encode(),
    "256 request records": lambda: MapRequest(1, (V4,), (RequestRecord(V4, 1),) * 256).encode(),
    "nonce 2^64": lambda: MapRequest(1 << 64, (V4,), ()).encode(),
    "request xTR-ID 2^128": lambda: MapRequest(1, (V4,), (), xtr_id=1 << 128).encode(),
    "request site-id without xTR-ID": lambda: MapRequest(1, (V4,), (), site_id=1).encode(),
    "256 reply records": lambda: MapReply(1, (REC,) * 256).encode(),
    "register auth 31 bytes for SHA-256": lambda: MapRegister(1, (), auth_data=bytes(31)).encode(),
    "register auth 32 bytes for SHA-1": lambda: MapRegister(
        1, (), alg_id=1, auth_data=bytes(32)
    ).encode(),
    "register alg 3": lambda: MapRegister(1, (), alg_id=3).encode(),
    "register key-id 256": lambda: MapRegister(1, (), key_id=256).encode(),
    "register site-id without xTR-ID": lambda: MapRegister(1, (), site_id=7).encode(),
    "notify xTR-ID 2^128": lambda: MapNotify(1, (), xtr_id=1 << 128).encode(),
    "notify-ack site-id without xTR-ID": lambda: MapNotifyAck(1, (), site_id=1).encode(),
    "info alg 9": lambda: InfoMessage(1, alg_id=9).encode(),
    "info TTL 2^32": lambda: InfoMessage(1, ttl=1 << 32).encode(),
    "MAC of 5 bytes": lambda: encode_address(MacAddress(bytes(5))),
    "DN with a NUL": lambda: encode_address(DistinguishedName("a\x00b")),
    "DN with a lone surrogate": lambda: encode_address(DistinguishedName("\ud800")),
    "DN escapes that decode differently": lambda: encode_address(DistinguishedName("\udcc3\udca9")),
    "JSON with a lone surrogate": lambda: encode_address(JsonLcaf("\ud800", NoAddress())),
    "JSON text of 64 KiB": lambda: encode_address(JsonLcaf("x" * 65536, NoAddress())),
    "geo latitude 91": lambda: encode_address(GeoCoordinates(True, 91, 0, 0, True, 0, 0, 0, 0, V4)),
    "geo longitude 181": lambda: encode_address(
        GeoCoordinates(True, 0, 0, 0, True, 181, 0, 0, 0, V4)
    ),
    "geo minutes 60": lambda: encode_address(GeoCoordinates(True, 0, 60, 0, True, 0, 0, 0, 0, V4)),
    "geo altitude 2^31": lambda: encode_address(
        GeoCoordinates(True, 0, 0, 0, True, 0, 0, 0, 1 << 31, V4)
    ),
    "IID 2^32": lambda: encode_address(InstanceId(1 << 32, V4)),
    "IID mask-len 256": lambda: encode_address(InstanceId(1, V4, 256)),
    "ASN -1": lambda: encode_address(AsNumber(-1, V4)),
    "NAT port 65536": lambda: encode_address(NatTraversal(65536, 0, V4, V4, V4)),
    "256 security keys": lambda: encode_address(SecurityKey(2, (b"",) * 256, V4)),
    "security key of 64 KiB": lambda: encode_address(SecurityKey(2, (bytes(65536),), V4)),
    "cipher suite 256": lambda: encode_address(SecurityKey(256, (), V4)),
    "unknown LCAF type 256": lambda: encode_address(UnknownLcaf(256, 0, b"")),
    "unknown LCAF with a modelled type": lambda: encode_address(UnknownLcaf(2, 0, bytes(6))),
    "LCAF body over 64 KiB": lambda: encode_address(AfiList((V6,) * 3641)),
    "LCAFs nested 9 deep": lambda: encode_address(s.nested_afi_lists(MAX_ADDRESS_DEPTH + 1)),
    "ECM mixed IP versions": lambda: EncapsulatedControl(V4, V6, b"").encode(),
    "ECM port 65536": lambda: EncapsulatedControl(V4, V4, b"", source_port=65536).encode(),
    "ECM TTL 256": lambda: EncapsulatedControl(V4, V4, b"", ttl=256).encode(),
    "ECM message too long": lambda: EncapsulatedControl(V4, V4, bytes(65535)).encode(),
}


@pytest.mark.parametrize("build", REJECTED.values(), ids=list(REJECTED))
def test_encoder_rejects_out_of_range_values(build: Any) -> None:
    with pytest.raises(EncodeError):
        build()


def test_rejections_are_at_the_boundary() -> None:
    """One step inside each bound is accepted (so the rejections above are not vacuous)."""
    EidRecord(V4, 32, ttl=(1 << 32) - 1, action=7, map_version=4095).encode()
    EidRecord(V6, 128, (RlocRecord(V4, 255, 255, 255, 255),) * 255).encode()
    MapRequest(
        (1 << 64) - 1, (V4,) * 32, (RequestRecord(V4, 32),) * 255, xtr_id=(1 << 128) - 1
    ).encode()
    DataHeader(nonce=(1 << 24) - 1, instance_id=(1 << 24) - 1, lsb=255, key_id=3).encode()
    DataHeader(lsb=(1 << 32) - 1, source_map_version=4095, dest_map_version=4095).encode()
    encode_address(AfiList((V6,) * 3640))
    encode_address(GeoCoordinates(True, 90, 59, 59, True, 180, 59, 59, (1 << 31) - 1, V4))
    encode_address(JsonLcaf("x" * (65535 - 4), NoAddress()))
    EncapsulatedControl(V6, V6, bytes(65535 - 48), source_port=65535, ttl=255).encode()
