"""Retired-certificate records go once their certificate has expired (issue 12): each renewal
stores one, and before they were kept for ever (a record per node per renewal, read on every
fan-out). Both backends: two controller handles on one store, as two replicas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controller_api.retired_certs import RetiredCertificates
from controller_api.store import RETIRED_CERTS, Store
from controller_api.store.etcd import EtcdStore
from controller_api.store.sqlite import SqliteStore
from tests.etcd_cluster import EtcdCluster, unique_prefix

NOW = 1_900_000_000.0


@pytest.fixture(params=["sqlite", "etcd"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    if request.param == "sqlite":
        pair: tuple[Store, Store] = (SqliteStore(tmp_path / "c.db"), SqliteStore(tmp_path / "c.db"))
    else:
        cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
        prefix = unique_prefix()
        pair = (EtcdStore(cluster.endpoints, prefix), EtcdStore(cluster.endpoints, prefix))
    yield pair
    for store in pair:
        store.close()


def test_records_of_expired_certificates_are_collected(stores: tuple[Store, Store]) -> None:
    one, two = RetiredCertificates(stores[0]), RetiredCertificates(stores[1])
    one.retire("n1", "aa" * 32, NOW, NOW + 100, now=NOW)  # refused until it expires at NOW + 100
    two.retire("n2", "bb" * 32, NOW, NOW + 1000, now=NOW)
    assert one.refused(NOW + 50) == ["aa" * 32, "bb" * 32]
    # A later renewal, on the other replica, after n1's old certificate expired.
    two.retire("n3", "cc" * 32, NOW + 200, NOW + 1000, now=NOW + 200)
    kept = sorted(r.key for r in stores[0].list_objects(RETIRED_CERTS))
    assert kept == ["bb" * 32, "cc" * 32]
    assert one.refused(NOW + 300) == ["bb" * 32, "cc" * 32]
    # The leader's chore collects them too, when no renewal comes.
    assert one.collect(NOW + 2000) == 2
    assert stores[1].list_objects(RETIRED_CERTS) == []
