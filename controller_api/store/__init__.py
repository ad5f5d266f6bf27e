"""The controller's state behind the `Store` protocol (protocol.py), with two backends: SQLite
(sqlite.py, embedded, the default) and etcd (etcd.py, for several controller replicas); model.py
holds the rows and errors both share, allocation.py the EID allocation rules."""

from controller_api.store.etcd import EtcdStore
from controller_api.store.etcd_client import EtcdTls, EtcdUnavailable
from controller_api.store.model import (
    APPS,
    ATTESTATION_POLICY,
    CONTROLLER,
    PLACEMENTS,
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

__all__ = [
    "APPS",
    "ATTESTATION_POLICY",
    "CONTROLLER",
    "PLACEMENTS",
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
