"""Test tiers.

- unit (tests/unit, no root): deterministic tests, under a minute in all on 2 cores
  (`pytest tests/unit -m "not fuzz and not cluster"`).
- fuzz: property-based tests (hypothesis) and the seeded fuzzers. They are the long runs, so they
  form their own tier; CI still runs them (scripts/test.sh runs every tier). A hypothesis test is
  put in this tier automatically; a non-hypothesis long run says so with `@pytest.mark.fuzz`.
- cluster: tests that run several controller replica processes on a real etcd cluster and kill,
  pause or cut them off (tests/unit/test_controller_quorum.py, ..._replicas.py,
  test_ha_placement_history.py): tens of seconds each, their own tier; CI runs it.
- root: namespace tests (tests/integration, tests/e2e).

CI runs the whole suite in a random order (pytest-randomly; the seed is printed at the end of the
run, `--randomly-seed=N` repeats an order), so tests that only pass after their neighbours show up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.etcd_cluster import EtcdCluster


def _is_property_test(item: pytest.Item) -> bool:
    function = getattr(item, "obj", None)
    return bool(getattr(function, "is_hypothesis_test", False))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    fuzz = pytest.mark.fuzz
    for item in items:
        if _is_property_test(item) or "TestMapCacheMachine" in item.nodeid:
            item.add_marker(fuzz)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    # `-q` hides pytest-randomly's header line: say the seed at the end, where a failure is read.
    seed = getattr(config.option, "randomly_seed", None)
    if seed is not None:
        terminalreporter.write_line(f"random order seed: {seed} (repeat: --randomly-seed={seed})")


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One real etcd member for the whole session; tests keep apart by key prefix."""
    from tests.etcd_cluster import EtcdCluster

    with EtcdCluster.start(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster
