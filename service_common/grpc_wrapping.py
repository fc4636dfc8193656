"""Server interceptors that wrap the handlers of the application services.

Counting calls in flight (grpc_drain) and counting final statuses (grpc_call_metrics)
both run code around each call to the application services, streaming or not. This
module holds what they share: which methods are wrapped (not health or reflection,
whose watch streams never end by themselves), wrapping each handler once rather than
once per call (the request decoder and the bearer token check too, which picks the
calls it refuses by their metadata), and running an async context manager around the
handler's behaviour.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc

# What runs around one call: entered before the behaviour, left after its last response
# (or its exception, cancellation or the client leaving a stream).
Around = Callable[[grpc.aio.ServicerContext[Any, Any]], AbstractAsyncContextManager[None]]


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Returns each handler that :meth:`wraps` picks through :meth:`wrap`, wrapped once
    per handler (handlers are looked up on every call). :meth:`wraps_call` may pick some
    calls of such a method only, by what the call says (its metadata)."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def wraps(self, method: str, handler: grpc.RpcMethodHandler) -> bool:
        raise NotImplementedError

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        raise NotImplementedError

    def wraps_call(self, details: grpc.HandlerCallDetails, handler: grpc.RpcMethodHandler) -> bool:
        """Whether this call gets the wrapped handler: by default every call of a method
        that :meth:`wraps` picks."""
        return self.wraps(details.method, handler)

    async def intercept_service(  # type: ignore[override]  # grpc returns None for a method nobody serves; grpc-stubs says never
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not self.wraps_call(handler_call_details, handler):
            return handler
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self.wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


class ServiceCallsInterceptor(WrappingInterceptor):
    """Runs :meth:`around` around each call to the methods of `services`."""

    def __init__(self, services: Iterable[str]) -> None:
        super().__init__()
        self._prefixes = tuple(f"/{name}/" for name in services)

    def around(self, method: str) -> Around:
        """What runs around each call of `method` (its short name, e.g. `Embed`)."""
        raise NotImplementedError

    def wraps(self, method: str, handler: grpc.RpcMethodHandler) -> bool:
        return method.startswith(self._prefixes)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return wrap_behaviour(handler, self.around(method.rsplit("/", 1)[-1]))


def wrap_behaviour(handler: grpc.RpcMethodHandler, around: Around) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour run inside `around(context)`."""
    field = behaviour_field(handler)
    behaviour = getattr(handler, field)

    if inspect.isasyncgenfunction(behaviour):

        async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            async with around(context):
                async for response in behaviour(request, context):
                    yield response

        new_behaviour: Callable[..., Any] = streaming
    elif inspect.iscoroutinefunction(behaviour):

        async def single(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async with around(context):
                return await behaviour(request, context)

        new_behaviour = single
    else:
        # A synchronous behaviour would run on a thread pool, which these aio servers
        # do not have; left alone rather than wrapped wrongly.
        return handler
    return handler._replace(**{field: new_behaviour})  # type: ignore[attr-defined,no-any-return]  # a namedtuple at run time


def behaviour_field(handler: grpc.RpcMethodHandler) -> str:
    """The field of `handler` that holds its behaviour (`unary_stream` for a server stream),
    for interceptors that wrap it with `handler._replace(**{field: ...})`."""
    return {
        (False, False): "unary_unary",
        (False, True): "unary_stream",
        (True, False): "stream_unary",
        (True, True): "stream_stream",
    }[(handler.request_streaming, handler.response_streaming)]
