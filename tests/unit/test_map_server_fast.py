"""The map-server's fast paths give what the slow paths give.

- `split_register` (struct reads of the plain shape) against `MapRegister.decode`;
- `notify_from_register` (the received record bytes reused) against the Map-Notify encoder;
- `decode_record` (what a registration keeps) against `EidRecord.decode_from`;
- the refresh fast path (byte-identical records skip the RLOC-set comparison) against the
  state the full decoder leads to;
- the blocked `PrefixSet`, grouped expiry entries, and the truncated / paged status.
"""

from __future__ import annotations

import gc
import itertools
import json
import types
from ipaddress import IPv4Address, IPv6Address, ip_network
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lisp.map_register as map_register
from lisp import (
    AfiList,
    DecodeError,
    DistinguishedName,
    EidRecord,
    EncodeError,
    InstanceId,
    MapNotify,
    MapRegister,
    RlocRecord,
    auth,
)
from lisp.map_register import decode_record, notify_from_register, split_register
from lisp.map_server import MapServer, SendTo, Site
from lisp.map_server.prefixes import PrefixSet
from lisp.map_server.service import MapServerService
from lisp.wire import Reader
from mesh.node import NodeRuntime
from tests import lisp_strategies as s

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=300)
KEY = b"fast-path-key"

# --- strategies: mostly the plain shape, sometimes not ------------------------------------------

_plain_ips = st.one_of(s.ipv4s, s.ipv6s)
_plain_eids = st.one_of(_plain_ips, st.builds(InstanceId, s.u32s, _plain_ips, s.u8s))
# LCAFs, names, MACs...: the full decoder's business
_any_eids = st.one_of(_plain_eids, s.any_addresses)
_any_rlocs = st.one_of(_plain_ips, s.any_addresses)


@st.composite
def _records(draw: st.DrawFn, plain: bool = False) -> EidRecord:
    eid = draw(_plain_eids if plain else _any_eids)
    inner = eid.address if isinstance(eid, InstanceId) else eid
    bits = inner.max_prefixlen if isinstance(inner, IPv4Address | IPv6Address) else 0
    mask_len = draw(st.integers(0, bits)) if bits else 0
    if bits and draw(st.integers(0, 19)) == 0:
        mask_len = bits + 1  # too long: the encoder refuses it
    rlocs = draw(
        st.lists(
            st.builds(
                RlocRecord,
                address=_plain_ips if plain else _any_rlocs,
                priority=s.u8s,
                weight=s.u8s,
                m_priority=s.u8s,
                m_weight=s.u8s,
                local=st.booleans(),
                probed=st.booleans(),
                reachable=st.booleans(),
            ),
            max_size=3,
        )
    )
    return EidRecord(eid, mask_len, tuple(rlocs), draw(s.u32s), draw(st.integers(0, 7)),
                     draw(st.booleans()), draw(s.uint(12)))  # fmt: skip


def _encode_record(record: EidRecord) -> bytes:
    """Like EidRecord.encode, but a mask-len too long for the EID is written anyway."""
    try:
        return record.encode()
    except EncodeError:
        fitting = EidRecord(record.eid, 0, record.rlocs, record.ttl, record.action,
                            record.authoritative, record.map_version)  # fmt: skip
        raw = bytearray(fitting.encode())
        raw[5] = record.mask_len
        return bytes(raw)


