"""Provenance comes with the embeddings: a search says which weights ranked it from the
``Embed`` reply itself, not from a second ``ListModels`` call.

A forwarding gRPC proxy (a real ``grpc.aio`` server) stands between the gateway and
the real embed server, passes every call through unchanged but refuses ``ListModels``,
and counts what it saw. It forwards the health ``Watch`` stream too: the gateway's
channel picks a backend only once its health says SERVING (client-side health
checking), so a proxy that answered ``Watch`` as a unary call would leave the channel
waiting for a status that never comes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc

from tests.search_gateway.conftest import Site, gateway_settings, image_form
from tests.search_gateway.gateway_support import run_gateway, scraper_server, write_catalog
from tests.support.background import BackgroundServer
from tests.support.images import jpeg

LIST_MODELS = "/tattoo_search.v1.EmbedService/ListModels"
EMBED = "/tattoo_search.v1.EmbedService/Embed"
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


async def test_a_search_reports_the_weights_of_the_embed_reply_when_list_models_fails(
        embed: BackgroundServer, site: Site, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "c.jsonl", site.good_urls(4))
    async with proxy(embed.target, {LIST_MODELS}) as (target, seen):
        with scraper_server(catalog) as scraper:
            async with run_gateway(gateway_settings(target, scraper.target, site)) as gw, \
                    aiohttp.ClientSession() as http:
                async with http.post(f"{gw.url}/search", data=image_form(jpeg(31))) as resp:
                    body = await resp.json()
                    assert resp.status == 200, body
    assert seen[LIST_MODELS] >= 1 and seen[EMBED] >= 1  # both were asked; only ListModels failed
    assert len(body["results"]) == 4
    assert body["embedding_weights"] == "random"  # the tiny test models' weights, as Embed said
