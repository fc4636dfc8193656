"""Calls counted by method and final gRPC status, for Prometheus (`<service>_requests_total`).

The servicers turn their errors into a status with `context.abort()`, interceptors refuse
calls the same way (draining, authentication, undecodable requests), and grpc itself
answers UNKNOWN for an unhandled exception and CANCELLED for a call the client left:
wrapping the handler outermost sees every one of those ends, so one interceptor counts
what each service answered without the servicers knowing about metrics.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter

from service_common.grpc_requests import behaviour_field


def requests_counter(namespace: str, registry: CollectorRegistry) -> Counter:
    """`<namespace>_requests_total{method,code}` in `registry`."""
    return Counter(
        f"{namespace}_requests_total",
        "gRPC calls by method and final status code (OK, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...).",
        ("method", "code"),
        registry=registry,
    )


class CallStatusInterceptor(grpc.aio.ServerInterceptor):
    """Counts each call to `services` once it ends, by its method's short name and status.

    Health and reflection are not counted: probes would drown the traffic, and their
    watch streams never end by themselves.
    """

    def __init__(self, counter: Counter, services: Iterable[str]) -> None:
        self._counter = counter
        self._prefixes = tuple(f"/{name}/" for name in services)
        # Handlers are looked up on every call; each is wrapped once, not once per call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

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
        wrapped = self._counting(handler, method.rsplit("/", 1)[-1])
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _record(self, method: str, code: grpc.StatusCode) -> None:
        self._counter.labels(method, code.name).inc()

    def _counting(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        field = behaviour_field(handler)
        behaviour = getattr(handler, field)

        if inspect.isasyncgenfunction(behaviour):

            async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                code = grpc.StatusCode.UNKNOWN
                try:
                    async for response in behaviour(request, context):
                        yield response
                    code = context.code() or grpc.StatusCode.OK
                except BaseException as exc:
                    code = _failure_code(exc, context)
                    raise
                finally:
                    self._record(method, code)

            new_behaviour: Callable[..., Any] = streaming
        elif inspect.iscoroutinefunction(behaviour):

            async def single(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                code = grpc.StatusCode.UNKNOWN
                try:
                    response = await behaviour(request, context)
                    code = context.code() or grpc.StatusCode.OK
                    return response
                except BaseException as exc:
                    code = _failure_code(exc, context)
                    raise
                finally:
                    self._record(method, code)

            new_behaviour = single
        else:
            return handler  # synchronous behaviours do not run on these aio servers
        return handler._replace(**{field: new_behaviour})  # type: ignore[attr-defined,no-any-return]


def _failure_code(exc: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    if isinstance(exc, grpc.aio.AbortError):
        return context.code() or grpc.StatusCode.UNKNOWN
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        # grpc cancels the handler both when the client leaves and when its deadline passes.
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN  # what grpc answers for an exception nobody turned into a status
