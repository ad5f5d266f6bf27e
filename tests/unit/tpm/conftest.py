"""Fixtures for the TPM tests: one manufacturer CA per module, one fresh swtpm per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from node.tpm import Tpm
from tests.swtpm import ManufacturerCA, Swtpm


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ManufacturerCA:
    return ManufacturerCA.create(tmp_path_factory.mktemp("tpm-ca") / "ca")


@pytest.fixture
def swtpm(tmp_path: Path, ca: ManufacturerCA) -> Iterator[Swtpm]:
    with Swtpm.start(tmp_path / "swtpm", ca) as sw:
        yield sw


@pytest.fixture
def tpm(swtpm: Swtpm) -> Iterator[Tpm]:
    with Tpm.open(swtpm.tcti) as t:
        yield t
