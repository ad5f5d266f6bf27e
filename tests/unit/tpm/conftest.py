"""Fixtures for the TPM tests: one manufacturer CA and one manufactured TPM image per session,
and per test a fresh swtpm process on its own copy of that image."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from node.tpm import Tpm
from tests.swtpm import ManufacturerCA, Swtpm


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ManufacturerCA:
    return ManufacturerCA.create(tmp_path_factory.mktemp("tpm-ca") / "ca")


@pytest.fixture(scope="session")
def tpm_image(tmp_path_factory: pytest.TempPathFactory, ca: ManufacturerCA) -> Path:
    """A TPM state fresh from swtpm_setup, never run: each test gets a copy."""
    image = tmp_path_factory.mktemp("tpm-image") / "state"
    ca.manufacture(image)
    return image


@pytest.fixture
def swtpm(tmp_path: Path, tpm_image: Path) -> Iterator[Swtpm]:
    with Swtpm.clone(tpm_image, tmp_path / "swtpm") as sw:
        yield sw


@pytest.fixture
def tpm(swtpm: Swtpm) -> Iterator[Tpm]:
    with Tpm.open(swtpm.tcti) as t:
        yield t
