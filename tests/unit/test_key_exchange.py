"""The key exchange state machine (mesh.key_exchange) alone, in memory: two nodes' KeyExchange
objects pass the Security-Key addresses of their Map-Request and Map-Reply to each other directly,
with the time and the wall clock in the test's hands. Every refusal is typed: it names the drop
counter and installs nothing."""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from ipaddress import IPv4Address, ip_network
from pathlib import Path

import pytest

from lisp.kx_lcaf import extract_security
from lisp.lcaf import JsonLcaf, SecurityKey
from mesh.key_exchange import KeyExchange, KxRefused
from mesh.keys import KeyStore
from tests.unit import test_xtr_memory as memory

pki = memory.pki
NOW = 1000.0
A_RLOC, B_RLOC = IPv4Address("10.77.0.11"), IPv4Address("10.77.0.12")
B_EID = (0, ip_network("10.1.2.0/24"))


def _node(pki: dict[str, Path], name: str) -> KeyExchange:
    keys = KeyStore(cipher_suite=5, instance_id=0, rekey_after_seconds=120,
                    rekey_after_packets=10**8)  # fmt: skip
    keys.start(NOW)
    return KeyExchange(keys, memory.authority(pki, name, time.time))


def _request(a: KeyExchange, nonce: int = 7) -> tuple[SecurityKey, JsonLcaf | None]:
    key, proof, _ = extract_security(a.request_itr_rloc(nonce, A_RLOC, (A_RLOC,), (B_EID,)))
    assert key is not None
    return key, proof


def _accept_request(b: KeyExchange, key: SecurityKey, proof: JsonLcaf | None) -> tuple[str, int]:
    return b.accept_request(key, proof, 7, [str(A_RLOC)], str(A_RLOC), (B_EID,), NOW)


def _reply(b: KeyExchange, key_id: int, nonce: int = 7) -> tuple[SecurityKey, JsonLcaf | None]:
    proof = b.reply_proof(nonce, key_id, (B_EID,), (B_RLOC,))
    key, found, _ = extract_security(b.reply_rloc(B_RLOC, proof))
    assert key is not None
    return key, found


def test_a_request_and_its_reply_install_one_key_each_way(pki: dict[str, Path]) -> None:
    a, b = _node(pki, "n1"), _node(pki, "n2")
    assert _accept_request(b, *_request(a)) == ("n1", 1)
    encap = a.accept_reply(*_reply(b, 1), 7, 1, B_EID, (B_RLOC,), NOW)
    assert encap.peer_name == "n2"
    # What A seals for B, B's slot for A's RLOC opens: both ends derived the same key.
    packet = encap.seal(b"inner")
    assert b.keys.decap[(str(A_RLOC), 1)].cipher.open(packet) == (1, b"inner")


def _revoke(b: KeyExchange, name: str) -> None:
    b.revoked = frozenset({name})


@pytest.mark.parametrize(
    ("change", "drop"),
    [
        (lambda b, k, p: (replace(k, cipher_suite=6), p), "kx-cipher-mismatch"),
        (lambda b, k, p: (replace(k, keys=(b"\0" * 5,)), p), "kx-bad-key"),
        (lambda b, k, p: (k, None), "kx-auth-failed"),
        (lambda b, k, p: (_revoke(b, "n1"), k, p)[1:], "kx-revoked-peer"),
    ],
)
def test_a_refused_request_names_its_counter_and_installs_nothing(
    pki: dict[str, Path], change: object, drop: str
) -> None:
    a, b = _node(pki, "n1"), _node(pki, "n2")
    key, proof = change(b, *_request(a))  # type: ignore[operator]
    with pytest.raises(KxRefused) as refused:
        _accept_request(b, key, proof)
    assert refused.value.drop == drop
    assert b.keys.decap == {}


def test_a_retired_certificate_is_refused_both_ways(pki: dict[str, Path]) -> None:
    a, b = _node(pki, "n1"), _node(pki, "n2")
    assert a.authority is not None and b.authority is not None
    a_cert = a.authority.identity.certificate_der
    b.retired = frozenset({hashlib.sha256(a_cert).hexdigest()})
    with pytest.raises(KxRefused) as refused:
        _accept_request(b, *_request(a))
    assert refused.value.drop == "kx-retired-certificate" and b.keys.decap == {}
    a.retired = frozenset({hashlib.sha256(b.authority.identity.certificate_der).hexdigest()})
    b.retired = frozenset()
    _accept_request(b, *_request(a))
    with pytest.raises(KxRefused) as refused:
        a.accept_reply(*_reply(b, 1), 7, 1, B_EID, (B_RLOC,), NOW)
    assert refused.value.drop == "kx-retired-certificate" and a.keys.encap == {}


def test_a_reply_for_a_key_id_we_no_longer_hold_is_stale(pki: dict[str, Path]) -> None:
    a, b = _node(pki, "n1"), _node(pki, "n2")
    _accept_request(b, *_request(a))
    a.keys.rotate(NOW + 1)
    a.keys.rotate(NOW + 2)  # key-id 1 -> 2 -> 3: 1 is gone
    with pytest.raises(KxRefused) as refused:
        a.accept_reply(*_reply(b, 1), 7, 1, B_EID, (B_RLOC,), NOW + 2)
    assert refused.value.drop == "kx-stale-epoch"


def test_a_reply_without_a_key_is_refused_as_plaintext(pki: dict[str, Path]) -> None:
    a = _node(pki, "n1")
    with pytest.raises(KxRefused) as refused:
        a.accept_reply(None, None, 7, 1, B_EID, (B_RLOC,), NOW)
    assert refused.value.drop == "peer-without-encryption"
