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
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import grpc

from service_common.grpc_wrapping import Around, ServiceCallsInterceptor

REFUSAL = "this server is shutting down and takes no new calls; retry on another replica"


class InFlightCalls(ServiceCallsInterceptor):
    """Install first in `grpc.aio.server(interceptors=[...])`, so that it counts a call
    from its start and refuses one before any other interceptor works on it."""

    def __init__(self, services: Iterable[str]) -> None:
        super().__init__(services)
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False

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

    def around(self, method: str) -> Around:
        return self._in_flight

    @asynccontextmanager
    async def _in_flight(self, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
        # Refused before it counts: a refused call never entered.
        if self._draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, REFUSAL)
        self._count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._count -= 1
            if self._count == 0:
                self._idle.set()
