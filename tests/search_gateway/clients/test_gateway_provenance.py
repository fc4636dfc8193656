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

from pathlib import Path

import aiohttp

from tests.support.background import BackgroundServer
from tests.support.gateway_stack import Site, gateway_settings, image_form
from tests.support.gateway_support import run_gateway, scraper_server, write_catalog
from tests.support.grpc_proxy import proxy
from tests.support.images import jpeg

LIST_MODELS = "/tattoo_search.v1.EmbedService/ListModels"
EMBED = "/tattoo_search.v1.EmbedService/Embed"






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
