"""Two-stage search end to end: rerank=true re-orders the best results by patch tokens.

The expected order is computed here from patch tokens asked of the embed server
directly (raw gRPC, not the gateway's client) for the very bytes the gateway sends it.
"""

from __future__ import annotations

import grpc
import numpy as np

from search_gateway.fetch.images import prepare
from search_gateway.search import rerank
from service_common.tensors import to_numpy
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc
from tests.support.gateway_stack import GOOD, Stack, image_form
from tests.support.images import jpeg

QUERY = jpeg(3)


async def _search(stack: Stack, query: str) -> tuple[int, dict]:
    async with stack.http.post(f"{stack.url}/search{query}", data=image_form(QUERY)) as resp:
        return resp.status, await resp.json()


def _patches(target: str, image: bytes) -> np.ndarray:
    # The gateway sends the embed server its re-encoded bytes (images.prepare), not the original.
    embed_bytes = prepare(image, max_pixels=40_000_000, short_side=448, full_check=False).embed_bytes
    with grpc.insecure_channel(target) as channel:
        reply = embed_pb2_grpc.EmbedServiceStub(channel).EmbedPatches(
            embed_pb2.EmbedPatchesRequest(model="clip", image=embed_bytes), timeout=60)
    return to_numpy(reply.patches)


def _site_images() -> dict[str, bytes]:
    # The same bytes the test site serves (gateway_support.image_site_app).
    return {f"/img/{i}.jpg": jpeg(i, (320 + 8 * i, 240)) for i in range(GOOD)}


def _expected(stack: Stack, results: list[dict]) -> dict[str, tuple[float, float]]:
    """url -> (combined, local) computed from patch tokens fetched here."""
    images = _site_images()
    target = stack.gateway.app.state.search.settings.embed_target
    query = _patches(target, QUERY)
    candidates = [_patches(target, images[r["url"].split(str(stack.site.port), 1)[1]]) for r in results]
    done = rerank.rerank(np.array([r["global_score"] for r in results], dtype=np.float32), query, candidates)
    return {r["url"]: (float(done.scores[i]), float(done.local[i])) for i, r in enumerate(results)}


async def test_rerank_reorders_the_same_results_by_the_combined_score(stack: Stack) -> None:
    # First search: the bytes the ranking kept are re-ranked (nothing fetched twice).
    status, reranked = await _search(stack, f"?rerank=true&rerank_k={GOOD}&max_results={GOOD}")
    assert status == 200, reranked
    assert reranked["reranked"] is True and reranked["partial"] is False
    assert "rerank_ms" in reranked["timings"]
    # Stage one alone (from the embedding cache now): the global order and scores.
    status, plain = await _search(stack, f"?max_results={GOOD}")
    assert status == 200, plain
    assert plain["reranked"] is False and "rerank_ms" not in plain["timings"]
    assert all("global_score" not in r and "local_score" not in r for r in plain["results"])

    results = reranked["results"]
    assert sorted(r["url"] for r in results) == sorted(r["url"] for r in plain["results"])
    global_of = {r["url"]: r["score"] for r in plain["results"]}
    for r in results:
        assert abs(r["global_score"] - global_of[r["url"]]) < 1e-5, r
    # Stage one's order, re-ranked here from the embed server's own patch tokens.
    stage_one = sorted(results, key=lambda r: -r["global_score"])
    expected = _expected(stack, stage_one)
    for r in results:
        combined, local = expected[r["url"]]
        assert abs(r["local_score"] - local) < 1e-5, r
        assert abs(r["score"] - combined) < 1e-5, r
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert [r["url"] for r in results] != [r["url"] for r in stage_one]  # it did re-order something

    # Again, now every result comes from the cache: its bytes are fetched again, same answer.
    status, again = await _search(stack, f"?rerank=true&rerank_k={GOOD}&max_results={GOOD}")
    assert status == 200 and again["reranked"] is True
    assert [r["url"] for r in again["results"]] == [r["url"] for r in results]


async def test_rerank_only_the_best_k_and_the_rest_keep_their_place(stack: Stack) -> None:
    status, plain = await _search(stack, f"?max_results={GOOD}")
    assert status == 200, plain
    status, body = await _search(stack, f"?rerank=true&rerank_k=4&max_results={GOOD}")
    assert status == 200 and body["reranked"] is True, body
    head, tail = body["results"][:4], body["results"][4:]
    assert all("local_score" in r for r in head) and all("local_score" not in r for r in tail)
    assert sorted(r["url"] for r in head) == sorted(r["url"] for r in plain["results"][:4])
    assert [r["url"] for r in tail] == [r["url"] for r in plain["results"][4:]]


async def test_rerank_needs_a_query_image(stack: Stack) -> None:
    async with stack.http.post(f"{stack.url}/search?rerank=true", json={"text": "rose tattoo"}) as resp:
        assert resp.status == 400
        assert "text query" in (await resp.json())["detail"]


async def test_rerank_k_out_of_range_is_a_400(stack: Stack) -> None:
    status, body = await _search(stack, "?rerank=true&rerank_k=101")
    assert status == 400
    assert "rerank_k" in body["detail"]
