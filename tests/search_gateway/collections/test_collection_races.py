"""Read-then-write races on the shared store, run with real concurrency: a collection
deleted while uploads finish never comes back; creates of one name at once give one 201;
uploads of one picture at once give one ``added``. Real embed and scraper servers, the
embedded gallery store and local blobs in tmp; the two-replica variants run two gateway
processes on a Qdrant server when QDRANT_URL names one."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import aiohttp
import pytest

from search_gateway.collections.records import CollectionRecords
from tests.support.background import BackgroundServer
from tests.support.collections_support import CollectionsClient
from tests.support.collections_support import collection_settings as _settings
from tests.support.gateway_stack import Site
from tests.support.gateway_support import RunningGateway, run_gateway
from tests.support.images import jpeg

pytestmark = pytest.mark.asyncio

ROUNDS = 50
TENANT = "studio-a"


async def _records(gw: RunningGateway) -> CollectionRecords:
    return CollectionRecords((await gw.app.state.collections.gallery.link.gallery()).store)


async def _delete_during_uploads(c: CollectionsClient, name: str, pictures: list[bytes], delay_s: float) -> int:
    """One round: concurrent one-image uploads, and a DELETE ``delay_s`` into them; its status."""

    async def delete_later() -> int:
        await asyncio.sleep(delay_s)
        return (await c.call("DELETE", f"/collections/{name}"))[0]

    results = await asyncio.gather(delete_later(), *(c.upload(name, [p], "clip") for p in pictures))
    for status, body in results[1:]:  # type: ignore[misc]
        # 200 (added, or rejected: deleted under it) or 404 (already gone): never a 5xx.
        assert status in (200, 404), body
    return int(results[0])  # type: ignore[arg-type]


@pytest.mark.slow
async def test_a_collection_deleted_while_uploads_finish_never_comes_back(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    """The race that brought deleted collections back (an upload's touch rewrote the record
    without its ``deleting`` mark), 50 times with random delays: after each, the collection
    is gone, its name free, and nothing of it is left in the store."""
    rng = random.Random(19)
    pictures = [jpeg(4000 + i, (160 + 4 * i, 150)) for i in range(12)]
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        c = CollectionsClient(http, gw)
        recs = await _records(gw)
        deleted = 0
        for round_ in range(ROUNDS):
            name = f"race-{round_}"
            assert (await c.call("POST", "/collections", json={"name": name}))[0] == 201
            await c.added(name, pictures[:2], "clip")
            status = await _delete_during_uploads(c, name, pictures[2:], rng.uniform(0.0, 0.3))
            assert status == 204
            deleted += 1
            await gw.app.state.collections.deleter.settled()
            assert await recs.find(TENANT, name) is None, f"round {round_}: the record came back"
            assert await recs.count(TENANT, name) == 0, f"round {round_}: image records came back"
        listed = (await c.call("GET", "/collections"))[1]["collections"]
        assert [x["name"] for x in listed] == ["web"] and deleted == ROUNDS
        # Every name is free again, and a new collection under one starts empty.
        assert (await c.call("POST", "/collections", json={"name": "race-7"}))[0] == 201
        assert (await c.collection("race-7"))["images"] == 0


async def test_creates_of_one_name_at_once_give_exactly_one_201(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        c = CollectionsClient(http, gw)
        answers = await asyncio.gather(*(c.call("POST", "/collections", json={"name": "samename"}) for _ in range(20)))
        statuses = sorted(status for status, _ in answers)
        assert statuses == [201] + [409] * 19, answers
        created = next(body for status, body in answers if status == 201)
        assert (await c.collection("samename"))["created"] == created["created"]
        assert all("already exists" in body["detail"] for status, body in answers if status == 409)


async def test_uploads_of_one_picture_at_once_give_one_added_and_the_rest_duplicate(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    picture = jpeg(4100, (220, 200))
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        c = CollectionsClient(http, gw)
        assert (await c.call("POST", "/collections", json={"name": "flash"}))[0] == 201
        answers = await asyncio.gather(*(c.upload("flash", [picture], "clip") for _ in range(50)))
        results = [body["results"][0] for status, body in answers if status == 200]
        assert len(results) == 50
        statuses = sorted(r["status"] for r in results)
        assert statuses == ["added"] + ["duplicate"] * 49, statuses
        assert len({r["id"] for r in results}) == 1  # one image, whichever answer named it
        assert (await c.collection("flash"))["images"] == 1


QDRANT_URL = os.environ.get("QDRANT_URL", "")


@pytest.mark.slow
@pytest.mark.skipif(not QDRANT_URL, reason="set QDRANT_URL to a Qdrant server (1.18+) to run two gateway replicas on it")
async def test_two_gateway_replicas_on_one_server_keep_a_deleted_collection_deleted(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    """The same race, the uploads sent to one replica and the DELETE to the other."""
    run = f"{random.Random().randrange(1 << 24):06x}"  # a server keeps what earlier runs left
    settings = _settings(embed, scraper, site, tmp_path, gallery_url=QDRANT_URL)
    rng = random.Random(23)
    pictures = [jpeg(4200 + i, (170 + 4 * i, 150)) for i in range(8)]
    async with aiohttp.ClientSession() as http, run_gateway(settings) as one, run_gateway(settings) as two:
        first, second = CollectionsClient(http, one), CollectionsClient(http, two)
        recs = await _records(one)
        for round_ in range(ROUNDS):
            name = f"race-{run}-{round_}"
            assert (await first.call("POST", "/collections", json={"name": name}))[0] == 201

            async def delete_later(delay_s: float, name: str = name) -> int:
                await asyncio.sleep(delay_s)
                return (await second.call("DELETE", f"/collections/{name}"))[0]

            await asyncio.gather(delete_later(rng.uniform(0.0, 0.3)),
                                 *(first.upload(name, [p], "clip") for p in pictures))
            for gw in (one, two):
                await gw.app.state.collections.deleter.settled()
            assert await recs.find(TENANT, name) is None and await recs.count(TENANT, name) == 0
        names = await asyncio.gather(*(c.call("POST", "/collections", json={"name": f"same-{run}"})
                                       for c in (first, second) for _ in range(10)))
        assert sorted(status for status, _ in names) == [201] + [409] * 19
