"""Backends that die: 503 with Retry-After, recovery without a restart, and round robin."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.support.gateway_stack import Site, gateway_settings, image_form
from tests.support.gateway_support import (
    Hits,
    _wait_ready,
    embed_server,
    image_site_app,
    run_gateway,
    scraper_server,
    serve_aiohttp,
    write_catalog,
)
from tests.support.images import jpeg

_queries = iter(range(100, 10_000))


async def _search(http: aiohttp.ClientSession, url: str) -> tuple[int, dict, str | None]:
    # A new query image each time: a cached query vector would need no embed server.
    async with http.post(f"{url}/search", data=image_form(jpeg(next(_queries)))) as resp:
        return resp.status, await resp.json(), resp.headers.get("Retry-After")


async def test_stopped_embed_server_gives_503_then_recovers_after_restart(site: Site, tmp_path: Path) -> None:
    first = embed_server().start()
    port = first.port
    _wait_ready(first.target)
    with scraper_server(write_catalog(tmp_path / "c.jsonl", site.good_urls(4))) as scraper:
        settings = gateway_settings(first.target, scraper.target, site)
        async with run_gateway(settings) as gw, aiohttp.ClientSession() as http:
            status, body, _ = await _search(http, gw.url)
            assert status == 200, body
            first.stop()
            status, body, retry_after = await _search(http, gw.url)
            assert status == 503, body
            assert body["error"] == "backend_unavailable" and "embed server" in body["detail"]
            assert retry_after is not None and int(retry_after) >= 1
            async with http.get(f"{gw.url}/ready") as resp:
                assert resp.status == 503
            # Same port again: the gateway's channel must find it without a restart.
            second = embed_server(port=port).start()
            try:
                _wait_ready(second.target)
                for _ in range(50):
                    status, body, _ = await _search(http, gw.url)
                    if status == 200:
                        break
                    await asyncio.sleep(0.2)
                assert status == 200, body
            finally:
                second.stop()


async def test_scraper_down_gives_503(embed, site: Site) -> None:  # type: ignore[no-untyped-def]
    settings = gateway_settings(embed.target, "127.0.0.1:1", site)
    async with run_gateway(settings) as gw, aiohttp.ClientSession() as http:
        status, body, retry_after = await _search(http, gw.url)
    assert status == 503 and "scraper" in body["detail"] and retry_after


async def test_two_embed_servers_one_stopped_mid_search_no_failed_search(tmp_path: Path) -> None:
    a, b = embed_server().start(), embed_server().start()
    stopped: set[str] = set()
    try:
        _wait_ready(a.target)
        _wait_ready(b.target)
        hits = Hits()
        # Latency spreads the downloads (and so the Embed calls) over about a second.
        async with serve_aiohttp(image_site_app(hits, 1, latency_s=0.05, images=40)) as port:
            urls = [f"http://127.0.0.1:{port}/img/{i}.jpg" for i in range(40)]
            with scraper_server(write_catalog(tmp_path / "c.jsonl", urls)) as scraper:
                target = f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}"
                settings = gateway_settings(target, scraper.target, None, fetch_allow=(f"127.0.0.1:{port}",),
                                            download_concurrency=4, download_per_host=4, embed_batch=2,
                                            max_results=40)
                async with run_gateway(settings) as gw, aiohttp.ClientSession() as http:
                    status, body, _ = await _search(http, gw.url)  # warm: both replicas in use
                    assert status == 200, body
                    gw.app.state.search.pipeline.cache.clear()
                    search = asyncio.ensure_future(_search(http, gw.url))
                    await asyncio.sleep(0.4)
                    assert not search.done()  # really mid-search
                    await asyncio.to_thread(a.stop)
                    stopped.add("a")
                    status, body, _ = await search
                    assert status == 200, body
                    assert body["stats"]["ranked"] == 40, body["stats"]
                    assert body["stats"]["failed"] == 0, body["stats"]
                    # And the next search runs on the survivor alone.
                    status, body, _ = await _search(http, gw.url)
                    assert status == 200 and body["results"]
    finally:
        if "a" not in stopped:
            a.stop()
        b.stop()
