"""A gRPC proxy on loopback: every call forwarded as raw bytes but for the refused methods,
counted (the gateway tests of provenance, and of a weights change behind a proxy)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

# The only server-streaming method the gateway calls on the embed server.
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"


class _Forward(grpc.GenericRpcHandler):
    """Every call forwarded as raw bytes, but for the refused methods. A generic
    handler sees only the method's name, not its shape, so the streaming one is named."""

    def __init__(self, upstream: grpc.aio.Channel, refused: frozenset[str], seen: Counter[str]) -> None:
        self.upstream = upstream
        self.refused = refused
        self.seen = seen

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = details.method  # type: ignore[attr-defined]
        if method == HEALTH_WATCH:
            return self._stream(method)
        call = self.upstream.unary_unary(method)  # no (de)serializers: bytes in, bytes out

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> Any:
            self.seen[method] += 1
            if method in self.refused:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "refused by the test proxy")
            return await call(request, timeout=context.time_remaining())

        return grpc.unary_unary_rpc_method_handler(forward)

    def _stream(self, method: str) -> grpc.RpcMethodHandler:
        call = self.upstream.unary_stream(method)

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            self.seen[method] += 1
            async for reply in call(request, timeout=context.time_remaining()):
                yield reply

        return grpc.unary_stream_rpc_method_handler(forward)


@asynccontextmanager
async def proxy(upstream_target: str, refused: set[str],
                forward: type[_Forward] = _Forward) -> AsyncIterator[tuple[str, Counter[str]]]:
    seen: Counter[str] = Counter()
    upstream = grpc.aio.insecure_channel(upstream_target)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((forward(upstream, frozenset(refused), seen),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", seen
    finally:
        await server.stop(0)
        await upstream.close()
