"""Running an asyncio server on its own event loop in a thread, for tests.

Tests then talk to it through ordinary (sync or async) gRPC and HTTP clients over
loopback, exactly as another process would, without sharing its event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


class Stoppable(Protocol):
    async def stop(self, grace: float | None) -> Any: ...


class BackgroundServer:
    def __init__(self, factory: Callable[[], Awaitable[tuple[Stoppable, int]]]) -> None:
        self._factory = factory
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.server: Stoppable | None = None
        self.port = 0

    def start(self, timeout: float = 120) -> BackgroundServer:
        self._thread.start()
        self.server, self.port = asyncio.run_coroutine_threadsafe(self._factory(), self._loop).result(timeout)
        return self

    def call(self, coroutine: Awaitable[Any], timeout: float = 60) -> Any:
        """Run a coroutine on the server's loop (to inspect or poke server state)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)  # type: ignore[arg-type]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.server is not None:
            self.call(self.server.stop(0))
            self.server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for_health(
    channel: grpc.Channel, expected: int = health_pb2.HealthCheckResponse.SERVING, timeout: float = 120, service: str = ""
) -> int:
    """Poll grpc.health.v1 until `expected` or the timeout; returns the last status."""
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    status = health_pb2.HealthCheckResponse.UNKNOWN
    while time.monotonic() < deadline:
        status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        if status == expected:
            return status
        time.sleep(0.05)
    return status
