"""The map-server / map-resolver core (lisp.map_server) and its service (its `service` module)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import tracemalloc
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lisp import (
    AfiList,
    DistinguishedName,
    EidRecord,
    EncapsulatedControl,
    InstanceId,
    MapNotify,
    MapRegister,
    MapReply,
    MapRequest,
    RequestRecord,
    RlocRecord,
    SecurityKey,
    auth,
)
from lisp.map_server import (
    Log,
    MapServer,
    MsAction,
    Prefix,
    SendTo,
    Site,
    least_specific_hole,
)
from lisp.map_server.service import MapServerService
from lisp.records import Action

KEY_A = b"site-a-secret-0"
KEY_A1 = b"site-a-secret-1"
KEY_B = b"site-b-secret"
KEY_C = b"site-c-secret"
ALL_KEYS = (KEY_A, KEY_A1, KEY_B, KEY_C)
XTR = ("192.0.2.10", 40000)
ITR = IPv4Address("198.18.0.5")

SITE_A = Site(
    "alpha",
    {0: KEY_A, 1: KEY_A1},
    ((0, ip_network("10.1.0.0/16")), (7, ip_network("fd00:1::/48"))),
)
SITE_B = Site("beta", {0: KEY_B}, ((0, ip_network("10.2.0.0/16")),), accept_more_specifics=False)
SITE_C = Site("gamma", {3: KEY_C}, ((0, ip_network("10.3.0.0/16")),), proxy_reply=True)

_nonces = itertools.count(0x1000)


def make_ms(**kwargs: Any) -> MapServer:
    return MapServer([SITE_A, SITE_B, SITE_C], **kwargs)


def rec(
    prefix: str,
    rlocs: tuple[RlocRecord, ...] | None = None,
    ttl: int = 3,
    iid: int | None = None,
) -> EidRecord:
    net = ip_network(prefix)
    eid: Any = net.network_address
    if iid is not None:
        eid = InstanceId(iid, eid)
    if rlocs is None:
        rlocs = (RlocRecord(IPv4Address("192.0.2.10"), local=True),)
    return EidRecord(eid, net.prefixlen, rlocs, ttl, authoritative=True)


def register(
    *records: EidRecord,
    key: bytes = KEY_A,
    key_id: int = 0,
    nonce: int | None = None,
    **flags: Any,
) -> bytes:
    flags.setdefault("want_map_notify", True)
    msg = MapRegister(next(_nonces) if nonce is None else nonce, records, key_id=key_id, **flags)
    return auth.sign(msg.encode(), key)


def sends(actions: list[MsAction]) -> list[SendTo]:
    return [a for a in actions if isinstance(a, SendTo)]


def logs(actions: list[MsAction]) -> list[Log]:
    return [a for a in actions if isinstance(a, Log)]


def ecm_request(
    eid: Any,
    mask_len: int = 32,
    *,
    itr_rlocs: tuple[Any, ...] = (ITR,),
    inner_source: Any = ITR,
    sport: int = 61000,
    nonce: int = 0xABCDEF0123456789,
) -> tuple[bytes, bytes]:
    """(ECM bytes, inner Map-Request bytes)."""
    request = MapRequest(nonce, itr_rlocs, (RequestRecord(eid, mask_len),))
    inner = request.encode()
    plain: Any = eid.address if isinstance(eid, InstanceId) else eid
    dest = plain if plain.version == inner_source.version else type(inner_source)(0)
    return EncapsulatedControl(inner_source, dest, inner, source_port=sport).encode(), inner


# -- configuration ------------------------------------------------------------------------------


def test_site_repr_hides_keys_and_config_errors() -> None:
    assert "secret" not in repr(SITE_A)
    assert "secret" not in str(SITE_A)
    with pytest.raises(ValueError, match="both site"):
        MapServer([SITE_A, Site("dup", {0: b"k"}, ((0, ip_network("10.1.0.0/16")),))])
    with pytest.raises(ValueError, match="no authentication key"):
        Site("nokey", {}, ())
    with pytest.raises(ValueError, match="key-id"):
        Site("badid", {300: b"k"}, ())
    site = Site("strs", {0: "pw"}, ((0, "10.9.0.0/16"),))  # type: ignore[dict-item, arg-type]
    assert site.keys[0] == b"pw" and site.allowed == ((0, ip_network("10.9.0.0/16")),)


# -- Map-Register -------------------------------------------------------------------------------


def test_good_registration_gets_a_verifiable_map_notify() -> None:
    ms = make_ms()
    records = (rec("10.1.5.0/24"), rec("fd00:1:0:5::/64", iid=7))
    raw = register(*records, nonce=0x0102030405060708, xtr_id=0xAB, site_id=9)
    actions = ms.handle(raw, XTR, now=0.0)
    [out] = sends(actions)
    assert out.address == XTR
    assert auth.verify(out.data, KEY_A)
    assert not auth.verify(out.data, KEY_B)
    notify = MapNotify.decode(out.data)
    assert notify.nonce == 0x0102030405060708
    assert notify.records == records
    assert (notify.key_id, notify.alg_id) == (0, 2)
    assert (notify.xtr_id, notify.site_id) == (0xAB, 9)  # I bit echoed
    assert ms.counters["registered"] == 1
    regs = ms.registrations()
    assert [(r.site.name, r.iid, str(r.prefix)) for r in regs] == [
        ("alpha", 0, "10.1.5.0/24"),
        ("alpha", 7, "fd00:1:0:5::/64"),
    ]
    assert regs[0].xtr_id == 0xAB and regs[0].source == XTR
    assert regs[0].rlocs == records[0].rlocs
    assert regs[0].expires == 180.0  # no T bit: the default registration timeout


LISPERS_REGISTER = bytes.fromhex(  # lisp-wire.md golden vector A (I+T+M, alg 2, TTL 3)
    "3200090101dfdfdfddccbbaa000200200265b15f307c040c5b165694d63f1188b60bcf29d3c9d8e888634e8438e739f7"
    "0000000301181000000000010a6302000164ff00000500010a4d00020000000000000000c52f47dc05db9bf30000000000000000"
)


def test_lispers_net_registration_is_accepted() -> None:
    site = Site("lp", {0: b"interop-secret"}, ((0, ip_network("10.99.0.0/16")),))
    ms = MapServer([site])
    [notify] = sends(ms.handle(LISPERS_REGISTER, ("10.77.0.2", 4342), 0.0))  # M bit set
    assert auth.verify(notify.data, b"interop-secret")
    assert MapNotify.decode(notify.data).nonce == MapRegister.decode(LISPERS_REGISTER).nonce
    [reg] = ms.registrations()
    assert str(reg.prefix) == "10.99.2.0/24" and reg.expires == 180.0  # T bit, TTL 3 min
    assert [str(r.address) for r in reg.rlocs] == ["10.77.0.2"]
    assert reg.xtr_id == 0xC52F47DC05DB9BF3
    wrong = MapServer([Site("lp", {0: b"other"}, ((0, ip_network("10.99.0.0/16")),))])
    wrong.handle(LISPERS_REGISTER, ("10.77.0.2", 4342), 0.0)
    assert wrong.counters["bad-auth"] == 1


def test_sha1_registration_is_answered_with_sha1_and_no_notify_without_m_bit() -> None:
    ms = make_ms()
    raw = register(rec("10.1.5.0/24"), alg_id=auth.AuthAlg.HMAC_SHA_1_96)
    [out] = sends(ms.handle(raw, XTR, 0.0))
    assert MapNotify.decode(out.data).alg_id == 1 and auth.verify(out.data, KEY_A)
    assert MapNotify.decode(out.data).xtr_id is None
    assert sends(ms.handle(register(rec("10.1.6.0/24"), want_map_notify=False), XTR, 0.0)) == []
    assert ms.counters["registered"] == 2


def test_bad_hmac_is_refused_and_counted_without_leaking_the_key() -> None:
    ms = make_ms()
    actions = ms.handle(register(rec("10.1.5.0/24"), key=KEY_B), XTR, 0.0)
    assert sends(actions) == []
    [line] = logs(actions)
    assert "authentication failed" in line.message and "alpha" in line.message
    assert "192.0.2.10:40000" in line.message
    assert ms.counters["bad-auth"] == 1 and ms.registration_count() == 0
    # Unauthenticated (algorithm 0) is refused too.
    unsigned = MapRegister(1, (rec("10.1.5.0/24"),), alg_id=0).encode()
    assert sends(ms.handle(unsigned, XTR, 0.0)) == []
    assert ms.counters["bad-auth"] == 2
    for action in actions:
        assert isinstance(action, Log)
        assert not any(k.decode() in action.message for k in ALL_KEYS)


def test_unknown_key_id_is_bad_auth_with_its_own_reason() -> None:
    ms = make_ms()
    [line] = ms.handle(register(rec("10.1.5.0/24"), key_id=5), XTR, 0.0)
    assert isinstance(line, Log) and "unknown key-id 5" in line.message
    assert ms.counters["bad-auth"] == 1 and ms.registration_count() == 0


def test_key_rollover_both_keys_accepted() -> None:
    ms = make_ms()
    [old] = sends(ms.handle(register(rec("10.1.5.0/24"), key=KEY_A, key_id=0), XTR, 0.0))
    [new] = sends(ms.handle(register(rec("10.1.5.0/24"), key=KEY_A1, key_id=1), XTR, 1.0))
    assert auth.verify(old.data, KEY_A) and auth.verify(new.data, KEY_A1)
    assert MapNotify.decode(new.data).key_id == 1
    # The right key under the wrong key-id does not verify.
    assert sends(ms.handle(register(rec("10.1.5.0/24"), key=KEY_A1, key_id=0), XTR, 2.0)) == []
    assert ms.counters["registered"] == 2 and ms.counters["bad-auth"] == 1


MOVED = (RlocRecord(IPv4Address("203.0.113.7"), local=True),)


def test_replayed_nonce_with_other_content_is_refused_until_the_window_is_over() -> None:
    ms = make_ms()
    first = register(rec("10.1.5.0/24"), nonce=0x77)
    other = register(rec("10.1.5.0/24", MOVED), nonce=0x77)  # same nonce, other RLOCs
    assert sends(ms.handle(first, XTR, 0.0))
    actions = ms.handle(other, XTR, 10.0)
    assert sends(actions) == [] and ms.counters["replayed-nonce"] == 1
    assert "replayed nonce" in logs(actions)[0].message
    assert ms.lookup(IPv4Address("10.1.5.1"), now=10.0).rlocs == rec("10.1.5.0/24").rlocs  # type: ignore[union-attr]
    # The same nonce from another site is that site's business.
    assert sends(ms.handle(register(rec("10.2.0.0/16"), key=KEY_B, nonce=0x77), XTR, 10.0))
    # Remembered for the registration lifetime (180 s without T), then forgotten.
    assert sends(ms.handle(other, XTR, 179.0)) == []
    ms.expire(181.0)
    assert sends(ms.handle(other, XTR, 181.0))
    assert ms.counters["replayed-nonce"] == 2


def test_replay_window_follows_the_record_ttl() -> None:
    ms = make_ms()
    raw = register(rec("10.1.5.0/24", ttl=10), nonce=0x99, ttl_timeout=True)
    changed = register(rec("10.1.5.0/24", ttl=20), nonce=0x99, ttl_timeout=True)  # other TTL
    assert sends(ms.handle(raw, XTR, 0.0))
    assert sends(ms.handle(changed, XTR, 599.0)) == []
    ms.expire(600.0)
    assert sends(ms.handle(changed, XTR, 600.0))


def test_a_constant_nonce_refresh_stays_registered_across_five_intervals() -> None:
    """RFC 9301 / lispers.net: the same nonce in every Map-Register. A refresh with the same
    content is accepted (and extends the registration); a replayed *different* registration under
    that nonce (other RLOCs, other TTL, a removal) is refused and changes nothing."""
    ms = make_ms()
    refresh = register(rec("10.1.5.0/24"), nonce=0x5EED, want_map_notify=False)
    moved = register(rec("10.1.5.0/24", MOVED), nonce=0x5EED, want_map_notify=False)
    longer = register(rec("10.1.5.0/24", ttl=9), nonce=0x5EED, want_map_notify=False,
                      ttl_timeout=True)  # fmt: skip
    removal = register(rec("10.1.5.0/24", ttl=0), nonce=0x5EED, want_map_notify=False)
    interval = 60.0
    assert ms.handle(refresh, XTR, 0.0) == [] and ms.counters["registered"] == 1
    for n in range(1, 6):
        now = n * interval
        ms.expire(now)
        assert ms.handle(refresh, XTR, now) == []  # accepted: no refusal line
        for replayed in (moved, longer, removal):
            assert [a.reason for a in logs(ms.handle(replayed, XTR, now + 1))] == ["replayed-nonce"]
        reg = ms.lookup(IPv4Address("10.1.5.1"), now=now + 1)
        assert reg is not None and reg.rlocs == rec("10.1.5.0/24").rlocs
        assert reg.expires == now + 180.0
    assert ms.counters["registered"] == 6 and ms.counters["nonce-refresh"] == 5
    assert ms.counters["replayed-nonce"] == 15 and ms.counters["expired"] == 0
    # Without refreshes it expires as usual, and the nonce is forgotten with it.
    ms.expire(5 * interval + 181.0)
    assert ms.registration_count() == 0


def test_a_replayed_older_registration_cannot_revert_a_newer_one() -> None:
    ms = make_ms()
    old = register(rec("10.1.5.0/24"), nonce=0xA1)
    assert sends(ms.handle(old, XTR, 0.0))
    assert sends(ms.handle(register(rec("10.1.5.0/24", MOVED), nonce=0xA2), XTR, 30.0))
    assert sends(ms.handle(old, XTR, 40.0)) == [] and ms.counters["replayed-nonce"] == 1
    assert ms.lookup(IPv4Address("10.1.5.1"), now=40.0).rlocs == MOVED  # type: ignore[union-attr]
    # Nor is a registration that expired while its nonce is still remembered (a message whose
    # other record lives longer keeps the nonce).
    both = register(rec("10.1.5.0/24", ttl=1), rec("10.1.6.0/24", ttl=10), nonce=0xA3,
                    ttl_timeout=True)  # fmt: skip
    ms2 = make_ms()
    assert sends(ms2.handle(both, XTR, 0.0))
    assert [r.prefix for r in ms2.expire(61.0)] == [ip_network("10.1.5.0/24")]
    assert sends(ms2.handle(both, XTR, 61.0)) == [] and ms2.counters["replayed-nonce"] == 1
    assert ms2.lookup(IPv4Address("10.1.5.1"), now=61.0) is None


def test_zero_nonce_is_legal_without_a_map_notify() -> None:
    ms = make_ms()
    quiet = register(rec("10.1.5.0/24"), nonce=0, want_map_notify=False)
    assert ms.handle(quiet, XTR, 0.0) == [] and ms.registration_count() == 1
    assert ms.handle(quiet, XTR, 60.0) == []  # the same again: a refresh
    other = register(rec("10.1.5.0/24", MOVED), nonce=0, want_map_notify=False)
    assert [a.reason for a in logs(ms.handle(other, XTR, 61.0))] == ["replayed-nonce"]
    assert ms.counters["registered"] == 2 and ms.counters["zero-nonce"] == 0


def test_zero_nonce_refused_unless_configured() -> None:
    ms = make_ms()
    actions = ms.handle(register(rec("10.1.5.0/24"), nonce=0), XTR, 0.0)
    assert sends(actions) == [] and ms.counters["zero-nonce"] == 1
    lenient = make_ms(accept_zero_nonce=True)
    for t in (0.0, 60.0):
        assert sends(lenient.handle(register(rec("10.1.5.0/24"), nonce=0), XTR, t))
    assert lenient.counters["registered"] == 2


@pytest.mark.parametrize(
    ("records", "reason"),
    [
        ((rec("10.9.0.0/24"),), "prefix-not-allowed"),  # nobody's
        ((rec("10.1.0.0/16", iid=9),), "prefix-not-allowed"),  # right prefix, wrong iid
        ((rec("10.0.0.0/8"),), "prefix-not-allowed"),  # less specific than allowed
        ((rec("10.1.5.0/24"), rec("10.9.0.0/24")), "prefix-not-allowed"),  # one bad record
        ((rec("10.1.5.0/24"), rec("10.2.0.0/16")), "mixed-sites"),
    ],
)
def test_prefix_outside_allowance_refused(records: tuple[EidRecord, ...], reason: str) -> None:
    ms = make_ms()
    actions = ms.handle(register(*records), XTR, 0.0)
    assert sends(actions) == []
    assert ms.counters[reason] == 1 and ms.registration_count() == 0
    assert "refused Map-Register from 192.0.2.10:40000" in logs(actions)[0].message


def test_non_ip_eid_refused_and_the_log_line_stays_one_line() -> None:
    ms = make_ms()
    record = EidRecord(DistinguishedName("host\nFAKE: registered everything"), 0, (), 3)
    [line] = ms.handle(register(record), XTR, 0.0)
    assert ms.counters["prefix-not-allowed"] == 1
    assert isinstance(line, Log) and "\n" not in line.message and "\\n" in line.message


def test_the_longest_allowed_prefix_owns_its_space() -> None:
    outer = Site("outer", {0: b"o"}, ((0, ip_network("10.0.0.0/8")),))
    inner = Site("inner", {0: b"i"}, ((0, ip_network("10.7.0.0/16")),), accept_more_specifics=False)
    ms = MapServer([outer, inner])
    assert sends(ms.handle(register(rec("10.8.1.0/24"), key=b"o"), XTR, 0.0))
    assert sends(ms.handle(register(rec("10.7.1.0/24"), key=b"o"), XTR, 0.0)) == []
    assert sends(ms.handle(register(rec("10.7.0.0/16"), key=b"i"), XTR, 0.0))
    assert ms.counters["prefix-not-allowed"] == 1


def test_more_specifics_per_site_setting() -> None:
    ms = make_ms()
    assert sends(ms.handle(register(rec("10.1.5.0/24")), XTR, 0.0))  # alpha: more-specifics ok
    assert sends(ms.handle(register(rec("10.1.0.0/16")), XTR, 0.0))  # and exact
    refused = ms.handle(register(rec("10.2.5.0/24"), key=KEY_B), XTR, 0.0)  # beta: exact only
    assert sends(refused) == [] and ms.counters["prefix-not-allowed"] == 1
    assert sends(ms.handle(register(rec("10.2.0.0/16"), key=KEY_B), XTR, 0.0))
    assert ms.registration_count() == 3


def test_expiry_default_timeout_and_refresh() -> None:
    ms = make_ms()
    ms.handle(register(rec("10.1.5.0/24")), XTR, 0.0)
    assert ms.expire(179.9) == []
    ms.handle(register(rec("10.1.5.0/24")), XTR, 100.0)  # refresh: now expires at 280
    assert ms.expire(200.0) == []
    assert ms.lookup(IPv4Address("10.1.5.1"), now=279.0) is not None
    [gone] = ms.expire(280.0)
    assert str(gone.prefix) == "10.1.5.0/24" and ms.registration_count() == 0
    assert ms.lookup(IPv4Address("10.1.5.1")) is None
    assert ms.counters["expired"] == 1


def test_expiry_by_record_ttl_with_t_bit() -> None:
    ms = make_ms()
    ms.handle(register(rec("10.1.5.0/24", ttl=5), ttl_timeout=True), XTR, 0.0)
    ms.handle(register(rec("10.1.6.0/24", ttl=5)), XTR, 0.0)  # no T: 180 s
    [short] = ms.expire(180.0)
    assert str(short.prefix) == "10.1.6.0/24"
    assert ms.expire(299.0) == []
    [long] = ms.expire(300.0)
    assert str(long.prefix) == "10.1.5.0/24"


def test_record_ttl_zero_deregisters() -> None:
    ms = make_ms()
    ms.handle(register(rec("10.1.5.0/24")), XTR, 0.0)
    assert sends(ms.handle(register(rec("10.1.5.0/24", ttl=0), ttl_timeout=True), XTR, 1.0))
    assert ms.registration_count() == 0 and ms.counters["deregistered"] == 1
    assert ms.expire(1000.0) == []  # the stale heap entry is skipped


def test_rloc_set_change_is_logged_and_counted() -> None:
    ms = make_ms()
    ms.handle(register(rec("10.1.5.0/24")), XTR, 0.0)
    moved = (RlocRecord(IPv4Address("203.0.113.1")),)
    actions = ms.handle(register(rec("10.1.5.0/24", moved)), ("203.0.113.1", 4342), 5.0)
    assert ms.counters["rloc-set-changed"] == 1
    assert any("moved from RLOCs 192.0.2.10 to 203.0.113.1" in x.message for x in logs(actions))
    assert ms.lookup(IPv4Address("10.1.5.9")).rlocs == moved  # type: ignore[union-attr]


# -- Map-Request --------------------------------------------------------------------------------

ETR_RLOCS = (
    RlocRecord(IPv4Address("203.0.113.9"), priority=2, local=True),
    RlocRecord(IPv4Address("198.51.100.7"), priority=1, weight=10, local=True),
    RlocRecord(IPv4Address("198.51.100.8"), priority=1, weight=50, local=True),
    RlocRecord(IPv4Address("192.0.2.99"), priority=0, reachable=False),
    RlocRecord(IPv4Address("192.0.2.98"), priority=255),
    RlocRecord(IPv6Address("2001:db8::1"), priority=0),
)


def test_map_request_forwarded_to_the_best_etr_keeping_inner_source_and_port() -> None:
    ms = make_ms()
    ms.handle(register(rec("10.1.5.0/24", ETR_RLOCS)), XTR, 0.0)
    key_lcaf = SecurityKey(2, (bytes(32),), ITR)  # RFC 8061: ITR-RLOC 1 carries the key
    raw, inner = ecm_request(IPv4Address("10.1.5.20"), itr_rlocs=(key_lcaf,))
    [out] = ms.handle(raw, ("198.18.0.5", 4342), 1.0)
    assert isinstance(out, SendTo)
    # Family of the socket first, then priority 1 (0 is unreachable), then the higher weight.
    assert out.address == ("198.51.100.8", 4342)
    ecm = EncapsulatedControl.decode(out.data)
    assert ecm.inner_source == ITR and ecm.source_port == 61000
    assert ecm.inner_dest == IPv4Address("10.1.5.20")
    assert ecm.message == inner  # untouched: the ETR sees the ITR's key
    assert ecm.to_etr and ecm.ttl == 63
    assert ms.counters["forwarded"] == 1 and ms.counters["map-request"] == 1
    # What the MS sends to an ETR is never taken in again (an RLOC that is the MS itself).
    assert sends(ms.handle(out.data, ("198.51.100.8", 4342), 1.0)) == []
    assert ms.counters["ecm-for-etr"] == 1
    # Without the E bit, the inner TTL still ends a loop.
    looped = EncapsulatedControl.decode(raw)
    for _ in range(70):
        [action] = ms.handle(looped.encode(), ("198.51.100.8", 4342), 1.0)
        if not isinstance(action, SendTo):
            break
        looped = EncapsulatedControl.decode(action.data)
        looped = EncapsulatedControl(looped.inner_source, looped.inner_dest, looped.message,
                                     looped.source_port, ttl=looped.ttl)  # fmt: skip
    assert ms.counters["ttl-exceeded"] == 1
    assert ms.counters["forwarded"] == 1 + 63  # TTL 64 -> 1, then dropped


def test_forward_port_is_configurable_and_v6_iid_lookup() -> None:
    ms = make_ms(etr_port=5000)
    rlocs = (RlocRecord(IPv6Address("2001:db8::9")), RlocRecord(IPv4Address("192.0.2.9")))
    ms.handle(register(rec("fd00:1:0:5::/64", rlocs, iid=7)), XTR, 0.0)
    eid = InstanceId(7, IPv6Address("fd00:1:0:5::1"))
    raw, _ = ecm_request(eid, 128, itr_rlocs=(IPv6Address("2001:db8::5"),),
                         inner_source=IPv6Address("2001:db8::5"))  # fmt: skip
    [out] = ms.handle(raw, ("2001:db8::5", 4342), 1.0)
    assert isinstance(out, SendTo) and out.address == ("2001:db8::9", 5000)
    # Over IPv4, the IPv4 RLOC is chosen.
    [out4] = ms.handle(raw, ("192.0.2.5", 4342), 1.0)
    assert isinstance(out4, SendTo) and out4.address == ("192.0.2.9", 5000)


def test_proxy_reply_for_site_or_p_bit() -> None:
    ms = make_ms()
    ms.handle(register(rec("10.3.1.0/24", ETR_RLOCS[:2], ttl=1440), key=KEY_C, key_id=3), XTR, 0)
    ms.handle(register(rec("10.1.7.0/24", ETR_RLOCS[:1]), proxy_reply=True), XTR, 0)
    for eid, prefix, rlocs, ttl in (
        ("10.3.1.1", "10.3.1.0/24", ETR_RLOCS[:2], 1440),
        ("10.1.7.1", "10.1.7.0/24", ETR_RLOCS[:1], 3),
    ):
        raw, _ = ecm_request(IPv4Address(eid), nonce=42)
        [out] = ms.handle(raw, ("198.18.0.5", 4342), 1.0)
        assert isinstance(out, SendTo) and out.address == ("198.18.0.5", 61000)
        reply = MapReply.decode(out.data)
        assert reply.nonce == 42 and not reply.probe
        [record] = reply.records
        assert record.prefix == ip_network(prefix) and record.ttl == ttl
        assert not record.authoritative and record.action == Action.NO_ACTION
        assert [r.address for r in record.rlocs] == [r.address for r in rlocs]
        assert all(r.reachable and not r.local and not r.probed for r in record.rlocs)
    assert ms.counters["proxy-reply"] == 2


def test_direct_map_request_replies_to_the_udp_source_port() -> None:
    ms = make_ms()
    ms.handle(register(rec("10.1.5.0/24", ETR_RLOCS[:1])), XTR, 0.0)
    request = MapRequest(7, (ITR,), (RequestRecord(IPv4Address("10.1.5.1"), 32),)).encode()
    [fwd] = ms.handle(request, ("198.18.0.5", 50123), 1.0)
    assert isinstance(fwd, SendTo) and fwd.address == ("203.0.113.9", 4342)
    ecm = EncapsulatedControl.decode(fwd.data)
    assert (ecm.inner_source, ecm.source_port, ecm.message) == (ITR, 50123, request)
    miss = MapRequest(8, (ITR,), (RequestRecord(IPv4Address("10.1.9.1"), 32),)).encode()
    [neg] = ms.handle(miss, ("198.18.0.5", 50123), 1.0)
    assert isinstance(neg, SendTo) and neg.address == ("198.18.0.5", 50123)


def test_reply_goes_to_the_itr_rloc_of_the_senders_family() -> None:
    ms = make_ms()
    rlocs = (
        DistinguishedName("itr"),
        IPv6Address("2001:db8::5"),
        AfiList((DistinguishedName("x"), IPv4Address("198.18.0.77"))),
    )
    raw, _ = ecm_request(IPv4Address("10.1.9.1"), itr_rlocs=rlocs)
    [out] = ms.handle(raw, ("198.18.0.77", 4342), 0.0)
    assert isinstance(out, SendTo) and out.address == ("198.18.0.77", 61000)
    raw, _ = ecm_request(IPv4Address("10.1.9.1"), itr_rlocs=(DistinguishedName("only-a-name"),))
    assert sends(ms.handle(raw, ("198.18.0.77", 4342), 0.0)) == []
    assert ms.counters["no-itr-rloc"] == 1


def test_negative_reply_outside_eid_space() -> None:
    ms = make_ms()
    raw, _ = ecm_request(IPv4Address("192.168.1.1"), nonce=5)
    [out] = ms.handle(raw, ("198.18.0.5", 4342), 0.0)
    assert isinstance(out, SendTo) and out.address == ("198.18.0.5", 61000)
    reply = MapReply.decode(out.data)
    [record] = reply.records
    assert reply.nonce == 5 and record.rlocs == ()
    assert record.prefix == ip_network("128.0.0.0/1")  # 10.1-3/16 all live in 0/1
    assert (record.action, record.ttl) == (Action.NATIVELY_FORWARD, 15)
    assert not record.authoritative
    assert ms.counters["negative-reply"] == 1


def test_negative_reply_inside_allowed_space_never_forwards_natively() -> None:
    ms = make_ms()
    ms.handle(register(rec("10.1.5.0/24")), XTR, 0.0)
    raw, _ = ecm_request(IPv4Address("10.1.200.1"))
    [out] = ms.handle(raw, ("198.18.0.5", 4342), 0.0)
    [record] = MapReply.decode(out.data).records  # type: ignore[union-attr]
    assert record.prefix == ip_network("10.1.128.0/17")
    assert (record.action, record.ttl) == (Action.SEND_MAP_REQUEST, 1)
    # Nothing registered in beta's prefix: the whole allowed prefix is the hole.
    raw, _ = ecm_request(IPv4Address("10.2.3.4"))
    [out] = ms.handle(raw, ("198.18.0.5", 4342), 0.0)
    [record] = MapReply.decode(out.data).records  # type: ignore[union-attr]
    assert record.prefix == ip_network("10.2.0.0/16") and record.action == Action.SEND_MAP_REQUEST
    # Expired but not yet swept: negative already.
    raw, _ = ecm_request(IPv4Address("10.1.5.1"))
    [out] = ms.handle(raw, ("198.18.0.5", 4342), 500.0)
    [record] = MapReply.decode(out.data).records  # type: ignore[union-attr]
    assert record.prefix == ip_network("10.1.5.0/24") and record.action == Action.SEND_MAP_REQUEST


def test_short_requested_prefix_finds_the_registered_more_specific() -> None:
    ms = make_ms()
    ms.handle(register(rec("10.3.0.0/24", ETR_RLOCS[:1]), key=KEY_C, key_id=3), XTR, 0.0)
    raw, _ = ecm_request(IPv4Address("10.3.0.0"), 16)
    [out] = ms.handle(raw, ("198.18.0.5", 4342), 0.0)
    [record] = MapReply.decode(out.data).records  # type: ignore[union-attr]
    assert record.prefix == ip_network("10.3.0.0/24") and record.rlocs


def test_negative_reply_keeps_the_instance_id() -> None:
    ms = make_ms()
    raw, _ = ecm_request(InstanceId(7, IPv6Address("fd00:2::1")), 128,
                         itr_rlocs=(ITR,))  # fmt: skip
    [out] = ms.handle(raw, ("198.18.0.5", 4342), 0.0)
    [record] = MapReply.decode(out.data).records  # type: ignore[union-attr]
    assert record.instance_id == 7
    assert record.prefix == ip_network("fd00:2::/31")  # fd00::/30 would hold fd00:1::/48
    assert record.action == Action.NATIVELY_FORWARD


# -- the hole, against brute force --------------------------------------------------------------


def brute_hole(address: Any, prefixes: list[Prefix]) -> Prefix:
    """The shortest prefix around `address` that every member is disjoint from or contains."""
    for length in range(address.max_prefixlen + 1):
        candidate = ip_network((address, length), strict=False)
        if all(
            not p.overlaps(candidate) or candidate.subnet_of(p)  # type: ignore[arg-type]
            for p in prefixes
            if p.version == candidate.version
        ):
            return candidate
    raise AssertionError("unreachable")


def v4_prefixes(base: int = 0x0A000000, span_bits: int = 12) -> st.SearchStrategy[Prefix]:
    """Prefixes packed into a small space (10.0.0.0/20 by default) so they collide often."""
    return st.builds(
        lambda offset, length: ip_network((base + offset, length), strict=False),
        st.integers(0, (1 << span_bits) - 1),
        st.integers(32 - span_bits - 2, 32),
    )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(v4_prefixes(), max_size=12),
    st.integers(0x0A000000 - 50, 0x0A000000 + (1 << 12) + 50),
)
def test_least_specific_hole_matches_brute_force_v4(prefixes: list[Prefix], addr: int) -> None:
    address = IPv4Address(addr)
    assert least_specific_hole(address, prefixes) == brute_hole(address, prefixes)


@settings(max_examples=100)
@given(
    st.lists(
        st.builds(
            lambda offset, length: ip_network((0xFD << 120 | offset << 100, length), strict=False),
            st.integers(0, 255),
            st.integers(8, 40),
        ),
        max_size=8,
    ),
    st.integers(0, 255),
    st.integers(0, (1 << 100) - 1),
)
def test_least_specific_hole_matches_brute_force_v6(
    prefixes: list[Prefix], top: int, low: int
) -> None:
    address = IPv6Address(0xFD << 120 | top << 100 | low)
    assert least_specific_hole(address, prefixes) == brute_hole(address, prefixes)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_map_resolver_answers_match_brute_force(data: st.DataObject) -> None:
    """Random allowed space and registrations: every answer is right by construction."""
    allowed = data.draw(st.lists(v4_prefixes(), min_size=1, max_size=5, unique=True))
    sites = [Site(f"s{i}", {0: b"k%d" % i}, ((0, p),), proxy_reply=True)
             for i, p in enumerate(allowed)]  # fmt: skip
    ms = MapServer(sites)
    registered: list[Prefix] = []
    for i, prefix in enumerate(allowed):
        subs = data.draw(st.lists(st.integers(prefix.prefixlen, 32), max_size=3))
        for sub_len in subs:
            offset = data.draw(st.integers(0, prefix.num_addresses - 1))
            sub = ip_network((int(prefix.network_address) + offset, sub_len), strict=False)
            raw = register(rec(str(sub)), key=b"k%d" % i)
            if sends(ms.handle(raw, XTR, 0.0)):
                registered.append(sub)
    expected_regs = {r.prefix for r in ms.registrations()}
    assert expected_regs == set(registered)
    for _ in range(5):
        addr = IPv4Address(data.draw(st.integers(0x0A000000 - 50, 0x0A000000 + (1 << 12) + 50)))
        raw, _ = ecm_request(addr)
        [out] = ms.handle(raw, ("198.18.0.5", 4342), 1.0)
        assert isinstance(out, SendTo)
        [record] = MapReply.decode(out.data).records
        covering = [p for p in registered if addr in p]
        if covering:
            assert record.prefix == max(covering, key=lambda p: p.prefixlen)
            assert record.rlocs
            continue
        assert record.prefix == brute_hole(addr, allowed + registered)
        assert not any(record.prefix.overlaps(p) for p in registered)
        if any(addr in p for p in allowed):
            assert record.action == Action.SEND_MAP_REQUEST and record.ttl == 1
        else:
            assert not any(record.prefix.overlaps(p) for p in allowed)
            assert record.action == Action.NATIVELY_FORWARD and record.ttl == 15


# -- hostile input -------------------------------------------------------------------------------


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(raw: bytes) -> None:
    ms = make_ms()
    actions = ms.handle(raw, XTR, 0.0)
    assert sends(actions) == [] or raw[:1] in (b"\x10", b"\x80")  # requests may get answers
    assert sum(ms.counters.values()) >= 1


@settings(max_examples=200)
@given(st.binary(max_size=120), st.sampled_from([0x10, 0x30, 0x80, 0x40, 0x70]))
def test_random_bodies_of_each_type_never_raise(body: bytes, first: int) -> None:
    ms = make_ms()
    ms.handle(bytes((first,)) + body, XTR, 0.0)
    ms.expire(1e9)


def test_truncated_registers_are_malformed() -> None:
    ms = make_ms()
    raw = register(rec("10.1.5.0/24"), rec("10.1.6.0/24"), xtr_id=5)
    for cut in range(len(raw)):
        assert sends(ms.handle(raw[:cut], XTR, 0.0)) == []
    assert ms.counters["malformed"] == len(raw)
    assert ms.registration_count() == 0
    assert sends(ms.handle(raw, XTR, 0.0))  # the whole one still works


def test_truncated_and_odd_requests_are_counted() -> None:
    ms = make_ms()
    raw, _ = ecm_request(IPv4Address("10.1.5.1"))
    for cut in range(len(raw)):
        ms.handle(raw[:cut], XTR, 0.0)
    assert ms.counters["malformed"] + ms.counters["unsupported-type"] == len(raw)
    inner_register = EncapsulatedControl(ITR, ITR, register(rec("10.1.5.0/24"))).encode()
    assert ms.handle(inner_register, XTR, 0.0)[0] == Log(
        logging.INFO,
        "dropped Map-Request from 192.0.2.10:40000: ECM carries type 3, not a Map-Request",
        "unsupported-type",
    )
    probe = MapRequest(1, (ITR,), (RequestRecord(IPv4Address("10.1.5.1"), 32),), probe=True)
    assert sends(ms.handle(probe.encode(), XTR, 0.0)) == []
    assert ms.counters["probe-not-for-ms"] == 1
    mac = ecm_request(IPv4Address("10.1.5.1"))[0]  # fine; now a non-IP EID:
    request = MapRequest(1, (ITR,), (RequestRecord(DistinguishedName("x"), 0),)).encode()
    ms.handle(EncapsulatedControl(ITR, ITR, request).encode(), XTR, 0.0)
    assert ms.counters["unsupported-eid"] == 1 and mac
    assert ms.handle(b"\x50" + bytes(20), XTR, 0.0)[0].reason == "unsupported-type"  # type: ignore[union-attr]


# -- scale -----------------------------------------------------------------------------------


def test_memory_per_registration_is_under_1kb() -> None:
    ms = MapServer([Site("big", {0: b"k"}, ((0, ip_network("10.0.0.0/8")),))])
    raws = [
        register(rec(str(IPv4Address(0x0A000000 + (i << 8))) + "/24"), key=b"k")
        for i in range(5000)
    ]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for raw in raws:
        ms.handle(raw, XTR, 0.0)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert ms.registration_count() == 5000
    assert used / 5000 < 1024, f"{used / 5000:.0f} bytes per registration"


# -- the service ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_service_sends_logs_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    sent: list[tuple[bytes, tuple[str, int]]] = []
    clock = FakeClock()
    service = MapServerService(make_ms(), lambda d, a: sent.append((d, a)), clock)
    caplog.set_level(logging.DEBUG, logger="lispmesh.map_server")
    service.handle(register(rec("10.1.5.0/24")), XTR)
    assert len(sent) == 1 and sent[0][1] == XTR
    service.handle(register(rec("10.1.5.0/24"), key=KEY_B), XTR)
    assert "authentication failed" in caplog.text
    assert not any(k.decode() in caplog.text for k in ALL_KEYS)

    def broken(*_: Any) -> list[MsAction]:
        raise RuntimeError("boom")

    service.core.handle = broken  # type: ignore[method-assign, assignment]
    service.handle(b"\x30", XTR)
    assert service.counters["internal-error"] == 1
    assert "boom" in caplog.text


def test_service_send_errors_are_counted() -> None:
    def failing(_data: bytes, _addr: tuple[str, int]) -> None:
        raise OSError("network unreachable")

    service = MapServerService(make_ms(), failing, FakeClock())
    service.handle(register(rec("10.1.5.0/24")), XTR)
    assert service.counters["send-error"] == 1 and service.counters["registered"] == 1


def test_service_rate_limits_refusal_logs(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    service = MapServerService(make_ms(), lambda d, a: None, clock, log_burst=3, log_window=10)
    caplog.set_level(logging.INFO, logger="lispmesh.map_server")
    for _ in range(20):
        service.handle(register(rec("10.9.0.0/24")), XTR)
    assert caplog.text.count("refused Map-Register") == 3
    assert service.counters["prefix-not-allowed"] == 20
    service.expire()
    assert "prefix-not-allowed x17" in caplog.text
    clock.now = 11.0
    service.handle(register(rec("10.9.0.0/24")), XTR)
    assert caplog.text.count("refused Map-Register") == 4


def test_service_status_is_json() -> None:
    clock = FakeClock()
    service = MapServerService(make_ms(), lambda d, a: None, clock)
    service.handle(register(rec("10.1.5.0/24"), xtr_id=0xAB), XTR)
    clock.now = 30.0
    status = json.loads(json.dumps(service.status()))
    assert status["counters"]["registered"] == 1
    [reg] = status["registrations"]
    assert reg["site"] == "alpha" and reg["eid_prefix"] == "10.1.5.0/24"
    assert reg["expires_in"] == 150.0 and reg["last_registered_ago"] == 30.0
    assert reg["rlocs"][0]["address"] == "192.0.2.10"
    assert reg["xtr_id"].endswith("ab") and reg["registered_from"] == "192.0.2.10:40000"


def test_service_expiry_task() -> None:
    clock = FakeClock()
    service = MapServerService(make_ms(), lambda d, a: None, clock, expiry_interval=0.01)
    service.handle(register(rec("10.1.5.0/24")), XTR)

    async def run() -> None:
        await service.start()
        clock.now = 1000.0
        for _ in range(200):
            if service.core.registration_count() == 0:
                break
            await asyncio.sleep(0.01)
        await service.stop()
        await service.stop()  # idempotent

    asyncio.run(asyncio.wait_for(run(), 5))
    assert service.core.registration_count() == 0 and service.counters["expired"] == 1


def test_ip_address_helper_sanity() -> None:
    # A scoped IPv6 source (link-local) still parses for family selection.
    ms = make_ms()
    raw, _ = ecm_request(IPv4Address("10.1.9.1"), itr_rlocs=(IPv6Address("fe80::1"), ITR))
    [out] = ms.handle(raw, ("fe80::2%eth0", 4342), 0.0)
    assert isinstance(out, SendTo) and ip_address(out.address[0]) == IPv6Address("fe80::1")


# -- hardening (issue 12) and Info-Request (issue 16) ---------------------------------------------


def _host_records(first: int, count: int) -> tuple[EidRecord, ...]:
    return tuple(rec(f"{IPv4Address(0x0A080000 + first + i)}/32") for i in range(count))


def test_a_site_cannot_register_unlimited_more_specifics() -> None:
    """The attack: a site allowed 10.8.0.0/16 (more-specifics accepted) registers /32 after /32,
    255 per Map-Register, well past any sane number. The site's limit stops it, counted, and
    what it holds keeps being refreshed."""
    site = Site("greedy", {0: KEY_A}, ((0, ip_network("10.8.0.0/16")),))
    ms = MapServer([site])
    limit = 10_000  # the default of Site.max_registrations
    sent = 0
    while sent < limit + 1000:
        ms.handle(register(*_host_records(sent, 250), want_map_notify=False), XTR, 0.0)
        sent += 250
    assert ms.registration_count() <= limit
    assert ms.registration_count() >= limit - 250  # refused whole messages only past the limit
    assert ms.counters["site-limit"] >= 4
    held = ms.registration_count()
    # What it holds refreshes fine at the limit; a deregistration makes room again.
    assert ms.handle(register(*_host_records(0, 250), want_map_notify=False), XTR, 1.0) == []
    gone = tuple(replace_ttl(r, 0) for r in _host_records(0, 10))
    assert ms.handle(register(*gone, want_map_notify=False), XTR, 2.0) == []
    assert ms.registration_count() == held - 10
    fresh = register(*_host_records(sent + 10, 10), want_map_notify=False)
    assert ms.handle(fresh, XTR, 3.0) == [] and ms.registration_count() == held
    assert site.max_registrations == limit
    with pytest.raises(ValueError, match="max_registrations"):
        Site("zero", {0: b"k"}, (), max_registrations=0)


def replace_ttl(record: EidRecord, ttl: int) -> EidRecord:
    return EidRecord(record.eid, record.mask_len, record.rlocs, ttl, authoritative=True)


def test_a_forged_source_eid_does_not_identify_another_site() -> None:
    """The attack: a requester that no policy allows claims the source EID of a site that is
    allowed, lists that site's RLOC among its ITR-RLOCs and its own address first, and asks a
    proxy-replying site's EID. Before the fix it was taken for the allowed site and the locators
    went to the attacker's address; now it is not identified at all."""
    sites = [
        Site("allowed", {0: KEY_A}, ((0, ip_network("10.1.0.0/16")),)),
        Site("target", {3: KEY_C}, ((0, ip_network("10.3.0.0/16")),), proxy_reply=True),
    ]
    ms = MapServer(sites, policy_check=lambda site, iid, eid: None if site is None else True)
    allowed_rloc = RlocRecord(IPv4Address("192.0.2.10"), local=True)
    ms.handle(register(rec("10.1.0.0/16", (allowed_rloc,))), XTR, 0.0)
    ms.handle(register(rec("10.3.0.0/16", ETR_RLOCS[:1]), key=KEY_C, key_id=3), XTR, 0.0)
    attacker = IPv4Address("198.51.100.66")

    def ask(itr_rlocs: tuple[Any, ...]) -> MapReply:
        request = MapRequest(
            7, itr_rlocs, (RequestRecord(IPv4Address("10.3.0.1"), 32),),
            source_eid=IPv4Address("10.1.0.1"),
        )  # fmt: skip
        [out] = ms.handle(request.encode(), (str(attacker), 4342), 1.0)
        assert isinstance(out, SendTo)
        return MapReply.decode(out.data)

    forged = ask((attacker, allowed_rloc.address))
    assert forged.records[0].rlocs == () and ms.counters["requester-unknown"] == 1
    # The real site (all its ITR-RLOCs registered) is still identified and answered.
    assert ask((allowed_rloc.address,)).records[0].rlocs


