"""Calls in flight, counted so that a stopping server can let them finish.

`grpc.aio.Server.stop(grace)` refuses every new call the moment it begins, health checks
included, so during its grace period a balancer or a `grpc_health_probe` sees the replica
as unreachable rather than NOT_SERVING. A graceful stop therefore drains first, with the
server still answering: this interceptor counts the calls in flight to the application
services (not health or reflection, whose watch streams never end by themselves) and,
once draining, refuses new ones UNAVAILABLE, which clients retry on another replica.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc

from service_common.grpc_requests import behaviour_field

REFUSAL = "this server is shutting down and takes no new calls; retry on another replica"


class InFlightCalls(grpc.aio.ServerInterceptor):
    """Install first in `grpc.aio.server(interceptors=[...])`, so that it counts a call
    from its start and refuses one before any other interceptor works on it."""

    def __init__(self, services: Iterable[str]) -> None:
        self._prefixes = tuple(f"/{name}/" for name in services)
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False
        # Handlers are looked up on every call; each is wrapped once, not once per call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    @property
    def count(self) -> int:
        return self._count

    def drain(self) -> None:
        """From now on, new calls are refused UNAVAILABLE; those in flight go on."""
        self._draining = True

    async def wait_idle(self, timeout: float) -> bool:
        """Whether every call in flight finished within `timeout` seconds."""
        if self._count == 0:  # wait_for() would time out at once on a timeout of 0
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def intercept_service(  # type: ignore[override]  # grpc returns None for a method nobody serves; grpc-stubs says never
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(self._prefixes):
            return handler
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._counting(handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    async def _enter(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if self._draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, REFUSAL)
        self._count += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._count -= 1
        if self._count == 0:
            self._idle.set()

    def _counting(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        field = behaviour_field(handler)
        behaviour = getattr(handler, field)

        if inspect.isasyncgenfunction(behaviour):

            async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                await self._enter(context)
                try:
                    async for response in behaviour(request, context):
                        yield response
                finally:
                    self._leave()

            new_behaviour: Callable[..., Any] = streaming
        elif inspect.iscoroutinefunction(behaviour):

            async def single(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await self._enter(context)
                try:
                    return await behaviour(request, context)
                finally:
                    self._leave()

            new_behaviour = single
        else:
            # A synchronous behaviour would run on a thread pool, which these aio servers
            # do not have; left alone rather than counted wrongly.
            return handler
        return handler._replace(**{field: new_behaviour})  # type: ignore[attr-defined,no-any-return]
