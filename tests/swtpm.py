"""Software TPMs for tests: a manufacturer CA (swtpm's localca) and swtpm instances on loopback.

Each instance is manufactured by `swtpm_setup --create-ek-cert` with its EK certificate signed by
the given CA, runs as its own `swtpm socket` process on two free loopback ports (the swtpm TCTI
uses port P for commands and P+1 for control), and is stopped by pid. No test touches a host TPM.

    ca = ManufacturerCA.create(tmp / "ca")
    with Swtpm.start(tmp / "tpm", ca) as sw:
        with Tpm.open(sw.tcti) as tpm: ...
"""

from __future__ import annotations

import hashlib
import random
import shutil
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from controller_api.attestation import Event, EventLog, ManufacturerCAs
from controller_api.attestation.eventlog import ALG_SHA1, ALG_SHA256, EV_SEPARATOR
from lispmesh.waiting import wait_until
from node.tpm import Tpm

SETUP_TIMEOUT = 60.0


@dataclass(frozen=True)
class ManufacturerCA:
    """A swtpm localca directory: a root and an intermediate that sign the EK certificates."""

    directory: Path

    @classmethod
    def create(cls, directory: Path) -> ManufacturerCA:
        directory.mkdir(parents=True)
        (directory / "localca.conf").write_text(
            f"statedir = {directory}\n"
            f"signingkey = {directory}/signkey.pem\n"
            f"issuercert = {directory}/issuercert.pem\n"
            f"certserial = {directory}/certserial\n"
        )
        (directory / "setup.conf").write_text(
            "create_certs_tool = /usr/bin/swtpm_localca\n"
            f"create_certs_tool_config = {directory}/localca.conf\n"
            "create_certs_tool_options = /etc/swtpm-localca.options\n"
            "active_pcr_banks = sha256\n"
        )
        ca = cls(directory)
        # swtpm_localca makes its CA on first use: manufacture one throwaway TPM to get it now.
        ca.manufacture(directory / "first-tpm")
        shutil.rmtree(directory / "first-tpm")
        return ca

    def manufacture(self, state: Path) -> None:
        """A new TPM state in `state` with EK certificates signed by this CA."""
        state.mkdir(parents=True)
        subprocess.run(
            [
                "swtpm_setup", "--tpm2", "--tpmstate", str(state), "--create-ek-cert",
                "--config", str(self.directory / "setup.conf"),
                "--logfile", str(state / "setup.log"),
            ],
            check=True, capture_output=True, timeout=SETUP_TIMEOUT,
        )  # fmt: skip

    def pem(self) -> bytes:
        """The root and the intermediate, as a verifier's --tpm-ca file holds them."""
        return (self.directory / "swtpm-localca-rootca-cert.pem").read_bytes() + (
            self.directory / "issuercert.pem"
        ).read_bytes()

    def trusted(self) -> ManufacturerCAs:
        """The CA as a verifier configures it (valid once a TPM has been manufactured with it)."""
        return ManufacturerCAs.from_pem([self.pem()])


def _free_port_pair() -> int:
    """A port P with P and P+1 free on 127.0.0.1 right now (bounded number of tries)."""
    for _ in range(200):
        port = random.randrange(20000, 60000, 2)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
                return port
        except OSError:
            continue
    raise RuntimeError("no free loopback port pair for swtpm")


