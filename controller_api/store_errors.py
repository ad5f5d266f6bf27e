"""A store that does not answer is one clear line to the caller, whatever the RPC.

Every handler reads or writes the store; on etcd without quorum (or out of reach) each of those
calls raises a `StoreError` after its deadline. Instead of gRPC's "Unexpected error" with a
traceback in the log, this interceptor answers UNAVAILABLE with the store's own one-line reason,
naming this replica, so the operator knows what failed and where, and a node tries another
replica. Handlers that catch their own refusals are unchanged.

While the replica knows it cannot reach etcd (its lease rounds failed for a TTL), it refuses
every RPC but ControllerStatus at once with that reason, instead of letting each one block on
etcd for its deadline: the store calls run on the event loop, which also serves the embedded
map-server, and the mapping system must keep answering without etcd.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from controller_api.store import StoreError

log = logging.getLogger("lispmesh.controller")


# Answered even when the store is out of reach: the operator asks exactly then.
ALWAYS_SERVED = ("/lispmesh.v1.Admin/ControllerStatus",)


class StoreErrors(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self, replica: Callable[[], str], unavailable: Callable[[], str | None] = lambda: None
    ) -> None:
        self.replica = replica  # this replica's name (known once the server is bound)
        self.unavailable = unavailable  # why this replica cannot reach the store now, or None
        self.refused = 0  # RPCs answered UNAVAILABLE because the store failed

    def _message(self, method: str, exc: StoreError) -> str:
        self.refused += 1
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("%s refused: %s", method.rsplit("/", 1)[-1], text)
        return f"controller replica {self.replica()}: the store is unavailable: {text}"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler: Any = await continuation(details)
        if handler is None:
            return handler
        method = str(details.method)
        served = method in ALWAYS_SERVED
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def guarded_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                why = None if served else self.unavailable()
                if why is not None:
                    self.refused += 1
                    await context.abort(grpc.StatusCode.UNAVAILABLE, why)
                try:
                    return await unary(request, context)
                except StoreError as exc:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, self._message(method, exc))

            return handler._replace(unary_unary=guarded_unary)
        if handler.unary_stream is not None:
            stream = handler.unary_stream

            async def guarded_stream(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                why = None if served else self.unavailable()
                if why is not None:
                    self.refused += 1
                    await context.abort(grpc.StatusCode.UNAVAILABLE, why)
                try:
                    async for message in stream(request, context):
                        yield message
                except StoreError as exc:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, self._message(method, exc))

            return handler._replace(unary_stream=guarded_stream)
        return handler
