"""End-to-end: the real embed server, the real scraper (catalog engine) and the gateway."""

from __future__ import annotations

import base64
import io
import json

from PIL import Image

from tests.support.gateway_stack import GOOD, Stack, image_form
from tests.support.images import jpeg


async def _search(stack: Stack, query: str = "", **form_kwargs: object) -> tuple[int, dict]:
    async with stack.http.post(f"{stack.url}/search{query}", data=image_form(jpeg(3), **form_kwargs)) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.json()


async def test_search_ranks_every_good_candidate_and_refuses_every_hostile_one(stack: Stack) -> None:
    status, body = await _search(stack, "?max_results=50")
    assert status == 200, body
    # The seed frontend's fields, then the extensions.
    assert body["caption"].endswith("tattoo")
    assert body["embedding_model"] == "clip"
    assert body["patch_attention_enabled"] is False
    assert body["partial"] is False
    assert body["embedding_weights"] == "random"
    urls = [r["url"] for r in body["results"]]
    assert sorted(urls) == sorted(stack.site.good_urls())
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    first = body["results"][0]
    assert first["platform"] == "pinterest" and first["source_url"].startswith("https://example.org/")
    stats = body["stats"]
    assert stats["ranked"] == GOOD and stats["downloaded"] == GOOD
    reasons = stats["failed_by_reason"]
    assert reasons["blocked_address"] >= 6, reasons
    for reason in ("not_an_image", "truncated_image", "too_many_pixels", "too_large", "timeout", "empty_image",
                   "too_many_redirects"):
        assert reasons.get(reason), (reason, reasons)
    for stage in ("caption_ms", "scrape_ms", "download_ms", "embedding_ms", "total_ms"):
        assert stage in body["timings"]
    # Not one request reached the internal service, by any route.
    assert stack.site.hits.count("/secret") == 0, stack.site.hits.paths


async def test_second_search_uses_the_embedding_cache_and_metrics_show_it(stack: Stack) -> None:
    await _search(stack)
    stack.site.hits.paths.clear()
    status, body = await _search(stack)
    assert status == 200
    assert body["stats"]["from_cache"] == GOOD
    assert stack.site.hits.count("/img/") == 0  # neither downloaded nor embedded again
    async with stack.http.get(f"{stack.url}/metrics") as resp:
        text = await resp.text()
    assert 'gateway_embedding_cache_lookups_total{result="hit"}' in text
    assert 'gateway_download_failures_total{reason="blocked_address"}' in text
    assert 'gateway_requests_total{method="POST",route="/search",status="200"}' in text
    assert 'gateway_search_stage_seconds_count{stage="embedding"}' in text


async def test_patch_attention_for_the_top_results(stack: Stack) -> None:
    status, body = await _search(stack, "?include_patch_attention=true&max_results=5")
    assert status == 200, body
    assert body["patch_attention_enabled"] is True
    with_attention = [r for r in body["results"] if "patch_attention" in r]
    assert len(with_attention) == 3
    pa = with_attention[0]["patch_attention"]
    assert pa["query_grid_size"] == 7 and pa["candidate_grid_size"] == 7
    assert set(pa["attention_summary"]) >= {"mean_max_similarity", "strong_match_ratio"}
    assert -1.0 <= pa["overall_similarity"] <= 1.0


async def test_streaming_search_reports_progress_then_the_final_answer(stack: Stack) -> None:
    async with stack.http.post(f"{stack.url}/search/stream", data=image_form(jpeg(4))) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/x-ndjson")
        events = [json.loads(line) async for line in resp.content if line.strip()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "caption" and kinds[-1] == "final"
    assert {"candidates", "downloaded", "ranked"} <= set(kinds)
    assert len(events[-1]["results"]) == GOOD  # fewer good candidates than the default max_results
    ranked = [e["ranked"] for e in events if e["event"] == "ranked"]
    assert ranked == sorted(ranked) and ranked[-1] == GOOD


async def test_thumbnails_only_for_links_the_gateway_signed(stack: Stack) -> None:
    status, body = await _search(stack)
    link = body["results"][0]["thumbnail_url"]
    async with stack.http.get(f"{stack.url}{link}?size=64") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "image/jpeg"
        img = Image.open(io.BytesIO(await resp.read()))
        assert max(img.size) <= 64
    forged = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    async with stack.http.get(f"{stack.url}{forged}") as resp:
        assert resp.status == 404
    async with stack.http.get(f"{stack.url}/thumbnails/not-a-token") as resp:
        assert resp.status == 404


async def test_text_search_with_a_text_tower(stack: Stack) -> None:
    form = {"text": "geometric mandala tattoo"}
    async with stack.http.post(f"{stack.url}/search?embedding_model=clip", data=form) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    assert body["caption"] == "geometric mandala tattoo" and body["results"]


async def test_analyze_attention_with_pictures(stack: Stack) -> None:
    url = stack.site.good_urls()[2]
    async with stack.http.post(f"{stack.url}/analyze-attention?candidate_url={url}&embedding_model=dinov2",
                               data=image_form(jpeg(2), field="query_file")) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    assert body["query_grid"] == [16, 16] and body["candidate_grid"] == [16, 16]
    assert body["attention_matrix_shape"] == [256, 256]
    assert len(body["top_correspondences"]) == 10
    for name in ("attention_heatmap", "top_correspondences"):
        data_url = body["visualizations"][name]
        assert data_url.startswith("data:image/png;base64,")
        picture = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))
        assert picture.format == "PNG" and picture.width > picture.height


async def test_analyze_attention_refuses_an_internal_candidate_url(stack: Stack) -> None:
    url = f"http://127.0.0.1:{stack.site.internal_port}/secret-analyze"
    async with stack.http.post(f"{stack.url}/analyze-attention?candidate_url={url}",
                               data=image_form(jpeg(2), field="query_file")) as resp:
        body = await resp.json()
        assert resp.status == 400, body
        assert body["error"] == "url_refused"
    assert stack.site.hits.count("/secret") == 0


async def test_models_health_ready_openapi(stack: Stack) -> None:
    async with stack.http.get(f"{stack.url}/models") as resp:
        body = await resp.json()
        assert resp.status == 200
    assert {m["name"] for m in body["models"]} == {"clip", "dinov2"}
    assert all(m["weights"] == "random" for m in body["models"])
    async with stack.http.get(f"{stack.url}/health") as resp:
        assert resp.status == 200
    async with stack.http.get(f"{stack.url}/ready") as resp:
        assert resp.status == 200, await resp.text()
    async with stack.http.get(f"{stack.url}/openapi.json") as resp:
        doc = await resp.json()
    assert {"/search", "/search/stream", "/analyze-attention", "/models"} <= set(doc["paths"])
