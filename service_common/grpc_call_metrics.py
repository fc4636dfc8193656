"""Calls counted by method and final gRPC status, for Prometheus (`<service>_requests_total`).

The servicers turn their errors into a status with `context.abort()`, interceptors refuse
calls the same way (draining, authentication, undecodable requests), and grpc itself
answers UNKNOWN for an unhandled exception and CANCELLED for a call the client left:
wrapping the handler outermost sees every one of those ends, so one interceptor counts
what each service answered without the servicers knowing about metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter

from service_common.grpc_wrapping import Around, ServiceCallsInterceptor


def requests_counter(namespace: str, registry: CollectorRegistry) -> Counter:
    """`<namespace>_requests_total{method,code}` in `registry`."""
    return Counter(
        f"{namespace}_requests_total",
        "gRPC calls by method and final status code (OK, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...).",
        ("method", "code"),
        registry=registry,
    )


class CallStatusInterceptor(ServiceCallsInterceptor):
    """Counts each call to `services` once it ends, by its method's short name and status.

    Health and reflection are not counted: probes would drown the traffic, and their
    watch streams never end by themselves.
    """

    def __init__(self, counter: Counter, services: Iterable[str]) -> None:
        super().__init__(services)
        self._counter = counter

    def around(self, method: str) -> Around:
        @asynccontextmanager
        async def counted(context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
            code = grpc.StatusCode.UNKNOWN
            try:
                yield
                code = context.code() or grpc.StatusCode.OK
            except BaseException as exc:
                code = _failure_code(exc, context)
                raise
            finally:
                self._counter.labels(method, code.name).inc()

        return counted


def _failure_code(exc: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    if isinstance(exc, grpc.aio.AbortError):
        return context.code() or grpc.StatusCode.UNKNOWN
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        # grpc cancels the handler both when the client leaves and when its deadline passes.
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN  # what grpc answers for an exception nobody turned into a status