def _accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Swtpm:
    """One swtpm process with its own state directory."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, state: Path, ca: ManufacturerCA) -> Swtpm:
        ca.manufacture(state)
        swtpm = cls(state)
        swtpm.power_on()
        return swtpm

    @classmethod
    def clone(cls, image: Path, state: Path) -> Swtpm:
        """A TPM started from a copy of a manufactured state (`image`): the same EK and
        certificate as every other clone, in its own directory and process (ms instead of the
        second swtpm_setup takes). Use start() where a test needs a distinct TPM."""
        shutil.copytree(image, state)
        swtpm = cls(state)
        swtpm.power_on()
        return swtpm

    @property
    def tcti(self) -> str:
        return f"swtpm:port={self.port}"

    def power_on(self) -> None:
        """Start the process (a TPM reset: PCRs back to their initial values, NV kept)."""
        self.port = _free_port_pair()
        log = self.state / "swtpm.log"
        with log.open("ab") as err:
            self._process = subprocess.Popen(
                [
                    "swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.state}",
                    "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                    "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
                    "--flags", "not-need-init,startup-clear",
                ],
                stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        process = self._process
        try:
            wait_until(
                lambda: process.poll() is not None or _accepting(self.port),
                timeout=10,
                what=f"swtpm on port {self.port}",
                interval=0.01,
            )
        except BaseException:
            self.power_off()
            raise
        if process.poll() is not None:
            raise RuntimeError(
                f"swtpm on port {self.port} exited: {log.read_text(errors='replace')}"
            )

    def power_off(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None

    def restart(self) -> None:
        self.power_off()
        self.power_on()

    def remove(self) -> None:
        self.power_off()
        shutil.rmtree(self.state, ignore_errors=True)

    def __enter__(self) -> Swtpm:
        return self

    def __exit__(self, *_: object) -> None:
        self.remove()


@dataclass(frozen=True)
class Measurement:
    """One boot event: `data` goes into the log, and the hash of `measured` (of `data` when not
    given, as for separators and variables) into the PCR and the log's digests."""

    pcr: int
    event_type: int
    data: bytes
    measured: bytes | None = None

    def digests(self) -> dict[int, bytes]:
        content = self.data if self.measured is None else self.measured
        return {
            ALG_SHA1: hashlib.sha1(content).digest(),
            ALG_SHA256: hashlib.sha256(content).digest(),
        }


def event_log(measurements: Iterable[Measurement]) -> EventLog:
    """The log firmware writes for `measurements`, in the SHA-1 and SHA-256 banks."""
    events = [Event(m.pcr, m.event_type, m.digests(), m.data) for m in measurements]
    return EventLog({ALG_SHA1: 20, ALG_SHA256: 32}, tuple(events))


def measured_boot(tpm: Tpm, measurements: Iterable[Measurement]) -> EventLog:
    """Play firmware: extend each measurement into its PCR and return the matching event log."""
    log = event_log(measurements)
    for event in log.events:
        tpm.pcr_extend(event.pcr, event.digests[ALG_SHA256])
    return log


EV_S_CRTM_VERSION = 0x00000008


def minimal_boot() -> list[Measurement]:
    """The least a firmware measures: its version in PCR 0 and a separator on each of PCRs 0-7."""
    return [
        Measurement(0, EV_S_CRTM_VERSION, "1.0".encode("utf-16-le")),
        *(Measurement(pcr, EV_SEPARATOR, bytes(4)) for pcr in range(8)),
    ]


def boot(tcti: str, log_file: Path) -> None:
    """Play the firmware of a freshly powered-on TPM: measure `minimal_boot` into it and write
    the event log where the node reads it."""
    with Tpm.open(tcti) as tpm:
        log = measured_boot(tpm, minimal_boot())
    log_file.write_bytes(log.encode())


def _boot_when_up(tcti: str, log_file: Path) -> None:
    """`boot` once the TPM at `tcti` answers (a daemonized swtpm may still be opening it)."""
    from node.tpm import TpmError

    def up() -> bool:
        try:
            Tpm.open(tcti).close()
        except TpmError:
            return False
        return True

    wait_until(up, timeout=10, what=f"the TPM at {tcti}", interval=0.05)
    boot(tcti, log_file)


if __name__ == "__main__":
    # For labs (tests/integration/tpm_mesh.clab.yml), run in the node's namespace before the
    # node starts: python -m tests.swtpm boot TCTI EVENT_LOG_FILE
    import sys

    if len(sys.argv) != 4 or sys.argv[1] != "boot":
        sys.exit("usage: python -m tests.swtpm boot TCTI EVENT_LOG_FILE")
    _boot_when_up(sys.argv[2], Path(sys.argv[3]))
