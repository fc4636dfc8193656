"""Every bad request gets its 4xx with a sentence; access control; time budget; captioning."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from scraper_service.config import ScraperSettings
from scraper_service.engines import duckduckgo
from scraper_service.server import create_server
from tests.support.background import BackgroundServer
from tests.support.gateway_stack import Site, Stack, gateway_settings, image_form
from tests.support.gateway_support import (
    Hits,
    image_site_app,
    png_with_size,
    run_gateway,
    scraper_server,
    serve_aiohttp,
    write_catalog,
)
from tests.support.images import encode, jpeg, noise_image

BAD_UPLOADS = [
    (b"", 400, "empty_image"),
    (b"<html>surely an image</html>", 415, "not_an_image"),
    (jpeg(1)[:600], 422, "truncated_image"),
    (png_with_size(encode(noise_image(1, (32, 32)), "PNG"), 60_000, 60_000), 422, "too_many_pixels"),
    (b"\0" * (3 * 1024 * 1024), 413, "upload_too_large"),
]


@pytest.mark.parametrize(("data", "status", "code"), BAD_UPLOADS, ids=[c for _, _, c in BAD_UPLOADS])
async def test_bad_uploads_get_their_4xx(stack: Stack, data: bytes, status: int, code: str) -> None:
    async with stack.http.post(f"{stack.url}/search", data=image_form(data)) as resp:
        body = await resp.json()
        assert (resp.status, body["error"]) == (status, code), body
        assert body["detail"] and "Traceback" not in body["detail"]


async def test_request_errors_name_what_is_wrong(stack: Stack) -> None:
    async def post(path: str, data: Any) -> tuple[int, dict[str, Any]]:
        async with stack.http.post(f"{stack.url}{path}", data=data) as resp:
            return resp.status, await resp.json()

    status, body = await post("/search?embedding_model=nope", image_form(jpeg(1)))
    assert status == 400 and body["error"] == "unknown_model"
    assert "clip" in body["detail"] and "dinov2" in body["detail"]
    status, body = await post("/search", aiohttp.FormData({"other": "x"}))
    assert status == 400 and body["error"] == "missing_field" and "'file'" in body["detail"]
    status, body = await post("/search?embedding_model=dinov2", {"text": "rose tattoo"})
    assert status == 400 and body["error"] == "no_text_tower" and "clip" in body["detail"]
    status, body = await post("/search?max_results=0", image_form(jpeg(1)))
    assert status == 400 and "max_results" in body["detail"]
    status, body = await post("/analyze-attention", image_form(jpeg(1), field="query_file"))
    assert status == 400 and "candidate_url" in body["detail"]
    status, body = await post(f"/analyze-attention?candidate_url={stack.site.base}/img/1.jpg", image_form(jpeg(1)))
    assert status == 400 and "query_file" in body["detail"]


async def test_api_keys_rate_limit_and_cors(embed: BackgroundServer, site: Site) -> None:
    # No scraper needed: these requests never reach a search.
    settings = gateway_settings(embed.target, "127.0.0.1:1", site, api_keys=("k1", "k2"),
                                rate_limit_per_minute=60, rate_limit_burst=2,
                                cors_origins=("https://app.example",))
    async with run_gateway(settings) as gw, aiohttp.ClientSession() as http:
        async with http.get(f"{gw.url}/models") as resp:
            assert resp.status == 401
        async with http.get(f"{gw.url}/health") as resp:  # probes need no key
            assert resp.status == 200
        for _ in range(4):  # the page and its files: no key, and no quota spent (burst is 2)
            for path in ("/", "/static/app.js"):
                async with http.get(f"{gw.url}{path}") as resp:
                    assert resp.status == 200, path
        statuses = []
        for _ in range(3):
            async with http.get(f"{gw.url}/models", headers={"X-API-Key": "k2"}) as resp:
                statuses.append(resp.status)
                retry_after = resp.headers.get("Retry-After")
        assert statuses[:2] == [200, 200] and statuses[2] == 429 and int(retry_after or 0) >= 1
        async with http.options(f"{gw.url}/search", headers={
                "Origin": "https://app.example", "Access-Control-Request-Method": "POST"}) as resp:
            assert resp.headers.get("Access-Control-Allow-Origin") == "https://app.example"
        async with http.get(f"{gw.url}/health", headers={"Origin": "https://evil.example"}) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers


async def test_time_budget_returns_what_was_ranked_marked_partial(embed: BackgroundServer, tmp_path: Path) -> None:
    hits = Hits()
    async with serve_aiohttp(image_site_app(hits, 1)) as fast, serve_aiohttp(image_site_app(hits, 1, latency_s=20)) as slow:
        urls = [f"http://127.0.0.1:{fast}/img/{i}.jpg" for i in range(4)]
        urls += [f"http://127.0.0.1:{slow}/img/{i}.jpg" for i in range(4)]
        with scraper_server(write_catalog(tmp_path / "c.jsonl", urls)) as scraper:
            settings = gateway_settings(embed.target, scraper.target, None, search_budget_s=2.0,
                                        fetch_allow=("127.0.0.1",), read_timeout_s=30, download_timeout_s=30)
            async with run_gateway(settings) as gw, aiohttp.ClientSession() as http:
                start = time.monotonic()
                async with http.post(f"{gw.url}/search", data=image_form(jpeg(1))) as resp:
                    body = await resp.json()
                elapsed = time.monotonic() - start
    assert resp.status == 200, body
    assert body["partial"] is True
    assert elapsed < 3.5
    assert {r["url"] for r in body["results"]} == set(urls[:4])


async def _vlm(answer: str, seen: list[dict[str, Any]]) -> web.Application:
    async def completions(request: web.Request) -> web.Response:
        seen.append({"auth": request.headers.get("Authorization"), "body": await request.json()})
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": answer}}]})

    app = web.Application(client_max_size=20 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", completions)
    return app


@pytest.mark.parametrize(("answer", "caption_source"), [
    ('```json\n{"query": "fine line peony tattoo"}\n```', "remote"),
    # Not strict JSON: falls back to the offline captioner, whose tiny text tower runs random
    # weights here, so its caption is named a guess.
    ("A lovely peony! Query: peony tattoo", "offline-random"),
    ('{"query": "x", "extra": 1}', "offline-random"),
])
async def test_remote_captioner_and_its_fallback(embed: BackgroundServer, site: Site, tmp_path: Path,
                                                 answer: str, caption_source: str) -> None:
    seen: list[dict[str, Any]] = []
    async with serve_aiohttp(await _vlm(answer, seen)) as vlm_port:
        with scraper_server(write_catalog(tmp_path / "c.jsonl", site.good_urls(3))) as scraper:
            settings = gateway_settings(embed.target, scraper.target, site, caption_mode="remote",
                                        caption_url=f"http://127.0.0.1:{vlm_port}/v1", caption_remote_model="glm-4.5v",
                                        caption_token="secret-token")
            async with run_gateway(settings) as gw, aiohttp.ClientSession() as http:
                async with http.post(f"{gw.url}/search", data=image_form(jpeg(1))) as resp:
                    body = await resp.json()
    assert resp.status == 200, body
    assert body["caption_source"] == caption_source
    if caption_source == "remote":
        assert body["caption"] == "fine line peony tattoo"
    assert seen[0]["auth"] == "Bearer secret-token"
    content = seen[0]["body"]["messages"][0]["content"]
    assert content[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")


async def test_duckduckgo_engine_faked_at_the_ddgs_boundary(embed: BackgroundServer, site: Site,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    queries: list[str] = []

    class FakeDDGS:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __enter__(self) -> FakeDDGS:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def images(self, query: str, **kwargs: Any) -> list[dict[str, Any]]:
            queries.append(query)
            return [{"title": f"t{i}", "image": url, "thumbnail": url, "url": f"https://www.pinterest.com/pin/{i}/",
                     "height": "240", "width": "320", "source": "Bing"} for i, url in enumerate(site.good_urls(5))]

    monkeypatch.setattr(duckduckgo, "DDGS", FakeDDGS)

    async def start() -> tuple[Any, int]:
        server, port = await create_server(ScraperSettings(port=0, engines=("duckduckgo",), min_results=1, grace_s=0,
                                                           retry_backoff_s=0.01, retry_backoff_max_s=0.02))
        return server, port

    with BackgroundServer(start) as scraper:
        async with run_gateway(gateway_settings(embed.target, scraper.target, site)) as gw, aiohttp.ClientSession() as http:
            async with http.post(f"{gw.url}/search", data=image_form(jpeg(1))) as resp:
                body = await resp.json()
    assert resp.status == 200, body
    assert queries and body["caption"].split()[0] in " ".join(queries)
    assert {r["url"] for r in body["results"]} == set(site.good_urls(5))