@st.composite
def _registers(draw: st.DrawFn) -> bytes:
    """A signed Map-Register, maybe with reserved bits set, trailing bytes or a wrong length."""
    records = draw(st.lists(_records(plain=draw(st.booleans())), max_size=4))
    xtr = draw(st.booleans())
    msg = MapRegister(
        nonce=draw(s.u64s),
        records=(),
        key_id=draw(s.u8s),
        alg_id=draw(st.sampled_from([0, 1, 2])),
        proxy_reply=draw(st.booleans()),
        ttl_timeout=draw(st.booleans()),
        want_map_notify=draw(st.booleans()),
        merge=draw(st.booleans()),
        xtr_id=draw(s.u128s) if xtr else None,
        site_id=draw(s.u64s) if xtr else 0,
    )
    empty = msg.encode()  # the header, no records, then the xTR block
    head_len = 16 + s.AUTH_LENGTHS[msg.alg_id]
    body = bytearray(b"".join(_encode_record(r) for r in records))
    if body and draw(st.integers(0, 3)) == 0:  # a bit flipped: a reserved one, or worse
        body[draw(st.integers(0, len(body) - 1))] ^= 1 << draw(st.integers(0, 7))
    raw = bytearray(empty[:head_len] + bytes(body) + empty[head_len:])
    raw[3] = len(records)
    raw += draw(st.binary(max_size=6))  # trailing bytes are tolerated
    if draw(st.integers(0, 9)) == 0:
        raw = raw[: draw(st.integers(0, len(raw)))]  # truncated
    return auth.sign(bytes(raw), KEY) if len(raw) >= head_len and msg.alg_id else bytes(raw)


def _slow_notify(raw: bytes) -> bytes:
    msg = MapRegister.decode(raw)
    notify = MapNotify(msg.nonce, msg.records, msg.key_id, msg.alg_id,
                       xtr_id=msg.xtr_id, site_id=msg.site_id)  # fmt: skip
    return auth.sign(notify.encode(), KEY)


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        return ("ok", fn(*args))
    except (DecodeError, EncodeError) as exc:
        return (type(exc).__name__,)


# --- split_register / decode_record / notify_from_register ------------------------------------


def _check_split(raw: bytes) -> None:
    try:
        msg = MapRegister.decode(raw)
    except DecodeError:
        with pytest.raises(DecodeError):
            split_register(raw)
        return
    parts = split_register(raw)
    assert (parts.nonce, parts.key_id, parts.alg_id) == (msg.nonce, msg.key_id, msg.alg_id)
    assert (parts.xtr_id, parts.site_id) == (msg.xtr_id, msg.site_id)
    assert parts.want_map_notify == msg.want_map_notify
    assert parts.ttl_timeout == msg.ttl_timeout and parts.proxy_reply == msg.proxy_reply
    assert len(parts.records) == len(msg.records)
    assert (
        b"".join(r[0] for r in parts.records)
        == raw[parts.auth_end : parts.auth_end + sum(len(r[0]) for r in parts.records)]
    )
    for (record_raw, ttl, iid, version, address, mask_len), record in zip(
        parts.records, msg.records, strict=True
    ):
        assert decode_record(record_raw) == record
        assert (ttl, mask_len) == (record.ttl, record.mask_len)
        eid = record.eid.address if isinstance(record.eid, InstanceId) else record.eid
        if isinstance(eid, IPv4Address | IPv6Address):
            assert (iid, version, address) == (record.instance_id, eid.version, int(eid))
        else:
            assert version == 0
    # The Map-Notify: byte for byte the encoder's, or the same error.
    assert _outcome(notify_from_register, raw, parts, KEY) == _outcome(_slow_notify, raw)


@FUZZ
@given(_registers())
def test_split_and_notify_match_the_full_decoder_and_encoder(raw: bytes) -> None:
    _check_split(raw)


@FUZZ
@given(s.map_registers())
def test_split_and_notify_match_for_any_register(msg: MapRegister) -> None:
    raw = msg.encode()
    _check_split(auth.sign(raw, KEY) if msg.alg_id else raw)


@FUZZ
@given(st.binary(max_size=120), st.sampled_from([0x30, 0x32, 0x31]))
def test_split_register_of_random_bytes_only_raises_decode_error(body: bytes, first: int) -> None:
    _check_split(bytes([first]) + body)