def _info_request(eid: Any = None, mask_len: int = 24, key: bytes | None = KEY_A) -> bytes:
    from lisp import InfoMessage
    from lisp.auth import AuthAlg

    eid = IPv4Address("10.1.5.0") if eid is None else eid
    alg = AuthAlg.HMAC_SHA_256_128 if key is not None else AuthAlg.NONE
    raw = InfoMessage(0x1F0A, False, 0, alg, b"", 0, eid, mask_len).encode()
    return auth.sign(raw, key) if key is not None else raw


NATTED = ("203.0.113.50", 61001)  # the address and port a NAT translated the xTR to


def test_info_request_is_answered_with_the_global_address_and_port() -> None:
    from lisp import InfoMessage, NatTraversal

    ms = make_ms()
    [out] = ms.handle(_info_request(), NATTED, 0.0)
    assert isinstance(out, SendTo) and out.address == NATTED
    assert auth.verify(out.data, KEY_A)  # signed with the site's key
    reply = InfoMessage.decode(out.data)
    assert reply.is_reply and reply.nonce == 0x1F0A and reply.key_id == 0
    assert (reply.eid, reply.mask_len) == (IPv4Address("10.1.5.0"), 24)
    nat = reply.payload
    assert isinstance(nat, NatTraversal)
    assert (nat.global_etr, nat.etr_port, nat.ms_port) == (IPv4Address(NATTED[0]), NATTED[1], 4342)
    assert ms.counters["info-request"] == 1 and ms.counters["info-reply"] == 1
    assert ms.counters["unsupported-type"] == 0


