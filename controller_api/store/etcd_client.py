"""A thin synchronous etcd v3 client: ranges, transactions and leases over one gRPC channel.

The message and stub classes are etcd's own, from `pyetcd` (PyPI etcd-sdk-python), whose
generated code loads under this project's protobuf and grpcio (the older `etcd3` package does
not). Its high-level client is not used: it hides response headers (the store needs their
revisions) and latches an endpoint that failed once as dead for five minutes. Instead one
gRPC channel lists every member and balances round-robin, so a dead member is skipped by gRPC
itself and no write is ever retried blindly (a timed-out write may have committed).

Every call has a deadline; any gRPC failure becomes one `EtcdUnavailable` line naming the
endpoints and etcd's own reason.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from pyetcd import etcdrpc

from controller_api.store.model import StoreError

DEFAULT_TIMEOUT = 5.0


class EtcdUnavailable(StoreError):
    """etcd did not answer (down, no quorum, unreachable) or refused the request."""


@dataclass(frozen=True)
class EtcdTls:
    """Client TLS to etcd: the CA that signed the members' certificates, and optionally a
    client certificate and key (PEM bytes)."""

    ca_pem: bytes
    cert_pem: bytes | None = None
    key_pem: bytes | None = None


def prefix_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with `prefix`."""
    end = bytearray(prefix)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"  # every key


def _target(endpoints: Sequence[str]) -> str:
    """One gRPC target naming every member: `ipv4:a:p,b:p` (names resolved now)."""
    v4: list[str] = []
    v6: list[str] = []
    for endpoint in endpoints:
        text = endpoint.strip().removeprefix("http://").removeprefix("https://").rstrip("/")
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise StoreError(f"etcd endpoint {endpoint!r}: expected host:port")
        host = host.strip("[]")
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
            except OSError as exc:
                raise StoreError(f"etcd endpoint {endpoint!r}: {exc}") from None
            addresses = sorted({str(info[4][0]) for info in infos})
        for address in addresses:
            if ":" in address:
                v6.append(f"[{address}]:{port}")
            else:
                v4.append(f"{address}:{port}")
    if not v4 and not v6:
        raise StoreError("no etcd endpoint given")
    return "ipv4:" + ",".join(v4) if v4 else "ipv6:" + ",".join(v6)


def compare_mod(key: bytes, mod_revision: int) -> Any:
    """True while `key` was last written at `mod_revision` (0: the key is absent)."""
    return etcdrpc.Compare(
        key=key,
        result=etcdrpc.Compare.EQUAL,
        target=etcdrpc.Compare.MOD,
        mod_revision=mod_revision,
    )


def compare_create(key: bytes, create_revision: int) -> Any:
    """True while `key` is the incarnation created at `create_revision` (0: absent)."""
    return etcdrpc.Compare(
        key=key,
        result=etcdrpc.Compare.EQUAL,
        target=etcdrpc.Compare.CREATE,
        create_revision=create_revision,
    )


def put(key: bytes, value: bytes, lease: int = 0) -> Any:
    return etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=key, value=value, lease=lease))


def delete(key: bytes) -> Any:
    return etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=key))


def get(key: bytes) -> Any:
    return etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=key))


class EtcdClient:
    def __init__(
        self,
        endpoints: Sequence[str],
        timeout: float = DEFAULT_TIMEOUT,
        tls: EtcdTls | None = None,
    ) -> None:
        self.endpoints = tuple(endpoints)
        self.timeout = timeout
        target = _target(endpoints)
        options = [("grpc.lb_policy_name", "round_robin"), ("grpc.enable_retries", 0)]
        if tls is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            creds = grpc.ssl_channel_credentials(tls.ca_pem, tls.key_pem, tls.cert_pem)
            self._channel = grpc.secure_channel(target, creds, options=options)
        self._kv = etcdrpc.KVStub(self._channel)
        self._lease = etcdrpc.LeaseStub(self._channel)
        self._maintenance = etcdrpc.MaintenanceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _fail(self, exc: grpc.RpcError) -> EtcdUnavailable:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        name = code.name.lower() if code is not None else "error"
        return EtcdUnavailable(f"etcd at {','.join(self.endpoints)}: {name}: {detail}")

    def range(
        self,
        key: bytes,
        prefix: bool = False,
        keys_only: bool = False,
        limit: int = 0,
        descend: bool = False,
        revision: int = 0,
    ) -> Any:
        request = etcdrpc.RangeRequest(
            key=key,
            range_end=prefix_end(key) if prefix else b"",
            keys_only=keys_only,
            limit=limit,
            revision=revision,
            sort_order=etcdrpc.RangeRequest.DESCEND if descend else etcdrpc.RangeRequest.NONE,
        )
        try:
            return self._kv.Range(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise self._fail(exc) from None

    def get(self, key: bytes) -> tuple[bytes | None, int]:
        """The value of `key` and its mod revision (None and 0 if absent)."""
        kvs = self.range(key).kvs
        return (bytes(kvs[0].value), int(kvs[0].mod_revision)) if kvs else (None, 0)

    def txn(
        self, compare: Sequence[Any], success: Sequence[Any], failure: Sequence[Any] = ()
    ) -> Any:
        request = etcdrpc.TxnRequest(compare=compare, success=success, failure=failure)
        try:
            return self._kv.Txn(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise self._fail(exc) from None

    def revision(self) -> int:
        """etcd's current revision (a read of an absent key carries it in its header)."""
        return int(self.range(b"\0lispmesh-revision-probe").header.revision)

    # ------------------------------------------------------------------ leases

    def lease_grant(self, ttl: int) -> int:
        try:
            return int(
                self._lease.LeaseGrant(etcdrpc.LeaseGrantRequest(TTL=ttl), timeout=self.timeout).ID
            )
        except grpc.RpcError as exc:
            raise self._fail(exc) from None

    def lease_keepalive(self, lease_id: int) -> int:
        """Refresh the lease once; its new TTL (0 or less: it has expired)."""

        def one() -> Iterator[Any]:
            yield etcdrpc.LeaseKeepAliveRequest(ID=lease_id)

        try:
            for answer in self._lease.LeaseKeepAlive(one(), timeout=self.timeout):
                return int(answer.TTL)
        except grpc.RpcError as exc:
            raise self._fail(exc) from None
        return 0

    def lease_revoke(self, lease_id: int) -> None:
        try:
            self._lease.LeaseRevoke(etcdrpc.LeaseRevokeRequest(ID=lease_id), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise self._fail(exc) from None

    def status(self) -> Any:
        """The answering member's status (version, leader, raft term, db size)."""
        try:
            return self._maintenance.Status(etcdrpc.StatusRequest(), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise self._fail(exc) from None
