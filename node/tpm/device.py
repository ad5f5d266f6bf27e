"""One connection to a TPM 2.0 (a device node, or any TCTI), owning its ESAPI context.

Everything else in node/tpm/ talks to the TPM through a `Tpm`. It knows the two things every caller
would otherwise repeat: transient objects must be flushed (a TPM without a resource manager, such as
swtpm, has only three object slots), and TSS errors become one `TpmError` line saying what failed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from tpm2_pytss import (
    ESAPI,
    ESYS_TR,
    TPM2_ALG,
    TPM2_RC,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMT_HA,
    TPMT_PUBLIC,
    TSS2_Exception,
)

# The digest bank every PCR operation here uses; the PC Client profile requires SHA-256.
PCR_BANK = "sha256"
PCR_COUNT = 24


class TpmError(Exception):
    """A TPM operation failed; the message names the TPM, the operation and the TPM's reason."""


def tcti_for(spec: str) -> str:
    """The TCTI configuration string for `spec`: a device path (/dev/tpmrm0) or a TCTI string
    (`swtpm:port=2321`, `device:/dev/tpm0`) taken as it is."""
    if spec.startswith("/"):
        return f"device:{spec}"
    if ":" not in spec and spec not in ("swtpm", "mssim", "device"):
        raise TpmError(f"TPM {spec!r}: not a device path or a TCTI string such as swtpm:port=2321")
    return spec


def pcr_selection(pcrs: Iterable[int]) -> TPML_PCR_SELECTION:
    """The SHA-256 selection of `pcrs`; refuses indexes a PC Client TPM does not have."""
    indexes = sorted(set(pcrs))
    if not indexes or indexes[0] < 0 or indexes[-1] >= PCR_COUNT:
        raise TpmError(f"PCR selection {indexes}: indexes must be 0..{PCR_COUNT - 1}, at least one")
    return TPML_PCR_SELECTION.parse(f"{PCR_BANK}:" + ",".join(str(i) for i in indexes))


class Tpm:
    """An open TPM. Use as a context manager, or call close()."""

    def __init__(self, esapi: ESAPI, where: str) -> None:
        self._esapi = esapi
        self.where = where
        # An ESAPI context is not thread-safe, and the node signs from two threads: gRPC's TLS
        # handshakes and the mesh's key exchange in the event loop. Hold this around TPM use.
        self.lock = threading.RLock()

    @classmethod
    def open(cls, spec: str) -> Tpm:
        # The TSS logs each expected "no such handle/index" probe on stderr; our callers get the
        # failures that matter as TpmError lines instead. An operator can still set TSS2_LOG.
        os.environ.setdefault("TSS2_LOG", "all+NONE")
        tcti = tcti_for(spec)
        try:
            return cls(ESAPI(tcti), tcti)
        except TSS2_Exception as exc:
            raise TpmError(f"TPM {tcti}: cannot connect: {exc}") from None

    @property
    def esapi(self) -> ESAPI:
        return self._esapi

    def close(self) -> None:
        self._esapi.close()

    def __enter__(self) -> Tpm:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def error(self, what: str, exc: BaseException) -> TpmError:
        return TpmError(f"TPM {self.where}: {what}: {exc}")

    @contextmanager
    def flushing(self, handle: ESYS_TR) -> Iterator[ESYS_TR]:
        """Yield `handle` (a transient object or session); flush it afterwards, whatever happens."""
        try:
            yield handle
        except BaseException:
            # A failed command may already have ended a session; that flush error would only hide
            # the failure that matters.
            with suppress(TSS2_Exception):
                self._esapi.flush_context(handle)
            raise
        self._esapi.flush_context(handle)

    def create_primary(
        self, template: TPMT_PUBLIC, hierarchy: ESYS_TR
    ) -> tuple[ESYS_TR, TPMT_PUBLIC]:
        """A primary key derived from the hierarchy's seed: the same template gives the same key on
        the same TPM, so identities can be re-created instead of stored."""
        try:
            handle, public, *_ = self._esapi.create_primary(
                TPM2B_SENSITIVE_CREATE(), TPM2B_PUBLIC(publicArea=template), hierarchy
            )
        except TSS2_Exception as exc:
            raise self.error("creating a primary key", exc) from None
        return handle, public.publicArea

    def persistent(self, handle: int) -> ESYS_TR | None:
        """The ESYS handle of the persistent object at `handle`, or None when nothing is there."""
        try:
            return self._esapi.tr_from_tpmpublic(handle)
        except TSS2_Exception as exc:
            if exc.error == TPM2_RC.HANDLE:
                return None
            raise self.error(f"opening persistent handle {handle:#x}", exc) from None

    def read_public(self, handle: ESYS_TR) -> TPMT_PUBLIC:
        public, _, _ = self._esapi.read_public(handle)
        return public.publicArea

    def pcr_read(self, pcrs: Sequence[int]) -> dict[int, bytes]:
        """The current SHA-256 values of `pcrs`. TPM2_PCR_Read returns at most eight digests per
        call, so this asks again for whatever it did not get."""
        wanted = sorted(set(pcrs))
        values: dict[int, bytes] = {}
        while len(values) < len(wanted):
            missing = [i for i in wanted if i not in values]
            try:
                _, selection, digests = self._esapi.pcr_read(pcr_selection(missing))
            except TSS2_Exception as exc:
                raise self.error(f"reading PCRs {missing}", exc) from None
            got = [i for i in missing if _selected(selection, i)]
            if not got:
                raise TpmError(f"TPM {self.where}: PCRs {missing} are not in the {PCR_BANK} bank")
            for index, digest in zip(got, digests, strict=False):
                values[index] = bytes(digest)
        return values

    def pcr_extend(self, pcr: int, digest: bytes) -> None:
        """PCR[pcr] = SHA-256(PCR[pcr] || digest), as a measured boot does for each event."""
        if len(digest) != 32:
            raise TpmError(f"PCR {pcr} extend: a SHA-256 digest is 32 bytes, got {len(digest)}")
        value = TPMT_HA(hashAlg=TPM2_ALG.SHA256)
        value.digest.sha256 = digest
        values = TPML_DIGEST_VALUES([value])
        try:
            self._esapi.pcr_extend(ESYS_TR.PCR0 + pcr, values)
        except TSS2_Exception as exc:
            raise self.error(f"extending PCR {pcr}", exc) from None


def _selected(selection: Any, pcr: int) -> bool:
    for bank in selection:
        if bank.hash == TPM2_ALG.SHA256 and bytes(bank.pcrSelect)[pcr // 8] & (1 << (pcr % 8)):
            return True
    return False
