"""The ITR side of the key store over a long life (issue 12 findings 5 and 6): a key that hit the
packet limit must not cause a rekey storm, and superseded key states must not pile up."""

from __future__ import annotations

from lisp.crypto import EcdhKeyPair
from mesh.keys import KeyStore

SUITE = 5  # AES-128-GCM


def _store(packets: int = 1000) -> KeyStore:
    store = KeyStore(SUITE, 0, rekey_after_seconds=120.0, rekey_after_packets=packets)
    store.start(0.0)
    return store


def test_a_key_at_the_packet_limit_rekeys_once_not_every_tick() -> None:
    keys = _store(packets=1000)
    peer = EcdhKeyPair.generate().public
    state = keys.install_encap(keys.epoch.key_id, peer, "b", 1.0)
    assert state is not None and not keys.rekey_due(1.0)
    state.counter = 1000  # sealed its limit
    assert keys.rekey_due(2.0)
    keys.rotate(2.0)
    # The attack of finding 5: the old state (still sealing until the peer answers the new key)
    # is over the limit; before the fix every following 0.1 s tick rekeyed again, forever.
    for tick in range(1, 50):
        assert not keys.rekey_due(2.0 + tick * 0.1), f"rekey storm at tick {tick}"
    assert keys.rekeys == 1
    # The peer answers the new key: it counts from zero again.
    fresh = keys.install_encap(keys.epoch.key_id, peer, "b", 3.0)
    assert fresh is not None and fresh is not state and fresh.counter == 0
    assert not keys.rekey_due(3.0)


def test_a_day_of_rekeys_keeps_at_most_two_states_per_peer() -> None:
    keys = _store()
    peers = {name: EcdhKeyPair.generate().public for name in ("b", "c", "d")}
    now = 0.0
    for _ in range(720):  # a day at 120 s
        now += 120.0
        assert keys.rekey_due(now)
        keys.rotate(now)
        for name, public in peers.items():
            assert keys.install_encap(keys.epoch.key_id, public, name, now + 0.5) is not None
        # Before the fix: one more state per peer per rekey, 2,160 by the end of the day.
        assert len(keys.encap) <= 2 * len(peers)
    assert len(keys.encap) == len(peers)  # every peer confirmed the current key


def test_make_before_break_keeps_the_old_key_until_the_peer_answers() -> None:
    keys = _store()
    public = EcdhKeyPair.generate().public
    old = keys.install_encap(keys.epoch.key_id, public, "b", 1.0)
    old_id = keys.epoch.key_id
    keys.rotate(120.0)
    assert old in keys.encap.values()  # still the state that seals for b
    # A late answer under the previous key-id still installs (the same state, not a new one).
    assert keys.install_encap(old_id, public, "b", 121.0) is old
    keys.rotate(240.0)  # b never answered key 2; key 1 is two epochs old now
    assert old not in keys.encap.values()
    assert keys.install_encap(old_id, public, "b", 241.0) is None  # that epoch is gone


def test_a_restarted_peer_replaces_its_state() -> None:
    keys = _store()
    first = keys.install_encap(keys.epoch.key_id, EcdhKeyPair.generate().public, "b", 1.0)
    second = keys.install_encap(keys.epoch.key_id, EcdhKeyPair.generate().public, "b", 50.0)
    assert first is not None and second is not None and first is not second
    assert list(keys.encap.values()) == [second]
    other = keys.install_encap(keys.epoch.key_id, EcdhKeyPair.generate().public, "c", 51.0)
    assert set(map(id, keys.encap.values())) == {id(second), id(other)}  # c does not evict b