def test_the_plain_shape_takes_the_fast_path() -> None:
    rloc = RlocRecord(IPv4Address("192.0.2.1"), local=True)
    records = (
        EidRecord(IPv4Address("10.1.0.0"), 24, (rloc,), 3, authoritative=True),
        EidRecord(InstanceId(7, IPv6Address("fd00::")), 48, (rloc, rloc), 3),
    )
    raw = auth.sign(MapRegister(5, records, want_map_notify=True, xtr_id=9).encode(), KEY)
    parts = split_register(raw)
    assert parts.message is None  # no full decode
    assert [r[2:] for r in parts.records] == [(0, 4, 0x0A010000, 24), (7, 6, 0xFD << 120, 48)]
    assert notify_from_register(raw, parts, KEY) == _slow_notify(raw)
    # An RLOC that is an AFI-List, or a reserved bit, takes the full decoder.
    odd = (EidRecord(IPv4Address("10.1.0.0"), 24, (RlocRecord(AfiList((rloc.address,))),)),)
    assert split_register(MapRegister(5, odd).encode()).message is not None
    flagged = bytearray(MapRegister(5, records).encode())
    flagged[16 + 32 + 7] |= 1  # ACT/A reserved bits of the first record
    assert split_register(bytes(flagged)).message is not None


@FUZZ
@given(_records(), st.binary(max_size=3))
def test_decode_record_matches_decode_from(record: EidRecord, extra: bytes) -> None:
    raw = _encode_record(record)
    assert decode_record(raw) == EidRecord.decode_from(Reader(raw))
    if extra:  # stray bytes after the record, or a cut record: DecodeError only
        with pytest.raises(DecodeError):
            decode_record(raw + extra)
    with pytest.raises(DecodeError):
        decode_record(raw[:-1])


# --- the map-server: refresh fast path, state equal to the slow path ----------------------------

SITE = Site("alpha", {0: KEY}, ((0, ip_network("10.1.0.0/16")), (3, ip_network("fd00::/16"))))
XTR = ("192.0.2.10", 40000)
_nonces = itertools.count(1)


def _register(*records: EidRecord, nonce: int | None = None, **flags: Any) -> bytes:
    flags.setdefault("want_map_notify", True)
    nonce = next(_nonces) if nonce is None else nonce
    return auth.sign(MapRegister(nonce, records, **flags).encode(), KEY)


def _rec(prefix: str, rloc: str = "192.0.2.10", ttl: int = 3, iid: int = 0) -> EidRecord:
    net = ip_network(prefix)
    eid: Any = net.network_address if not iid else InstanceId(iid, net.network_address)
    return EidRecord(eid, net.prefixlen, (RlocRecord(IPv4Address(rloc), local=True),), ttl)


def _state(ms: MapServer) -> list[dict[str, Any]]:
    return [
        {**reg.status(100.0), "record": reg.record, "expires": reg.expires}
        for reg in ms.registrations()
    ]


def _scenario(ms: MapServer) -> list[list[Any]]:
    """New, identical refresh, TTL change, RLOC move, deregistration; what each answered."""
    a, b = _rec("10.1.5.0/24"), _rec("fd00:1::/48", iid=3)
    msgs = [
        _register(a, b, nonce=1, xtr_id=1, ttl_timeout=True),
        _register(a, b, nonce=2, xtr_id=2, ttl_timeout=True),  # identical records: fast path
        _register(_rec("10.1.5.0/24", ttl=9), b, nonce=3, ttl_timeout=True),  # same RLOCs
        _register(_rec("10.1.5.0/24", rloc="203.0.113.1"), b, nonce=4, proxy_reply=True),
        _register(_rec("10.1.6.0/24", ttl=0), _rec("10.1.7.0/24"), nonce=5),
        _register(_rec("10.1.7.0/24", ttl=0), nonce=6),  # deregisters
        _register(a, nonce=5),  # replayed nonce
    ]
    answers = []
    for now, raw in enumerate(msgs):
        actions = ms.handle(raw, XTR, float(now))
        answers.append([(type(a).__name__, getattr(a, "data", getattr(a, "message", None)))
                        for a in actions])  # fmt: skip
    return answers


