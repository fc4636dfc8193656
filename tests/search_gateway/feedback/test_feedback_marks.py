"""Stored feedback marks (issue 22, item 2): the three real services, the embedded store
(qdrant-edge) in a tmp folder, real images served by a loopback site. Two tenants, so that
every route is shown to keep each tenant's marks its own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
import pytest
from PIL import Image, ImageDraw

from search_gateway.feedback.marks import MARKS, marks_space
from search_gateway.feedback.query_refs import QueryRefs, UnknownQueryRef
from search_gateway.gallery.base import GalleryFilter, VectorSpace
from tests.support.background import BackgroundServer, wait_for_health
from tests.support.gateway_stack import Site, gateway_settings, image_form
from tests.support.gateway_support import RunningGateway, embed_server, run_gateway, start_gateway_process
from tests.support.images import encode, jpeg

ALPHA, BETA = {"X-API-Key": "key-alpha"}, {"X-API-Key": "key-beta"}
KEYS = ("alpha:key-alpha", "beta:key-beta")
SECRET = "feedback-test-secret-" + "x" * 32
WEIGHT = 0.05


def settings_for(embed: BackgroundServer, scraper: BackgroundServer, site: Site, folder: Path, **more: Any):  # type: ignore[no-untyped-def]
    return gateway_settings(embed.target, scraper.target, site, gallery="on", gallery_path=folder,
                            blobs_path=folder.parent / "blobs", api_keys=KEYS, thumbnail_secret=SECRET,
                            feedback_boost_weight=WEIGHT, **more)


def stripes() -> bytes:
    """A picture unlike the site's noise: black and white bands."""
    picture = Image.new("RGB", (300, 300), "white")
    draw = ImageDraw.Draw(picture)
    for x in range(0, 300, 40):
        draw.rectangle((x, 0, x + 19, 299), fill="black")
    return encode(picture, "JPEG", quality=90)


def query(seed: int = 3) -> aiohttp.FormData:
    return image_form(jpeg(seed, (320 + 8 * seed, 240)))  # the very bytes the site serves at /img/<seed>.jpg


async def search(http: aiohttp.ClientSession, url: str, headers: dict[str, str], data: Any = None,
                 **params: str) -> dict[str, Any]:
    async with http.post(f"{url}/search", data=data if data is not None else query(), headers=headers,
                         params={"sources": "gallery", "max_results": "20", **params}) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return body


async def mark(http: aiohttp.ClientSession, url: str, headers: dict[str, str], ref: Any, result: Any,
               relevant: Any = True, status: int = 201) -> dict[str, Any]:
    async with http.post(f"{url}/feedback", json={"query_ref": ref, "result": result, "relevant": relevant},
                         headers=headers) as resp:
        body = await resp.json()
        assert resp.status == status, body
        return body


async def listed(http: aiohttp.ClientSession, url: str, headers: dict[str, str], **params: str) -> dict[str, Any]:
    async with http.get(f"{url}/feedback", headers=headers, params=params) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return body


async def filled(http: aiohttp.ClientSession, gw: RunningGateway) -> None:
    """A web search stores the site's images in the gallery (both tenants see them)."""
    async with http.post(f"{gw.url}/search", data=query(), headers=ALPHA, params={"sources": "web"}) as resp:
        assert resp.status == 200, await resp.text()
    await gw.app.state.collections.gallery.writer.drained()


