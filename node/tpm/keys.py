"""TPM-resident keys kept at persistent handles, and the node's mesh key as a `cryptography` key.

A key is a primary derived from its template (node/tpm/templates.py) and made persistent, so a
signature needs no key creation (slow on hardware TPMs) and no transient slot; if the handle is ever
cleared the same template re-creates the same key.
"""

from __future__ import annotations

from typing import Any

from tpm2_pytss import ESYS_TR, TPMT_PUBLIC, TSS2_Exception
from tpm2_pytss.cryptography import tpm_ecc_private_key

from node.tpm.device import Tpm, TpmError
from node.tpm.templates import MESH_KEY_HANDLE, mesh_key_template


def _shape(public: TPMT_PUBLIC) -> tuple[int, int, int, bytes]:
    """What must match between a template and the object at a handle (not the key itself)."""
    return (
        public.type,
        int(public.objectAttributes),
        public.nameAlg,
        public.parameters.marshal(public.type),
    )


def provision(tpm: Tpm, handle: int, template: TPMT_PUBLIC, hierarchy: ESYS_TR) -> ESYS_TR:
    """The persistent key at `handle`, created from `template` in `hierarchy` when absent.

    A different object at `handle` is refused rather than evicted: it may be someone else's key.
    """
    existing = tpm.persistent(handle)
    if existing is not None:
        if _shape(tpm.read_public(existing)) != _shape(template):
            raise TpmError(
                f"TPM {tpm.where}: persistent handle {handle:#x} holds an object that is not the "
                "lispmesh key expected there; free it or configure another handle"
            )
        return existing
    transient, _ = tpm.create_primary(template, hierarchy)
    with tpm.flushing(transient):
        try:
            return tpm.esapi.evict_control(ESYS_TR.OWNER, transient, handle)
        except TSS2_Exception as exc:
            raise tpm.error(f"making the key persistent at {handle:#x}", exc) from None


class MeshKey:
    """The node's mesh/mTLS key at its persistent handle (made from the template on first use)."""

    def __init__(self, tpm: Tpm, handle: int = MESH_KEY_HANDLE) -> None:
        self._tpm = tpm
        self.handle = provision(tpm, handle, mesh_key_template(), ESYS_TR.ENDORSEMENT)

    def public_area(self) -> bytes:
        """The marshalled TPMT_PUBLIC, which the AK certifies and the controller checks."""
        return bytes(self._tpm.read_public(self.handle).marshal())

    def private_key(self) -> tpm_ecc_private_key:
        """The key as a `cryptography` EllipticCurvePrivateKey whose sign() runs in the TPM (DER
        ECDSA; use ec.ECDSA(hashes.SHA256())). private_bytes() and private_numbers() raise.
        Safe to use from several threads (it holds the TPM's lock)."""
        return _LockedTpmKey(self._tpm, self.handle)


class _LockedTpmKey(tpm_ecc_private_key):  # type: ignore[misc]  # tpm2-pytss is untyped
    def __init__(self, tpm: Tpm, handle: ESYS_TR) -> None:
        with tpm.lock:
            super().__init__(tpm.esapi, handle)
        self._lock = tpm.lock
        self._where = tpm.where

    def sign(self, data: Any, signature_algorithm: Any) -> bytes:
        with self._lock:
            try:
                return bytes(super().sign(data, signature_algorithm))
            except TSS2_Exception as exc:
                raise TpmError(f"TPM {self._where}: signing with the mesh key: {exc}") from None