def test_refresh_state_and_answers_equal_the_slow_path(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = MapServer([SITE])
    fast_answers = _scenario(fast)
    # Every Map-Register through the full decoder and the Map-Notify encoder.
    monkeypatch.setattr(map_register, "_split_plain", lambda data: None)
    slow = MapServer([SITE])
    slow_answers = _scenario(slow)
    assert slow_answers == fast_answers
    assert _state(slow) == _state(fast)
    assert slow.counters == fast.counters
    assert fast.counters["rloc-set-changed"] == 1 and fast.counters["deregistered"] == 1
    assert fast.counters["replayed-nonce"] == 1


def test_refresh_fast_path_only_for_byte_identical_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ms = MapServer([SITE])
    decoded: list[bytes] = []
    real = map_register.decode_record

    def counting(raw: bytes) -> EidRecord:
        decoded.append(raw)
        return real(raw)

    monkeypatch.setattr("lisp.map_server.registry.decode_record", counting)
    ms.handle(_register(_rec("10.1.5.0/24"), xtr_id=1), XTR, 0.0)
    [reg] = ms.registrations()
    ms.handle(_register(_rec("10.1.5.0/24"), xtr_id=2), ("192.0.2.11", 4342), 5.0)
    assert decoded == []  # identical bytes: no comparison of RLOC-sets
    assert (reg.xtr_id, reg.source, reg.last_registered, reg.expires) == (
        2, ("192.0.2.11", 4342), 5.0, 185.0,
    )  # fmt: skip
    before = reg.raw
    ms.handle(_register(_rec("10.1.5.0/24", ttl=4)), XTR, 6.0)
    assert decoded == [before, reg.raw]  # bytes differ: both decoded, RLOC-sets compared
    assert ms.counters["rloc-set-changed"] == 0 and reg.record.ttl == 4


def test_registration_keeps_bytes_and_decodes_on_demand() -> None:
    ms = MapServer([SITE])
    record = _rec("10.1.5.0/24")
    ms.handle(_register(record), XTR, 0.0)
    [reg] = ms.registrations()
    assert reg.raw == record.encode() and reg.record == record and reg.rlocs == record.rlocs


# --- PrefixSet, expiry groups ------------------------------------------------------------------


class _TinyBlocks(PrefixSet):
    __slots__ = ()
    BLOCK = 3  # many splits and emptied blocks


@FUZZ
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 255), st.integers(0, 8)), max_size=200),
    st.integers(0, 255),
)
def test_blocked_prefix_set_matches_a_plain_set(
    ops: list[tuple[bool, int, int]], addr: int
) -> None:
    members = _TinyBlocks(8)
    reference: set[tuple[int, int]] = set()
    for add, net, length in ops:
        net &= (0xFF << (8 - length)) & 0xFF
        if add:
            members.add(net, length)
            reference.add((net, length))
        else:
            members.discard(net, length)
            reference.discard((net, length))
        assert members.keys == sorted((n << 8) | length for n, length in reference)
        assert members.maxes == [block[-1] for block in members.blocks]
        assert all(block for block in members.blocks)
    for length in range(9):
        net = addr & (0xFF << (8 - length)) & 0xFF
        last = net | ((1 << (8 - length)) - 1)
        expected = any(n >= net and n <= last and m > length for n, m in reference)
        assert members.has_strict_subprefix(net, length) == expected


def test_records_of_one_message_expire_at_their_own_times() -> None:
    ms = MapServer([SITE])
    records = (_rec("10.1.5.0/24", ttl=1), _rec("10.1.6.0/24", ttl=2), _rec("10.1.7.0/24", ttl=2))
    raw = _register(*records, ttl_timeout=True)
    ms.handle(raw, XTR, 0.0)
    assert ms.expire(59.0) == []
    assert [str(r.prefix) for r in ms.expire(60.0)] == ["10.1.5.0/24"]
    ms.handle(_register(_rec("10.1.6.0/24", ttl=2), ttl_timeout=True), XTR, 100.0)  # refreshed
    assert [str(r.prefix) for r in ms.expire(120.0)] == ["10.1.7.0/24"]
    assert ms.expire(219.0) == []
    assert [str(r.prefix) for r in ms.expire(220.0)] == ["10.1.6.0/24"]
    assert ms.registration_count() == 0 and ms.counters["expired"] == 3


# --- status, paging, gc.freeze ------------------------------------------------------------------


