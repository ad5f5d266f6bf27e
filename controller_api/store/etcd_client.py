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
import queue
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from pyetcd import etcdrpc

from controller_api.store.model import StoreError

DEFAULT_TIMEOUT = 5.0


class EtcdUnavailable(StoreError):
    """etcd did not answer (down, no quorum, unreachable) or refused the request."""


class Compacted(StoreError):
    """A watch asked for revisions etcd has compacted away: the watcher must read the current
    state again and watch on from there."""

    def __init__(self, start_revision: int, compact_revision: int) -> None:
        super().__init__(
            f"etcd watch from revision {start_revision}: compacted up to {compact_revision}"
        )
        self.start_revision = start_revision
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class WatchBatch:
    """Events etcd delivered together (one revision or a run of them), oldest first; each has
    `type` (0 put, 1 delete), `kv` and `prev_kv`."""

    revision: int  # the store revision this batch brings the watcher up to
    events: tuple[Any, ...]


class WatchStream:
    """One etcd watch over a key prefix from a revision: iterate for `WatchBatch`es (blocking);
    `cancel()` from any thread ends the iteration. Raises `Compacted` if the start revision is
    gone, `EtcdUnavailable` if the stream breaks (the caller resumes from the last revision
    it saw plus one)."""

    def __init__(self, stub: Any, prefix: bytes, start_revision: int, where: str) -> None:
        self.start_revision = start_revision
        self._where = where
        self._requests: queue.Queue[Any] = queue.Queue()
        self._requests.put(
            etcdrpc.WatchRequest(
                create_request=etcdrpc.WatchCreateRequest(
                    key=prefix, range_end=prefix_end(prefix), start_revision=start_revision,
                    prev_kv=True,
                )
            )
        )  # fmt: skip
        self._cancelled = threading.Event()
        self._call = stub.Watch(self._request_stream())

    def _request_stream(self) -> Iterator[Any]:
        # The request side stays open for the life of the watch (closing it ends the watch).
        while True:
            request = self._requests.get()
            if request is None:
                return
            yield request

    def cancel(self) -> None:
        self._cancelled.set()
        self._requests.put(None)
        self._call.cancel()

    def __iter__(self) -> Iterator[WatchBatch]:
        try:
            for answer in self._call:
                if answer.compact_revision:
                    raise Compacted(self.start_revision, int(answer.compact_revision))
                if answer.canceled:
                    reason = answer.cancel_reason or "no reason given"
                    raise EtcdUnavailable(f"etcd at {self._where}: watch cancelled: {reason}")
                if answer.events:
                    yield WatchBatch(int(answer.header.revision), tuple(answer.events))
        except grpc.RpcError as exc:
            if self._cancelled.is_set():
                return
            code = exc.code() if isinstance(exc, grpc.Call) else None
            detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            name = code.name.lower() if code is not None else "error"
            raise EtcdUnavailable(f"etcd at {self._where}: watch: {name}: {detail}") from None
        if not self._cancelled.is_set():
            raise EtcdUnavailable(f"etcd at {self._where}: the watch stream ended")


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
        options = [
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.enable_retries", 0),
            # A watch is one long stream: pings find a member that went silent (a cut cable
            # sends no reset). etcd refuses pings more often than every 5 s by default.
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
        ]
        if tls is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            creds = grpc.ssl_channel_credentials(tls.ca_pem, tls.key_pem, tls.cert_pem)
            self._channel = grpc.secure_channel(target, creds, options=options)
        self._kv = etcdrpc.KVStub(self._channel)
        self._lease = etcdrpc.LeaseStub(self._channel)
        self._maintenance = etcdrpc.MaintenanceStub(self._channel)
        self._watch = etcdrpc.WatchStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _fail(self, exc: grpc.RpcError) -> EtcdUnavailable:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        name = code.name.lower() if code is not None else "error"
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            detail = f"no answer in {self.timeout:g} s (no quorum, or out of reach)"
        elif "deadline exceeded" in str(detail).lower() or "timed out" in str(detail).lower():
            # The member's own request timeout: it could not reach a quorum in time.
            detail = f"{detail} (no quorum, or out of reach)"
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

    def watch(self, prefix: bytes, start_revision: int) -> WatchStream:
        """Every change under `prefix` from `start_revision` on, with each key's previous value."""
        return WatchStream(self._watch, prefix, start_revision, ",".join(self.endpoints))

    def compact(self, revision: int) -> None:
        """Forget the history before `revision` (an operator's or a test's chore)."""
        try:
            self._kv.Compact(
                etcdrpc.CompactionRequest(revision=revision, physical=True), timeout=self.timeout
            )
        except grpc.RpcError as exc:
            raise self._fail(exc) from None

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
