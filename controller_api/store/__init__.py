"""The controller's state behind the `Store` protocol (protocol.py), with two backends: SQLite
(sqlite.py, embedded, the default) and etcd (etcd.py, for several controller replicas); model.py
holds the rows and errors both share, allocation.py the EID allocation rules.

The etcd backend is imported on first use (PEP 562 `__getattr__`): its gRPC stubs cost a node's
agent, which imports this package for the model only, a fifth of a second at every start."""

from typing import TYPE_CHECKING, Any

from controller_api.store.model import (
    APPS,
    ATTESTATION_POLICY,
    CONTROLLER,
    PLACEMENTS,
    RETIRED_CERTS,
    TPM_EKS,
    TPM_NODES,
    Allocation,
    AlreadyEnrolled,
    CaMaterial,
    Conflict,
    EidPools,
    Fence,
    Fenced,
    Issued,
    Issuer,
    NewNode,
    NodeRow,
    ObjectWrite,
    PolicyRow,
    PoolExhausted,
    Record,
    Snapshot,
    StoreError,
    TokenRow,
    TokenUnusable,
)
from controller_api.store.protocol import Store
from controller_api.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from controller_api.store.etcd import EtcdStore
    from controller_api.store.etcd_client import EtcdTls, EtcdUnavailable

_LAZY = {
    "EtcdStore": "controller_api.store.etcd",
    "EtcdTls": "controller_api.store.etcd_client",
    "EtcdUnavailable": "controller_api.store.etcd_client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "APPS",
    "ATTESTATION_POLICY",
    "CONTROLLER",
    "PLACEMENTS",
    "RETIRED_CERTS",
    "TPM_EKS",
    "TPM_NODES",
    "Allocation",
    "AlreadyEnrolled",
    "CaMaterial",
    "Conflict",
    "EidPools",
    "EtcdStore",
    "EtcdTls",
    "EtcdUnavailable",
    "Fence",
    "Fenced",
    "Issued",
    "Issuer",
    "NewNode",
    "NodeRow",
    "ObjectWrite",
    "PolicyRow",
    "PoolExhausted",
    "Record",
    "Snapshot",
    "SqliteStore",
    "Store",
    "StoreError",
    "TokenRow",
    "TokenUnusable",
]
