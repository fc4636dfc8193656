"""Failed downloads are remembered by URL: the real gateway, embed server and scraper, and a
local image site that counts every request it gets.

Time is moved on through the gateway's ``failure_timer``; nothing sleeps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest_asyncio
from aiohttp import web

from search_gateway.fetch.failed_downloads import FailedDownloads
from tests.support.background import BackgroundServer
from tests.support.gateway_stack import gateway_settings, image_form
from tests.support.gateway_support import RunningGateway, run_gateway, scraper_server, serve_aiohttp, write_catalog
from tests.support.images import jpeg

LONG_S, SHORT_S = 3600.0, 60.0
BROKEN = ("/gone.jpg", "/page.jpg", "/busy.jpg")


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class CountingSite:
    port: int
    hits: Counter[str] = field(default_factory=Counter)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _site_app(hits: Counter[str]) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        hits[request.path] += 1
        if request.path == "/gone.jpg":
            return web.Response(status=404, text="no such image")
        if request.path == "/page.jpg":  # a web page posing as a picture
            return web.Response(body=b"<!doctype html><p>moved</p>", content_type="image/jpeg")
        if request.path == "/busy.jpg":
            return web.Response(status=503, text="try later")
        return web.Response(body=jpeg(int(request.path[5]), (96, 96)), content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{name:.*}", handle)
    return app


@dataclass
class Rig:
    gateway: RunningGateway
    site: CountingSite
    clock: Clock
    http: aiohttp.ClientSession

    async def search(self) -> dict:
        async with self.http.post(f"{self.gateway.url}/search", data=image_form(jpeg(3))) as resp:
            body = await resp.json()
            assert resp.status == 200, body
            return body

    async def metrics(self) -> str:
        async with self.http.get(f"{self.gateway.url}/metrics") as resp:
            return await resp.text()


@pytest_asyncio.fixture
async def rig(embed: BackgroundServer, tmp_path: Path) -> AsyncIterator[Rig]:
    hits: Counter[str] = Counter()
    async with serve_aiohttp(_site_app(hits)) as port:
        site = CountingSite(port, hits)
        urls = [site.url(f"/img/{i}.jpg") for i in range(3)] + [site.url(p) for p in BROKEN]
        with scraper_server(write_catalog(tmp_path / "catalog.jsonl", urls)) as scraper:
            settings = gateway_settings(embed.target, scraper.target, None, fetch_allow=(f"127.0.0.1:{port}",),
                                        download_retries=0, failed_download_ttl_s=LONG_S,
                                        failed_download_retry_s=SHORT_S)
            clock = Clock()
            async with run_gateway(settings, failure_timer=clock) as gateway, aiohttp.ClientSession() as http:
                yield Rig(gateway, site, clock, http)


async def test_a_404_and_a_non_image_are_not_fetched_again_and_a_5xx_is_after_the_short_time(rig: Rig) -> None:
    first = await rig.search()
    assert first["stats"]["failed_by_reason"] == {"http_4xx": 1, "not_an_image": 1, "http_5xx": 1}
    assert {p: rig.site.hits[p] for p in BROKEN} == {"/gone.jpg": 1, "/page.jpg": 1, "/busy.jpg": 1}

    second = await rig.search()
    # Still reported as failed (the search met them), but not one request went out.
    assert second["stats"]["failed_by_reason"] == first["stats"]["failed_by_reason"]
    assert second["stats"]["ranked"] == first["stats"]["ranked"] == 3
    assert {p: rig.site.hits[p] for p in BROKEN} == {"/gone.jpg": 1, "/page.jpg": 1, "/busy.jpg": 1}

    rig.clock.now += SHORT_S + 1  # the 5xx may have passed; the 404 and the web page have not
    await rig.search()
    assert {p: rig.site.hits[p] for p in BROKEN} == {"/gone.jpg": 1, "/page.jpg": 1, "/busy.jpg": 2}

    rig.clock.now += LONG_S  # now everything is tried again
    await rig.search()
    assert {p: rig.site.hits[p] for p in BROKEN} == {"/gone.jpg": 2, "/page.jpg": 2, "/busy.jpg": 3}

    metrics = await rig.metrics()
    assert 'gateway_failed_download_skips_total{reason="http_4xx"} 2.0' in metrics
    assert 'gateway_failed_download_skips_total{reason="not_an_image"} 2.0' in metrics
    assert 'gateway_failed_download_skips_total{reason="http_5xx"} 1.0' in metrics
    assert "gateway_failed_download_entries 3.0" in metrics  # all three failed again just now
    rig.clock.now += LONG_S + 1
    assert "gateway_failed_download_entries 0.0" in await rig.metrics()  # expired ones are not counted


def test_the_memory_is_bounded_and_forgets_the_least_recently_used_first() -> None:
    clock = Clock()
    memory = FailedDownloads(2, LONG_S, SHORT_S, timer=clock)
    memory.remember("http://a/1", "http_4xx")
    memory.remember("http://a/2", "http_4xx")
    assert memory.reason("http://a/1") == "http_4xx"  # 1 is now more recent than 2
    memory.remember("http://a/3", "timeout")
    assert len(memory) == 2 and "http://a/2" not in memory and "http://a/1" in memory


def test_lasting_and_transient_reasons_get_their_own_lifetimes() -> None:
    clock = Clock()
    skipped: list[str] = []
    memory = FailedDownloads(100, LONG_S, SHORT_S, timer=clock, on_skip=skipped.append)
    for url, reason in (("http://a/404", "http_4xx"), ("http://a/page", "not_an_image"), ("http://a/slow", "timeout"),
                        ("http://a/503", "http_5xx"), ("http://a/429", "throttled"), ("ftp://a/x", "bad_scheme")):
        memory.remember(url, reason)
    assert memory.reason("ftp://a/x") is None  # refused without a fetch: nothing to save
    clock.now += SHORT_S + 0.1
    assert [memory.reason(u) for u in ("http://a/slow", "http://a/503", "http://a/429")] == [None, None, None]
    assert memory.reason("http://a/404") == "http_4xx" and memory.reason("http://a/page") == "not_an_image"
    clock.now += LONG_S
    assert memory.reason("http://a/404") is None and len(memory) == 0
    assert skipped == ["http_4xx", "not_an_image"]
