"""The embedding cache after the embed server comes back with other weights (another
EMBED_SEED): the same query image, searched again, is ranked in the new weights' space,
not with the vectors the cache kept from the old ones (search_gateway/search/cache.py,
weights_watch.py).

Scores are compared with those of a second gateway that starts with an empty cache
against the new server: the space the answer must come from. The old server's scores
must differ from them, or the test could not tell the two spaces apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from search_gateway.clients.replies import Provenance
from search_gateway.search.cache import EmbeddingCache
from tests.support.gateway_stack import Site, gateway_settings, image_form
from tests.support.gateway_support import _wait_ready, embed_server, run_gateway, scraper_server, write_catalog
from tests.support.grpc_proxy import _Forward, proxy
from tests.support.images import jpeg

QUERY = jpeg(4242, (300, 240))  # not one of the site's images


async def _search(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{url}/search", data=image_form(QUERY)) as resp:
        return resp.status, await resp.json()


def _scores(body: dict[str, Any]) -> dict[str, float]:
    return {r["url"]: r["score"] for r in body["results"]}


async def test_a_query_searched_before_an_embed_restart_with_other_weights_is_ranked_in_the_new_space(
        site: Site, tmp_path: Path) -> None:
    old = embed_server(EMBED_SEED="1").start()
    port = old.port
    _wait_ready(old.target)
    with scraper_server(write_catalog(tmp_path / "c.jsonl", site.good_urls(6))) as scraper:
        settings = gateway_settings(old.target, scraper.target, site)
        # A new connection per request: the embed restart can outlast the gateway's keep-alive,
        # and a POST on a connection it closed meanwhile is reset, not retried.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            async with run_gateway(settings) as gw:
                status, first = await _search(http, gw.url)
                assert status == 200, first
                before = _scores(first)
                status, cached = await _search(http, gw.url)  # everything from the cache now
                assert status == 200 and cached["stats"]["embedded"] == 0, cached["stats"]
                assert _scores(cached) == before

                old.stop()
                new = embed_server(port=port, EMBED_SEED="2").start()  # same address, other weights
                try:
                    _wait_ready(new.target)
                    for _ in range(50):  # until the gateway's channel has found the new server
                        status, body = await _search(http, gw.url)
                        if status == 200:
                            break
                        await asyncio.sleep(0.2)
                    assert status == 200, body
                    after = _scores(body)
                    async with run_gateway(settings) as fresh:  # an empty cache, the new server
                        status, reference_body = await _search(http, fresh.url)
                        assert status == 200, reference_body
                        reference = _scores(reference_body)
                finally:
                    new.stop()

    assert sorted(before) == sorted(after) == sorted(reference)
    # Two spaces indeed: the tiny random models' scores differ little, but they rank otherwise.
    assert list(before) != list(reference) and max(abs(before[u] - reference[u]) for u in reference) > 1e-3
    assert list(after) == list(reference), "ranked with the old weights' cached vectors"
    assert after == pytest.approx(reference, abs=1e-5)
    assert body["stats"]["embedded"] == len(reference)  # every candidate embedded again, by the new weights


class _SteadyHealth(_Forward):
    """A proxy that answers the health watch itself, SERVING for ever, as a proxy that
    health-checks its backends on its own would: the gateway's channel cannot see the
    embed server behind it restart."""

    def _stream(self, method: str) -> grpc.RpcMethodHandler:
        async def serving(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING).SerializeToString()
            await asyncio.Event().wait()  # until the gateway ends the watch

        return grpc.unary_stream_rpc_method_handler(serving)


async def test_behind_a_proxy_that_keeps_the_connection_the_model_list_tells_the_cache_of_new_weights(
        site: Site, tmp_path: Path) -> None:
    # The gateway's connection (to the proxy) stays up and READY across the embed
    # server's restart, so only what the embed server answers can tell. Here ListModels,
    # which the gateway asks before searches (at most every few seconds) and for /models.
    old = embed_server(EMBED_SEED="1").start()
    port = old.port
    _wait_ready(old.target)
    with scraper_server(write_catalog(tmp_path / "c.jsonl", site.good_urls(6))) as scraper:
        async with proxy(old.target, set(), _SteadyHealth) as (target, _), aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True)) as http:  # as above
            settings = gateway_settings(target, scraper.target, site)
            async with run_gateway(settings) as gw:
                status, first = await _search(http, gw.url)
                assert status == 200, first
                old.stop()
                new = embed_server(port=port, EMBED_SEED="2").start()
                try:
                    _wait_ready(new.target)
                    async with http.get(f"{gw.url}/models") as resp:
                        assert resp.status == 200
                    status, body = await _search(http, gw.url)
                    assert status == 200, body
                    async with run_gateway(settings) as fresh:
                        status, reference_body = await _search(http, fresh.url)
                        assert status == 200, reference_body
                finally:
                    new.stop()
    before, after, reference = _scores(first), _scores(body), _scores(reference_body)
    assert list(before) != list(reference)  # two spaces
    assert list(after) == list(reference), "ranked with the old weights' cached vectors"
    assert after == pytest.approx(reference, abs=1e-5)


def test_the_cache_serves_only_the_vectors_of_the_weights_its_last_reply_named() -> None:
    cache = EmbeddingCache(max_entries=8, ttl_s=0)
    old, new = _provenance("sha256:old"), _provenance("sha256:new")
    cache.put("clip", "h1", np.ones(4, dtype=np.float32), "http://a/1", old)
    assert cache.by_hash("clip", "h1") is not None and cache.by_url("clip", "http://a/1") is not None
    # A reply from other weights (another replica, or the first after a restart).
    cache.put("clip", "h2", np.ones(4, dtype=np.float32), None, new)
    assert cache.by_hash("clip", "h1") is None and cache.by_url("clip", "http://a/1") is None
    assert cache.by_hash("clip", "h2") is not None
    cache.observe("clip", "sha256:old")  # the old weights answer again: their vectors fit again
    assert cache.by_hash("clip", "h1") is not None and cache.by_hash("clip", "h2") is None
    cache.unverify()  # the connection was lost or made again: no weights known until a reply
    assert cache.by_hash("clip", "h1") is None and cache.by_url("clip", "http://a/1") is None


def _provenance(fingerprint: str) -> Provenance:
    return Provenance("clip", "random", "onnx", "cpu", "fp32", fingerprint)