def test_info_requests_that_cannot_be_authenticated_are_refused_and_counted() -> None:
    ms = make_ms()
    cases = [
        (_info_request(key=KEY_B), "bad-auth"),  # not alpha's key
        (_info_request(IPv4Address("10.9.0.0"), 16), "prefix-not-allowed"),
        (_info_request(DistinguishedName("vm"), 0), "bad-auth"),  # signed, but names no site
        (_info_request(DistinguishedName("vm"), 0, key=None), "info-unauthenticated"),
        (_info_request()[:20], "malformed"),
    ]
    for raw, reason in cases:
        assert [(type(a).__name__, a.reason) for a in ms.handle(raw, NATTED, 0.0)] == [  # type: ignore[union-attr]
            ("Log", reason)
        ], reason
    reply = bytes((0x78,)) + _info_request()[1:]  # an Info-Reply (R bit) sent to us
    assert [a.reason for a in logs(ms.handle(reply, NATTED, 0.0))] == ["info-reply-not-for-ms"]
    assert ms.counters["info-reply"] == 0 and ms.counters["unsupported-type"] == 0


def test_unauthenticated_info_requests_answered_when_enabled_like_lispers_net() -> None:
    from lisp import InfoMessage, NatTraversal

    ms = make_ms(accept_unauthenticated_info=True, rtrs=(IPv4Address("10.77.0.9"),))
    [out] = ms.handle(_info_request(DistinguishedName("vm"), 0, key=None), NATTED, 0.0)
    assert isinstance(out, SendTo)
    reply = InfoMessage.decode(out.data)
    assert reply.alg_id == 0 and reply.auth_data == b""
    nat = reply.payload
    assert isinstance(nat, NatTraversal)
    assert nat.private_etr == DistinguishedName("vm") and nat.rtrs == (IPv4Address("10.77.0.9"),)


@settings(max_examples=300)
@given(st.data())
def test_mutated_info_requests_never_raise_and_are_counted_once(data: st.DataObject) -> None:
    """The Info-Request path fuzzed like the decoders: any mutation of a signed request (or of
    an unsigned one, with unauthenticated requests accepted) gives one answer or one refusal."""
    from lisp import InfoMessage

    lenient = data.draw(st.booleans())
    base = _info_request(key=None if lenient else KEY_A)
    raw = bytearray(base)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    ms = make_ms(accept_unauthenticated_info=lenient)
    actions = ms.handle(bytes(raw[:cut]) + data.draw(st.binary(max_size=16)), NATTED, 0.0)
    assert len(actions) == 1
    if isinstance(actions[0], SendTo):
        assert InfoMessage.decode(actions[0].data).is_reply
    assert sum(ms.counters.values()) >= 1
