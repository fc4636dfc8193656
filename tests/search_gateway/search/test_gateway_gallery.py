"""The gallery in the search (issue 12): the three real services, the embedded store in
a tmp folder, real images. Only the network beyond the machine is faked (the catalog
engine stands for the web search)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from search_gateway.app import create_app
from search_gateway.wiring import GalleryStartError
from tests.support.background import BackgroundServer, wait_for_health
from tests.support.gateway_stack import Site, gateway_settings, image_form
from tests.support.gateway_support import (
    CountedScraper,
    RunningGateway,
    embed_server,
    run_gateway,
    scraper_server,
    start_gateway_process,
    write_catalog,
)
from tests.support.images import jpeg

pytestmark = pytest.mark.asyncio



async def drained(gateway: RunningGateway) -> None:
    await gateway.app.state.collections.gallery.writer.drained()


async def post(http: aiohttp.ClientSession, url: str, data: Any = None, **params: str) -> dict[str, Any]:
    async with http.post(f"{url}/search", data=data, params=params) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return body


def settings_for(embed: BackgroundServer, scraper: BackgroundServer, site: Site, folder: Path, **more: Any):  # type: ignore[no-untyped-def]
    return gateway_settings(embed.target, scraper.target, site, gallery="on", gallery_path=folder, **more)


async def test_web_search_fills_the_gallery_and_the_gallery_answers_without_the_web(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    folder = tmp_path / "gallery"
    query = jpeg(3, (320 + 8 * 3, 240))  # the very bytes the site serves at /img/3.jpg
    async with aiohttp.ClientSession() as http:
        async with run_gateway(settings_for(embed, scraper, site, folder)) as gw:
            first = await post(http, gw.url, image_form(query), sources="web")
            assert first["results"] and all(r["source"] == "web" for r in first["results"])
            await drained(gw)
            assert gw.app.state.collections.gallery.writer.written >= len(first["results"])

            counted, downloads = CountedScraper(gw), site.hits.count("/img/")
            body = await post(http, gw.url, image_form(query), sources="gallery")
            assert counted.calls == 0 and site.hits.count("/img/") == downloads  # no scraper, no download
            best = body["results"][0]
            assert best["source"] == "gallery" and best["url"] == f"{site.base}/img/3.jpg"
            assert best["score"] == pytest.approx(1.0, abs=1e-3)
            assert body["stats"]["from_gallery"] == len(body["results"]) and body["partial"] is False
            assert best["tags"], "clip points are stored with machine tags"

            # Both sources: the gallery answers first; web candidates it knows are not fetched again.
            async with http.post(f"{gw.url}/search/stream", data=image_form(query)) as resp:
                events = [e for e in [*(await resp.text()).splitlines()] if e]
            import json
            kinds = [json.loads(e)["event"] for e in events]
            assert kinds[0] == "gallery" and kinds[-1] == "final"
            final = json.loads(events[-1])
            assert site.hits.count("/img/") == downloads  # (known to the in-memory cache in front, here)
            hashes = [r["id"] for r in final["results"]]
            assert len(hashes) == len(set(hashes))  # one result per picture

            # More like this: the stored vector, nothing downloaded or embedded.
            liked = await post(http, gw.url, None, like=best["id"], sources="gallery")
            assert liked["results"] and best["id"] not in [r["id"] for r in liked["results"]]
            assert site.hits.count("/img/") == downloads

            # The tags filter is applied in the store query.
            tag = next(iter(best["tags"]))
            tagged = await post(http, gw.url, image_form(query), sources="gallery", tags=tag, max_results="100")
            assert tagged["results"] and all(tag in r["tags"] for r in tagged["results"])
            everything = await post(http, gw.url, image_form(query), sources="gallery", max_results="100")
            assert len(tagged["results"]) == sum(tag in r["tags"] for r in everything["results"])
            high = await post(http, gw.url, image_form(query), sources="gallery", min_score="0.999")
            assert [r["url"] for r in high["results"]] == [best["url"]]

        # A restart keeps them.
        async with run_gateway(settings_for(embed, scraper, site, folder)) as gw:
            again = await post(http, gw.url, image_form(query), sources="gallery")
            assert again["results"][0]["id"] == best["id"]
            # The gallery is the persistent embedding cache: a fresh process fetches none of them again.
            both = await post(http, gw.url, image_form(query))
            assert both["stats"]["gallery_known"] == both["stats"]["candidates_found"] == len(site.good_urls())
            assert site.hits.count("/img/") == downloads and both["stats"]["embedded"] == 0

        # Other weights (another seed): another space, empty; the old one is untouched.
        with embed_server(EMBED_SEED="7") as other:
            import grpc
            with grpc.insecure_channel(other.target) as channel:
                wait_for_health(channel, timeout=60)
            async with run_gateway(settings_for(other, scraper, site, folder)) as gw:
                empty = await post(http, gw.url, image_form(query), sources="gallery")
                assert empty["results"] == [] and empty["partial"] is False


# Slow: waits out the store's connect timeouts (seconds, by design).
@pytest.mark.slow
async def test_an_unreachable_store_gives_web_results_marked_partial(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    settings = settings_for(embed, scraper, site, tmp_path / "unused", gallery_url=f"http://127.0.0.1:{closed}")
    async with aiohttp.ClientSession() as http, run_gateway(settings) as gw:
        body = await post(http, gw.url, image_form(jpeg(3, (344, 240))))
        assert body["results"] and all(r["source"] == "web" for r in body["results"])
        # A sentence for the reader; the store's address is in the log only.
        assert body["partial"] is True and "does not answer" in body["stats"]["gallery_error"], body["stats"]
        async with http.get(f"{gw.url}/ready") as resp:
            ready = await resp.json()
        assert ready["checks"]["gallery"] is False and "gallery" in ready["degraded"]
        assert str(closed) not in json.dumps(body) + json.dumps(ready)
        async with http.post(f"{gw.url}/search", data=image_form(jpeg(3, (344, 240))),
                             params={"sources": "gallery"}) as resp:
            assert resp.status == 503 and "Retry-After" in resp.headers


async def test_a_corrupt_store_stops_the_gateway_with_the_path_and_what_to_do(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    folder = tmp_path / "gallery"
    folder.mkdir()
    (folder / "gallery-store.json").write_text("{not json")
    app = create_app(settings_for(embed, scraper, site, folder))
    with pytest.raises(GalleryStartError) as caught:
        async with app.router.lifespan_context(app):
            pass
    assert str(folder) in str(caught.value) and "Nothing was changed" in str(caught.value)
    assert (folder / "gallery-store.json").read_text() == "{not json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _metric(http: aiohttp.ClientSession, url: str, line: str) -> float:
    async with http.get(f"{url}/metrics") as resp:
        for row in (await resp.text()).splitlines():
            if row.startswith(line):
                return float(row.split()[-1])
    return 0.0


@pytest.mark.slow
async def test_kill_9_while_upserting_keeps_every_acknowledged_point(
        embed: BackgroundServer, site: Site, tmp_path: Path) -> None:
    # Many candidates, so that upserts are still running when the process is killed.
    more = [f"{site.base}/img/{i % 12}.jpg?copy={i}" for i in range(60)]
    catalog = write_catalog(tmp_path / "catalog.jsonl", more)
    folder = tmp_path / "gallery"
    with scraper_server(catalog) as scraper:
        port = _free_port()
        env = {**os.environ, "GATEWAY_PORT": str(port), "GATEWAY_EMBED_TARGET": embed.target,
               "GATEWAY_SCRAPER_TARGET": scraper.target, "GATEWAY_FETCH_ALLOW": f"127.0.0.1:{site.port}",
               "GATEWAY_GALLERY_PATH": str(folder), "GATEWAY_RATE_LIMIT_PER_MINUTE": "0",
               "GATEWAY_MAX_CANDIDATES": "60", "GATEWAY_LOG_LEVEL": "warning"}
        url = f"http://127.0.0.1:{port}"
        written = "gateway_gallery_points_total{result=\"written\"}"


        child = await start_gateway_process(env, url, polls=300)
        try:
            async with aiohttp.ClientSession() as http:
                first = await post(http, url, image_form(jpeg(3, (344, 240))), sources="web", max_results="100")
                for _ in range(300):  # until the writer acknowledged this search's images
                    if await _metric(http, url, written) >= len({r["id"] for r in first["results"]}):
                        break
                    await asyncio.sleep(0.05)
                acknowledged = {r["id"] for r in first["results"]}
                # More upserts in flight (other pictures), then kill -9 mid-way.
                site_more = [post(http, url, None, like=next(iter(acknowledged)), sources="web")]
                await asyncio.gather(*site_more)
                before_kill = await _metric(http, url, written)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        assert before_kill >= len(acknowledged)

        child = await start_gateway_process(env, url, polls=300)
        try:
            async with aiohttp.ClientSession() as http:
                found = await post(http, url, image_form(jpeg(3, (344, 240))), sources="gallery", max_results="100")
                assert acknowledged <= {r["id"] for r in found["results"]}
        finally:
            child.terminate()
            child.wait(10)