async def test_a_mark_is_stored_replaced_listed_and_deleted(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http, \
            run_gateway(settings_for(embed, scraper, site, tmp_path / "gallery")) as gw:
        await filled(http, gw)
        first = await search(http, gw.url, ALPHA)
        ref, result = first["query_ref"], first["results"][1]["id"]
        assert isinstance(ref, str) and len(ref) > 40
        stored = await mark(http, gw.url, ALPHA, ref, result, True)
        assert stored["result"] == result and stored["relevant"] is True and stored["model"] == first["embedding_model"]
        assert stored["at"].endswith("+00:00")
        # The same result for the same query (another search, another token): the same mark, replaced.
        again = await search(http, gw.url, ALPHA)
        assert again["query_ref"] != ref
        replaced = await mark(http, gw.url, ALPHA, again["query_ref"], result, False)
        assert replaced["id"] == stored["id"] and replaced["relevant"] is False
        marks = (await listed(http, gw.url, ALPHA))["marks"]
        assert [(m["id"], m["relevant"]) for m in marks] == [(stored["id"], False)]
        # The stream's final event carries one too.
        async with http.post(f"{gw.url}/search/stream", data=query(), headers=ALPHA,
                             params={"sources": "gallery"}) as resp:
            final = json.loads([line for line in (await resp.text()).splitlines() if line][-1])
        assert final["event"] == "final"
        assert (await mark(http, gw.url, ALPHA, final["query_ref"], result, False))["id"] == stored["id"]
        # A second result, and pages of one.
        other = await mark(http, gw.url, ALPHA, ref, first["results"][2]["id"], True)
        page = await listed(http, gw.url, ALPHA, limit="1")
        assert len(page["marks"]) == 1 and page["next"]
        rest = await listed(http, gw.url, ALPHA, limit="1", after=page["next"])
        assert {page["marks"][0]["id"], rest["marks"][0]["id"]} == {stored["id"], other["id"]}
        assert rest["next"] is None
        async with http.get(f"{gw.url}/feedback", headers=ALPHA, params={"after": "nonsense"}) as resp:
            assert resp.status == 400 and "next" in (await resp.json())["detail"]

        async with http.delete(f"{gw.url}/feedback/{stored['id']}", headers=ALPHA) as resp:
            assert resp.status == 204
        async with http.delete(f"{gw.url}/feedback/{stored['id']}", headers=ALPHA) as resp:
            assert resp.status == 404 and "no feedback mark" in (await resp.json())["detail"]
        assert [m["id"] for m in (await listed(http, gw.url, ALPHA))["marks"]] == [other["id"]]


async def test_another_tenants_marks_are_invisible_undeletable_and_unusable(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http, \
            run_gateway(settings_for(embed, scraper, site, tmp_path / "gallery")) as gw:
        await filled(http, gw)
        mine = await search(http, gw.url, ALPHA)
        target = mine["results"][3]["id"]
        stored = await mark(http, gw.url, ALPHA, mine["query_ref"], target, True)

        # Not listed for beta, not deletable by beta (404, as an unknown id), still alpha's.
        assert (await listed(http, gw.url, BETA))["marks"] == []
        async with http.delete(f"{gw.url}/feedback/{stored['id']}", headers=BETA) as resp:
            assert resp.status == 404
        assert [m["id"] for m in (await listed(http, gw.url, ALPHA))["marks"]] == [stored["id"]]

        # Alpha's query_ref is refused to beta exactly as a forged one is.
        refused = await mark(http, gw.url, BETA, mine["query_ref"], target, True, status=404)
        tampered = mine["query_ref"][:-6] + ("AAAAAA" if not mine["query_ref"].endswith("AAAAAA") else "BBBBBB")
        forged = await mark(http, gw.url, ALPHA, tampered, target, True, status=404)
        assert refused["detail"] == forged["detail"] and "query_ref is unknown" in forged["detail"]
        assert (await mark(http, gw.url, ALPHA, "x", target, status=404))["detail"] == forged["detail"]
        assert "query_ref" in (await mark(http, gw.url, ALPHA, 5, target, status=400))["detail"]
        assert "UUID" in (await mark(http, gw.url, ALPHA, mine["query_ref"], "../etc", status=400))["detail"]
        assert "'relevant'" in (await mark(http, gw.url, ALPHA, mine["query_ref"], target, "yes", status=400))["detail"]
        unknown = "00000000-0000-0000-0000-000000000000"
        assert "No result" in (await mark(http, gw.url, ALPHA, mine["query_ref"], unknown, status=404))["detail"]

        # Alpha's mark moves alpha's result, never beta's: beta's same search is untouched.
        boosted = {r["id"]: r for r in (await search(http, gw.url, ALPHA))["results"]}
        assert boosted[target]["feedback"] == pytest.approx(WEIGHT, abs=1e-4)
        theirs = await search(http, gw.url, BETA)
        assert all("feedback" not in r for r in theirs["results"])
        assert {r["id"]: r["score"] for r in theirs["results"]} == {r["id"]: r["score"] for r in mine["results"]}

        # A mark is never a result, nor a "like" target, for anyone.
        for headers in (ALPHA, BETA):
            found = await search(http, gw.url, headers, max_results="100")
            assert stored["id"] not in {r["id"] for r in found["results"]}
            assert all(r["collection"] != MARKS for r in found["results"])
            async with http.post(f"{gw.url}/search", headers=headers,
                                 params={"like": stored["id"], "sources": "gallery"}) as resp:
                assert resp.status == 404


async def test_the_boost_moves_a_marked_result_for_a_similar_query_only(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    # The tests' tiny random-weight model puts any two pictures close (stripes against noise:
    # cosine 0.95), so "similar" is drawn tighter here than the default 0.9.
    settings = settings_for(embed, scraper, site, tmp_path / "gallery", feedback_boost_similarity=0.98)
    async with aiohttp.ClientSession() as http, run_gateway(settings) as gw:
        await filled(http, gw)
        before = await search(http, gw.url, ALPHA)
        scores = [r["score"] for r in before["results"]]
        # The first result lying within the boost of the one above it: a relevant mark must lift it.
        lifted = next(i for i in range(1, len(scores)) if scores[i - 1] - scores[i] < 2 * WEIGHT * 0.9)
        target = before["results"][lifted]["id"]
        # And one to push down: the best result that is not the query's own picture.
        pushed = before["results"][1 if lifted != 1 else 2]["id"]
        await mark(http, gw.url, ALPHA, before["query_ref"], target, True)
        await mark(http, gw.url, ALPHA, before["query_ref"], pushed, False)

        after = await search(http, gw.url, ALPHA)
        order = [r["id"] for r in after["results"]]
        was = [r["id"] for r in before["results"]]
        assert order.index(target) < was.index(target), (was, order)
        by_id = {r["id"]: r for r in after["results"]}
        assert by_id[target]["feedback"] == pytest.approx(WEIGHT, abs=1e-4)
        assert by_id[pushed]["feedback"] == pytest.approx(-WEIGHT, abs=1e-4)
        assert order.index(pushed) >= was.index(pushed)
        assert [r["score"] for r in after["results"]] == sorted((r["score"] for r in after["results"]), reverse=True)

        # A dissimilar query (another picture, cosine under the threshold): nothing moves.
        other = await search(http, gw.url, ALPHA, data=image_form(stripes()))
        assert all("feedback" not in r for r in other["results"]), [r.get("feedback") for r in other["results"]]


async def test_feedback_off_stores_nothing_and_answers_404(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http, \
            run_gateway(settings_for(embed, scraper, site, tmp_path / "gallery", feedback="off")) as gw:
        await filled(http, gw)
        body = await search(http, gw.url, ALPHA)
        assert body["query_ref"]  # every search still carries one
        for method, path in (("POST", "/feedback"), ("GET", "/feedback"), ("DELETE", f"/feedback/{body['results'][0]['id']}")):
            async with http.request(method, f"{gw.url}{path}", headers=ALPHA,
                                    json={"query_ref": body["query_ref"], "result": body["results"][0]["id"],
                                          "relevant": True}) as resp:
                answer = await resp.json()
                assert resp.status == 404 and answer["error"] == "feedback_off", answer
                assert "GATEWAY_FEEDBACK=off" in answer["detail"]
        space = await gw.app.state.collections.gallery.space_for(body["embedding_model"])
        store = (await gw.app.state.collections.gallery.link.gallery()).store
        assert await store.count(marks_space(space), GalleryFilter(collections=(MARKS,))) == 0


async def test_concurrent_posts_of_one_mark_leave_one_and_the_bound_holds(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http, \
            run_gateway(settings_for(embed, scraper, site, tmp_path / "gallery", feedback_max_marks=2)) as gw:
        await filled(http, gw)
        body = await search(http, gw.url, ALPHA)
        ref, ids = body["query_ref"], [r["id"] for r in body["results"]]
        answers = await asyncio.gather(*(mark(http, gw.url, ALPHA, ref, ids[0]) for _ in range(8)))
        assert len({a["id"] for a in answers}) == 1
        assert len((await listed(http, gw.url, ALPHA))["marks"]) == 1
        await mark(http, gw.url, ALPHA, ref, ids[1])
        full = await mark(http, gw.url, ALPHA, ref, ids[2], status=409)
        assert full["error"] == "quota_reached" and "(2)" in full["detail"]
        await mark(http, gw.url, ALPHA, ref, ids[1], False)  # replacing a mark is always allowed
        assert len((await listed(http, gw.url, ALPHA))["marks"]) == 2
        # Another tenant's bound is its own.
        await mark(http, gw.url, BETA, (await search(http, gw.url, BETA))["query_ref"], ids[2])


@pytest.mark.slow  # a gateway process killed with SIGKILL and a second one started
async def test_marks_go_with_the_tenants_data_and_survive_a_kill_9(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    folder = tmp_path / "gallery"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GATEWAY_PORT": str(port), "GATEWAY_EMBED_TARGET": embed.target,
           "GATEWAY_SCRAPER_TARGET": scraper.target, "GATEWAY_FETCH_ALLOW": f"127.0.0.1:{site.port}",
           "GATEWAY_GALLERY_PATH": str(folder), "GATEWAY_BLOBS_PATH": str(tmp_path / "blobs"),
           "GATEWAY_RATE_LIMIT_PER_MINUTE": "0", "GATEWAY_LOG_LEVEL": "warning", "GATEWAY_API_KEYS": ",".join(KEYS),
           "GATEWAY_THUMBNAIL_SECRET": SECRET, "GATEWAY_FEEDBACK_BOOST_WEIGHT": str(WEIGHT)}
    url = f"http://127.0.0.1:{port}"
    child = await start_gateway_process(env, url, polls=300)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/search", data=query(), headers=ALPHA, params={"sources": "web"}) as resp:
                assert resp.status == 200
            for _ in range(100):  # until the background writer stored the web results
                body = await search(http, url, ALPHA)
                if len(body["results"]) >= 3:
                    break
                await asyncio.sleep(0.1)
            stored = await mark(http, url, ALPHA, body["query_ref"], body["results"][2]["id"])
            theirs = await mark(http, url, BETA, (await search(http, url, BETA))["query_ref"], body["results"][2]["id"])
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()

    env.pop("GATEWAY_PORT")
    async with aiohttp.ClientSession() as http, \
            run_gateway(settings_for(embed, scraper, site, folder)) as gw:
        # Acknowledged before the kill: still there, and still used.
        assert [m["id"] for m in (await listed(http, gw.url, ALPHA))["marks"]] == [stored["id"]]
        boosted = {r["id"]: r for r in (await search(http, gw.url, ALPHA))["results"]}
        assert boosted[stored["result"]]["feedback"] == pytest.approx(WEIGHT, abs=1e-4)
        # DELETE /feedback takes back all of the caller's marks (and only the caller's).
        async with http.delete(f"{gw.url}/feedback", headers=ALPHA) as resp:
            assert resp.status == 204
        assert (await listed(http, gw.url, ALPHA))["marks"] == []
        assert all("feedback" not in r for r in (await search(http, gw.url, ALPHA))["results"])
        assert [m["id"] for m in (await listed(http, gw.url, BETA))["marks"]] == [theirs["id"]]


async def test_a_query_ref_of_weights_since_replaced_is_refused_with_409(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    folder = tmp_path / "gallery"
    async with aiohttp.ClientSession() as http:
        async with run_gateway(settings_for(embed, scraper, site, folder)) as gw:
            await filled(http, gw)
            body = await search(http, gw.url, ALPHA)
        # Other weights (another seed) behind the same store: the old query means nothing there.
        with embed_server(EMBED_SEED="7") as other:
            with grpc.insecure_channel(other.target) as channel:
                wait_for_health(channel, timeout=60)
            async with run_gateway(settings_for(other, scraper, site, folder)) as gw:
                stale = await mark(http, gw.url, ALPHA, body["query_ref"], body["results"][0]["id"], status=409)
                assert stale["error"] == "stale_query_ref" and "other weights" in stale["detail"]
                assert (await listed(http, gw.url, ALPHA))["marks"] == []


def test_a_query_ref_carries_the_query_sealed_for_its_tenant_alone() -> None:
    rng = np.random.default_rng(1)
    vector = np.maximum(rng.standard_normal(512), 0).astype(np.float32)
    vector /= np.linalg.norm(vector)
    space = VectorSpace("squeezenet", "abc123", 512)
    refs = QueryRefs(SECRET)
    token = refs.issue("alpha", "squeezenet", space, vector)
    assert len(token) < 800 and "alpha" not in token
    opened = refs.open(token, "alpha")
    assert opened.space == space and float(opened.vector @ vector) > 0.999
    # The same query in another token is the same query (mark ids are derived from it).
    assert refs.open(refs.issue("alpha", "squeezenet", space, vector), "alpha").digest == opened.digest
    for wrong in (lambda: refs.open(token, "beta"), lambda: QueryRefs("another secret").open(token, "alpha"),
                  lambda: refs.open(token[:-1], "alpha"), lambda: refs.open("", "alpha")):
        with pytest.raises(UnknownQueryRef):
            wrong()
