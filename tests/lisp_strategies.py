"""Hypothesis strategies for every value lisp/ can put on the wire, plus a fixed sample corpus.

Every value a strategy produces is valid for the strict encoders (mask-lens within the address
family, 24-bit data-header IIDs, auth data of the algorithm's length, LCAF nesting within
`MAX_ADDRESS_DEPTH`, ...), so `Cls.decode(x.encode()) == x` must hold for all of them.

`sample_messages()` is a deterministic corpus (one or more values of every message and LCAF type,
every flag set somewhere) for mutation fuzzing; `GOLDEN` holds the lispers.net captures of
reference/lisp-wire.md.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import strategies as st

from lisp import (
    AfiList,
    AsNumber,
    DataHeader,
    DistinguishedName,
    EidRecord,
    ElpHop,
    EncapsulatedControl,
    ExplicitLocatorPath,
    GeoCoordinates,
    InfoMessage,
    InstanceId,
    JsonLcaf,
    KeyValue,
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
)
from lisp.address import MAX_ADDRESS_DEPTH, Address, address_bits

# --- integers of a given width --------------------------------------------------------------------


def uint(bits: int) -> st.SearchStrategy[int]:
    return st.integers(min_value=0, max_value=(1 << bits) - 1)


u8s, u16s, u32s, u64s, u128s = uint(8), uint(16), uint(32), uint(64), uint(128)

# --- plain addresses ------------------------------------------------------------------------------

ipv4s = st.builds(IPv4Address, u32s)
ipv6s = st.builds(IPv6Address, u128s)
ip_addresses = st.one_of(ipv4s, ipv6s)
macs = st.builds(MacAddress, st.binary(min_size=6, max_size=6))
# Names: ordinary text, or any NUL-free bytes read back the way the decoder reads them
# (surrogateescape), so names that are not valid UTF-8 are covered too.
_nul_free_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
nul_free_bytes = st.binary(max_size=20).map(lambda b: b.replace(b"\x00", b"\x01"))
_escaped = st.binary(max_size=30).map(lambda b: b.decode("utf-8", "surrogateescape"))
json_texts = st.one_of(st.text(max_size=30), _escaped, st.just('{"a": [1, 2]}'))
dn_names = st.one_of(
    _nul_free_text, nul_free_bytes.map(lambda b: b.decode("utf-8", "surrogateescape"))
)
distinguished_names = st.builds(DistinguishedName, dn_names)
no_addresses = st.just(NoAddress())
plain_addresses = st.one_of(ipv4s, ipv6s, macs, distinguished_names, no_addresses)

MODELLED_LCAF_TYPES = frozenset({1, 2, 3, 5, 7, 10, 11, 12, 14, 15})
unknown_lcaf_types = u8s.filter(lambda t: t not in MODELLED_LCAF_TYPES)

# --- LCAFs ----------------------------------------------------------------------------------------


def _masked(draw: st.DrawFn, address: Address) -> int:
    return draw(st.integers(0, min(255, address_bits(address))))


@st.composite
def _source_dest(draw: st.DrawFn, child: st.SearchStrategy[Address]) -> SourceDestKey:
    source, dest = draw(child), draw(child)
    return SourceDestKey(source, _masked(draw, source), dest, _masked(draw, dest))


def geo_coordinates(child: st.SearchStrategy[Address]) -> st.SearchStrategy[GeoCoordinates]:
    minsec = st.integers(0, 59)
    return st.builds(
        GeoCoordinates,
        north=st.booleans(),
        lat_degrees=st.integers(0, 90),
        lat_minutes=minsec,
        lat_seconds=minsec,
        east=st.booleans(),
        lon_degrees=st.integers(0, 180),
        lon_minutes=minsec,
        lon_seconds=minsec,
        altitude=st.integers(-(1 << 31), (1 << 31) - 1),
        address=child,
    )


def lcaf_strategies(child: st.SearchStrategy[Address]) -> dict[type, st.SearchStrategy[Address]]:
    """One strategy per LCAF class, with `child` as the strategy for the addresses inside."""
    few = {"max_size": 3}
    hops = st.builds(ElpHop, child, st.booleans(), st.booleans(), st.booleans())
    return {
        AfiList: st.builds(AfiList, st.lists(child, **few).map(tuple)),
        InstanceId: st.builds(InstanceId, u32s, child, u8s),
        AsNumber: st.builds(AsNumber, u32s, child),
        GeoCoordinates: geo_coordinates(child),
        NatTraversal: st.builds(
            NatTraversal, u16s, u16s, child, child, child, st.lists(child, **few).map(tuple)
        ),
        ExplicitLocatorPath: st.builds(ExplicitLocatorPath, st.lists(hops, **few).map(tuple)),
        SecurityKey: st.builds(
            SecurityKey,
            cipher_suite=u8s,
            keys=st.lists(st.binary(max_size=40), **few).map(tuple),
            address=child,
            revoke=st.booleans(),
        ),
        SourceDestKey: _source_dest(child),
        JsonLcaf: st.builds(JsonLcaf, json_texts, child, st.booleans()),
        KeyValue: st.builds(KeyValue, child, child),
        UnknownLcaf: st.builds(UnknownLcaf, unknown_lcaf_types, u8s, st.binary(max_size=24)),
    }


def lcafs_of(child: st.SearchStrategy[Address]) -> st.SearchStrategy[Address]:
    """Any LCAF class, with `child` as the strategy for the addresses inside."""
    return st.one_of(*lcaf_strategies(child).values())


def addresses(max_depth: int = 2) -> st.SearchStrategy[Address]:
    """Any address, LCAFs nested at most `max_depth` deep (the decoder allows 8)."""
    assert 0 <= max_depth <= MAX_ADDRESS_DEPTH
    strategy: st.SearchStrategy[Address] = plain_addresses
    for _ in range(max_depth):
        strategy = st.one_of(plain_addresses, lcafs_of(strategy))
    return strategy


any_addresses = addresses(2)
lcafs = lcafs_of(addresses(1))


def nested_afi_lists(depth: int, leaf: Address | None = None) -> Address:
    """`depth` AFI-Lists, each inside the next (depth 0 is the leaf itself)."""
    value: Address = leaf if leaf is not None else IPv4Address("10.0.0.1")
    for _ in range(depth):
        value = AfiList((value,))
    return value


# --- records --------------------------------------------------------------------------------------

rloc_records = st.builds(
    RlocRecord,
    address=any_addresses,
    priority=u8s,
    weight=u8s,
    m_priority=u8s,
    m_weight=u8s,
    local=st.booleans(),
    probed=st.booleans(),
    reachable=st.booleans(),
)


@st.composite
def eid_records(draw: st.DrawFn, max_rlocs: int = 3) -> EidRecord:
    eid = draw(any_addresses)
    return EidRecord(
        eid=eid,
        mask_len=_masked(draw, eid),
        rlocs=tuple(draw(st.lists(rloc_records, max_size=max_rlocs))),
        ttl=draw(u32s),
        action=draw(st.integers(0, 7)),
        authoritative=draw(st.booleans()),
        map_version=draw(uint(12)),
    )


@st.composite
def request_records(draw: st.DrawFn) -> RequestRecord:
    eid = draw(any_addresses)
    return RequestRecord(eid, _masked(draw, eid), draw(st.booleans()))


# --- messages -------------------------------------------------------------------------------------

AUTH_LENGTHS = {0: 0, 1: 20, 2: 32}


@st.composite
def _auth(draw: st.DrawFn) -> dict[str, object]:
    alg_id = draw(st.sampled_from(sorted(AUTH_LENGTHS)))
    n = AUTH_LENGTHS[alg_id]
    return {
        "key_id": draw(u8s),
        "alg_id": alg_id,
        "auth_data": draw(st.binary(min_size=n, max_size=n)),
    }


@st.composite
def _xtr(draw: st.DrawFn) -> dict[str, object]:
    if draw(st.booleans()):
        return {"xtr_id": draw(u128s), "site_id": draw(u64s)}
    return {"xtr_id": None, "site_id": 0}


records_lists = st.lists(eid_records(), max_size=3).map(tuple)


@st.composite
def map_requests(draw: st.DrawFn) -> MapRequest:
    flags = {
        name: draw(st.booleans())
        for name in (
            "authoritative", "probe", "smr", "pitr", "smr_invoked", "mobile",
            "decent_nat", "local_xtr", "dont_map_reply",
        )
    }  # fmt: skip
    # IRC is 5 bits: 1..32 ITR-RLOCs; occasionally the full 32.
    rloc_count = draw(st.one_of(st.integers(1, 3), st.just(32)))
    itr_rlocs = st.lists(any_addresses, min_size=rloc_count, max_size=rloc_count)
    return MapRequest(
        nonce=draw(u64s),
        itr_rlocs=tuple(draw(itr_rlocs)),
        records=tuple(draw(st.lists(request_records(), max_size=3))),
        source_eid=draw(any_addresses),
        map_reply_record=draw(st.none() | eid_records()),
        **flags,
        **draw(_xtr()),
    )


map_replies = st.builds(
    MapReply,
    nonce=u64s,
    records=records_lists,
    probe=st.booleans(),
    echo_nonce_capable=st.booleans(),
    security=st.booleans(),
)


@st.composite
def map_registers(draw: st.DrawFn) -> MapRegister:
    flags = {
        name: draw(st.booleans())
        for name in (
            "proxy_reply", "lisp_sec", "rtr", "eid_notify", "ttl_timeout", "merge", "mobile",
            "want_map_notify",
        )
    }  # fmt: skip
    return MapRegister(
        nonce=draw(u64s), records=draw(records_lists), **flags, **draw(_auth()), **draw(_xtr())
    )


@st.composite
def map_notifies(draw: st.DrawFn, cls: type[MapNotify] = MapNotify) -> MapNotify:
    return cls(
        nonce=draw(u64s),
        records=draw(records_lists),
        rtr=draw(st.booleans()),
        **draw(_auth()),
        **draw(_xtr()),
    )


map_notify_acks = map_notifies(MapNotifyAck)


@st.composite
def info_messages(draw: st.DrawFn) -> InfoMessage:
    eid = draw(any_addresses)
    is_reply = draw(st.booleans())
    nat = lcaf_strategies(addresses(1))[NatTraversal]
    payload = draw(
        st.one_of(nat, any_addresses) if is_reply else st.one_of(no_addresses, any_addresses)
    )
    return InfoMessage(
        nonce=draw(u64s),
        is_reply=is_reply,
        ttl=draw(u32s),
        eid=eid,
        mask_len=_masked(draw, eid),
        payload=payload,
        **draw(_auth()),
    )


@st.composite
def ecms(draw: st.DrawFn, inner: st.SearchStrategy[bytes] | None = None) -> EncapsulatedControl:
    family = draw(st.sampled_from((ipv4s, ipv6s)))
    message = draw(inner if inner is not None else st.binary(max_size=64))
    return EncapsulatedControl(
        inner_source=draw(family),
        inner_dest=draw(family),
        message=message,
        source_port=draw(u16s),
        dest_port=draw(u16s),
        security=draw(st.booleans()),
        ddt=draw(st.booleans()),
        to_etr=draw(st.booleans()),
        to_ms=draw(st.booleans()),
        ttl=draw(u8s),
    )


non_ecm_messages = st.one_of(
    map_requests(), map_replies, map_registers(), map_notifies(), map_notify_acks, info_messages()
)
ecm_messages = ecms(st.one_of(st.binary(max_size=64), non_ecm_messages.map(lambda m: m.encode())))
control_messages = st.one_of(non_ecm_messages, ecm_messages)


@st.composite
def data_headers(draw: st.DrawFn) -> DataHeader:
    """Every valid combination: N xor V (or neither), E only with N, I with an 8-bit LSB field
    or not, a 32-bit LSB field without I, any KK, R on or off."""
    mode = draw(st.sampled_from(("none", "nonce", "versions")))
    nonce = draw(uint(24)) if mode == "nonce" else None
    echo = mode == "nonce" and draw(st.booleans())
    src_v = draw(uint(12)) if mode == "versions" else None
    dst_v = draw(uint(12)) if mode == "versions" else None
    iid = draw(st.none() | uint(24))
    lsb = draw(st.none() | uint(8 if iid is not None else 32))
    return DataHeader(
        nonce=nonce,
        echo_nonce_request=echo,
        lsb=lsb,
        instance_id=iid,
        source_map_version=src_v,
        dest_map_version=dst_v,
        key_id=draw(st.integers(0, 3)),
        reserved_r=draw(st.booleans()),
    )


# --- a fixed corpus -------------------------------------------------------------------------------

GOLDEN = {
    "A": bytes.fromhex(
        "3200090101dfdfdfddccbbaa000200200265b15f307c040c5b165694d63f1188b60bcf29d3c9d8e8"
        "88634e8438e739f70000000301181000000000010a6302000164ff00000500010a4d000200000000"
        "00000000c52f47dc05db9bf30000000000000000"
    ),
    "B": bytes.fromhex(
        "4000000101dfdfdfddccbbaa00020020512b063a5d787acaa3a94533459c7b1094fcc233fcc13fd1"
        "088d13f5bbc578190000000301181000000000010a6302000164ff00000500010a4d000200000000"
        "00000000c52f47dc05db9bf30000000000000000"
    ),
    "C": bytes.fromhex(
        "7800000087b62bc2e6ddf55600000000000000000000000040030000070000100000c89300010a4d"
        "000200000011766d0000010a4d0009"
    ),
    "D": bytes.fromhex(
        "200000016cbf3be9af3c0b9a000005a001181000000000010a6303000164ff000005400300000100"
        "003a00010a4d0102400300000b00002c010002000020c381142a3d8a08aade0068297daba8efc9ab"
        "66759ee893eec6d25da6aa0c6b7700010a4d0102"
    ),
}

V4 = IPv4Address("10.77.0.2")
V6 = IPv6Address("2001:db8::1")


def sample_addresses() -> list[Address]:
    """One of every address family and LCAF class (nested AFI-List and Unknown included)."""
    mac = MacAddress(bytes.fromhex("020000aabbcc"))
    dn = DistinguishedName("vm-01")
    return [
        V4,
        V6,
        mac,
        dn,
        NoAddress(),
        AfiList((V4, AfiList((V6, dn)), SecurityKey(2, (bytes(range(32)),), V4))),
        InstanceId(1000, IPv4Address("10.99.2.0"), 0),
        InstanceId(0xFFFFFFFF, V6, 8),
        AsNumber(64512, V4),
        GeoCoordinates(True, 52, 30, 15, False, 13, 24, 59, -120, V4),
        NatTraversal(4342, 51347, V4, NoAddress(), dn, (IPv4Address("10.77.0.9"), V6)),
        ExplicitLocatorPath((ElpHop(V4, lookup=True), ElpHop(V6, probe=True, strict=True))),
        SecurityKey(6, (b"k" * 32, b""), V6, revoke=True),
        SourceDestKey(IPv4Address("10.1.0.0"), 16, V6, 64),
        JsonLcaf('{"site": "edge"}', NoAddress(), binary=True),
        KeyValue(dn, mac),
        UnknownLcaf(255, 7, b"\x00\x00\x01vendor"),
        UnknownLcaf(0, 0, b""),
        nested_afi_lists(MAX_ADDRESS_DEPTH),
    ]


def sample_messages() -> list[object]:
    """A corpus with every message type and every flag set somewhere (encodable values)."""
    addrs = sample_addresses()
    rlocs = tuple(
        RlocRecord(a, priority=i, weight=255 - i, local=bool(i & 1), probed=bool(i & 2))
        for i, a in enumerate(addrs)
    )
    records = (
        EidRecord(IPv4Address("10.99.2.0"), 24, rlocs[:3], ttl=3, authoritative=True),
        EidRecord(InstanceId(7, V6), 48, rlocs[3:], action=2, map_version=4095),
        EidRecord(addrs[5], 0, (), ttl=0xFFFFFFFF, action=7),
    )
    reg_flags = dict.fromkeys(
        ("proxy_reply", "lisp_sec", "rtr", "eid_notify", "ttl_timeout", "merge", "mobile",
         "want_map_notify"),
        True,
    )  # fmt: skip
    req_flags = dict.fromkeys(
        ("authoritative", "probe", "smr", "pitr", "smr_invoked", "mobile", "decent_nat",
         "local_xtr", "dont_map_reply"),
        True,
    )  # fmt: skip
    request = MapRequest(
        nonce=0x0123456789ABCDEF,
        itr_rlocs=(addrs[12], V4, V6),
        records=(RequestRecord(IPv4Address("10.99.3.0"), 24, True), RequestRecord(addrs[6], 32)),
        source_eid=V4,
        map_reply_record=records[0],
        xtr_id=1 << 100,
        site_id=9,
        **req_flags,
    )
    messages: list[object] = [
        request,
        MapRequest(1, tuple(addrs[:5]) * 6 + (V4, V6), ()),
        MapReply(2, records, probe=True, echo_nonce_capable=True, security=True),
        MapReply(3, ()),
        MapRegister(4, records, key_id=255, alg_id=1, auth_data=bytes(range(20)), **reg_flags),
        MapRegister(5, records[:1], xtr_id=0xC52F47DC05DB9BF3, auth_data=bytes(32)),
        MapNotify(6, records, alg_id=0, rtr=True, xtr_id=5, site_id=6),
        MapNotifyAck(7, records[1:], auth_data=b"\xff" * 32),
        InfoMessage(8, eid=NoAddress(), payload=DistinguishedName("vm")),
        InfoMessage(9, True, 1, 2, b"a" * 32, 15, IPv4Address("10.0.0.0"), 8, addrs[10]),
    ]
    register = MapRegister(4, records, key_id=255, alg_id=1, auth_data=bytes(20), **reg_flags)
    messages += [
        EncapsulatedControl(V4, IPv4Address("10.99.2.1"), request.encode(), 61000, to_ms=True),
        EncapsulatedControl(V6, V6, register.encode(), security=True, ddt=True, to_etr=True),
    ]
    messages += [
        DataHeader(nonce=0xABCDEF, echo_nonce_request=True, lsb=3, instance_id=0xFFFFFF, key_id=3),
        DataHeader(source_map_version=1, dest_map_version=4095, lsb=0xFFFFFFFF, reserved_r=True),
        DataHeader(),
    ]
    return messages
