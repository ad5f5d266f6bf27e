"""Fixtures for the TPM tests: one manufacturer CA and one manufactured TPM image per session,
and per test a fresh swtpm process on its own copy of that image."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.tpm import Tpm
from tests.controller_harness import Running
from tests.swtpm import ManufacturerCA, Swtpm, boot


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


@pytest.fixture
def booted(swtpm: Swtpm, tmp_path: Path) -> Path:
    """The swtpm after a (synthetic) measured boot; returns its event log file."""
    log_file = tmp_path / "eventlog.bin"
    boot(swtpm.tcti, log_file)
    return log_file


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop for tests that run a controller in it (tests.controller_harness)."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def controller_trusting(
    loop: asyncio.AbstractEventLoop, tmp_path: Path, ca: ManufacturerCA
) -> Iterator[Running]:
    """A controller whose TPM manufacturer CA is `ca`, stopped after the one item it yields."""
    ca_file = tmp_path / "tpm-ca.pem"
    ca_file.write_bytes(ca.pem())
    running = Running(loop, tmp_path / "ctl", tpm_ca=ca_file)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def ctl(loop: asyncio.AbstractEventLoop, tmp_path: Path, ca: ManufacturerCA) -> Iterator[Running]:
    yield from controller_trusting(loop, tmp_path, ca)