def _loaded_service(n: int, **kwargs: Any) -> MapServerService:
    site = Site("big", {0: KEY}, ((0, ip_network("10.0.0.0/8")),))
    service = MapServerService(MapServer([site]), lambda d, a: None, lambda: 0.0, **kwargs)
    for i in range(n):
        service.handle(_register(_rec(str(IPv4Address(0x0A000000 + (i << 8))) + "/24")), XTR)
    return service


def test_status_is_truncated_and_pages_cover_everything() -> None:
    service = _loaded_service(250, status_limit=20)
    status = json.loads(json.dumps(service.status()))
    assert status["registration_count"] == 250 and status["truncated"] is True
    everything = [r.status(0.0) for r in service.core.registrations()]
    assert status["registrations"] == everything[:20]
    seen: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = json.loads(json.dumps(service.registrations_page(offset, 64)))
        assert page["registration_count"] == 250 and len(page["registrations"]) <= 64
        seen += page["registrations"]
        offset = page["next_offset"]
    assert seen == everything
    assert service.registrations_page(3, 2)["registrations"] == everything[3:5]
    assert service.registrations_page(0, 10**6)["limit"] == 1000
    assert service.registrations_page(250)["registrations"] == []
    for bad in ({"offset": -1}, {"limit": 0}, {"offset": "3"}, {"limit": True}):
        assert "error" in service.registrations_page(**bad)
    small = _loaded_service(3)
    assert small.status()["truncated"] is False and len(small.status()["registrations"]) == 3


def test_status_head_without_full_sort_matches_the_sorted_order() -> None:
    service = _loaded_service(400, status_limit=10)  # 10 * 8 < 400: picked by nsmallest
    ordered = [r.status(0.0) for r in service.core.registrations()]
    assert service.status()["registrations"] == ordered[:10]
    assert service.registrations_page(5, 20)["registrations"] == ordered[5:25]


def test_snapshot_pages_follow_membership_changes() -> None:
    service = _loaded_service(30)
    first = service.registrations_page(0, 100)["registrations"]
    service.handle(_register(_rec("10.200.0.0/24")), XTR)
    second = service.registrations_page(0, 100)["registrations"]
    assert len(second) == len(first) + 1


def test_node_control_command_pages_registrations() -> None:
    service = _loaded_service(5)
    node = types.SimpleNamespace(map_server=service)
    page = NodeRuntime._control_command(node, {"command": "registrations", "offset": 1, "limit": 2})  # type: ignore[arg-type]
    assert isinstance(page, dict) and page["offset"] == 1 and len(page["registrations"]) == 2
    none = types.SimpleNamespace(map_server=None)
    assert "error" in NodeRuntime._control_command(none, {"command": "registrations"})  # type: ignore[arg-type, operator]


def test_expiry_tick_freezes_after_growth(monkeypatch: pytest.MonkeyPatch) -> None:
    frozen: list[int] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(1))
    service = _loaded_service(0)
    service.expire()
    assert frozen == []
    site = service.core.sites[0]
    assert site.name == "big"
    for i in range(1200):
        service.handle(_register(_rec(str(IPv4Address(0x0A000000 + (i << 8))) + "/24")), XTR)
    service.expire()
    assert frozen == [1]
    service.expire()  # no growth since: no new freeze
    assert frozen == [1]
    assert not _loaded_service(0, freeze_gc=False)._frozen_at


def test_map_notify_is_sent_for_the_plain_shape() -> None:
    ms = MapServer([SITE])
    raw = _register(_rec("10.1.5.0/24"), xtr_id=7, site_id=3)
    [out] = [a for a in ms.handle(raw, XTR, 0.0) if isinstance(a, SendTo)]
    assert out.data == _slow_notify(raw)
    assert MapNotify.decode(out.data).xtr_id == 7


def test_non_ip_eid_is_refused_through_the_full_decoder() -> None:
    ms = MapServer([SITE])
    [line] = ms.handle(_register(EidRecord(DistinguishedName("x"), 0, (), 3)), XTR, 0.0)
    assert ms.counters["prefix-not-allowed"] == 1 and "is not an IP prefix" in line.message  # type: ignore[union-attr]
